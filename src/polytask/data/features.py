"""The ``features`` section: which columns are model inputs and how each is encoded.

Validated here, where the preprocessor that reads it lives; `polytask.config` composes it
into the run-file schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from polytask._schema import Strict


class CategoricalFeature(Strict):
    """A categorical column, embedded. ``embedding_dim``/``min_freq`` default to the section's."""

    name: str
    embedding_dim: int | None = Field(default=None, ge=1)
    min_freq: int | None = Field(default=None, ge=1)


class NumericFeature(Strict):
    """A numeric column: standardized (optionally after a signed log1p), NaN/inf imputed."""

    name: str
    log1p: bool = False


class FeaturesConfig(Strict):
    """Which columns are inputs and how they are encoded.

    Categorical columns go through one embedding each; numeric columns through one learned
    linear projection of dimension ``numeric_dim`` (default: ``embedding_dim`` per numeric
    column, at most 128), and the two are concatenated.
    """

    categorical: list[CategoricalFeature] = Field(default_factory=list)
    numeric: list[NumericFeature] = Field(default_factory=list)
    embedding_dim: int = Field(default=8, ge=1)
    min_freq: int = Field(default=1, ge=1)
    numeric_dim: int | None = Field(default=None, ge=1)
    numeric_scaling: Literal["standardize", "none"] = "standardize"

    @field_validator("categorical", "numeric", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        """A bare column name is short for ``{name: ...}``."""
        return [{"name": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique(self) -> FeaturesConfig:
        names = [f.name for f in self.categorical] + [f.name for f in self.numeric]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature column(s) {dupes} listed more than once")
        if not names:
            raise ValueError("no feature columns: list at least one categorical or numeric column")
        return self

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]
