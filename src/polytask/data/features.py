"""The ``features`` section: which columns are model inputs and how each is encoded.

Validated here, where the preprocessor that reads it lives; `polytask.config` composes it
into the run-file schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from polytask._schema import Strict

Pooling = Literal["mean", "sum", "max", "attention"]


class CategoricalFeature(Strict):
    """A categorical column, embedded. ``embedding_dim``/``min_freq`` default to the section's.

    Setting ``pooling``, ``sep`` or ``max_len`` makes it list-valued: each cell is a list of
    values (a Parquet/pyarrow list, a Python list, or a string split on ``sep``), embedded
    and pooled into one vector (docs/features.md). ``hash_buckets`` maps values to buckets
    by a fixed hash instead of a vocabulary.
    """

    name: str
    embedding_dim: int | None = Field(default=None, ge=1)
    min_freq: int | None = Field(default=None, ge=1)
    hash_buckets: int | None = None
    """Map values by a stable hash into this many buckets (no vocabulary is stored)."""
    sep: str | None = None
    """List-valued: a string cell is split on this separator."""
    pooling: Pooling | None = None
    """List-valued: how a row's embeddings become one vector (default ``mean``)."""
    max_len: int | None = Field(default=None, ge=1)
    """List-valued: keep at most this many values per row (default: the longest training
    row)."""
    truncate: Literal["first", "last"] = "last"
    """List-valued: which values a longer row keeps, its first or its last ``max_len``."""
    query: str | None = None
    """``pooling: attention``: the categorical column whose embedding the values attend to."""
    attention_softmax: bool = False
    """``pooling: attention``: normalise the weights by a softmax over the row's values."""
    attention_units: list[int] = Field(default_factory=lambda: [32])
    """``pooling: attention``: hidden units of the attention MLP."""
    shared_with: str | None = None
    """List-valued: use this categorical column's embedding table and vocabulary."""

    @property
    def is_list(self) -> bool:
        return self.pooling is not None or self.sep is not None or self.max_len is not None

    @property
    def pool(self) -> Pooling:
        return self.pooling or "mean"

    @model_validator(mode="after")
    def _settings(self) -> CategoricalFeature:
        where = f"categorical feature {self.name!r}"
        if self.hash_buckets is not None and self.hash_buckets < 2:
            raise ValueError(f"{where}: hash_buckets is {self.hash_buckets}; expected >= 2")
        if self.sep == "":
            raise ValueError(f"{where}: sep is empty; expected a separator such as '|'")
        if self.pooling == "attention" and self.query is None:
            raise ValueError(f"{where}: pooling: attention needs query: <categorical column>")
        if self.query is not None and self.pooling != "attention":
            raise ValueError(
                f"{where}: query is set but pooling is {self.pool!r}; query is for "
                "pooling: attention"
            )
        if self.shared_with is not None and not self.is_list:
            raise ValueError(f"{where}: shared_with is for list-valued features; set pooling")
        if any(u < 1 for u in self.attention_units):
            raise ValueError(f"{where}: attention_units {self.attention_units}; expected >= 1")
        return self


class NumericFeature(Strict):
    """A numeric column: standardized (optionally after a signed log1p), NaN/inf imputed."""

    name: str
    log1p: bool = False


class TokenFeatures(Strict):
    """The tokens of a sentence (a list column, one row per sentence), for sequence models
    and ``tag`` tasks (`polytask.data.tokens`, docs/sequence_tagging.md).

    Each token is embedded as its lowercased form (``embedding_dim``; forms seen fewer than
    ``min_freq`` times in training share the unknown row, which then learns what an unseen
    word looks like), its capitalisation pattern (``shape_dim``; 0: none) and, with
    ``char_filters`` > 0, a character CNN over its first ``max_chars`` characters
    (``char_dim``-wide character embeddings, ``char_filters`` filters of width
    ``char_width``, max-pooled)."""

    column: str
    min_freq: int = Field(default=1, ge=1)
    embedding_dim: int = Field(default=64, ge=1)
    shape_dim: int = Field(default=8, ge=0)
    char_filters: int = Field(default=0, ge=0)
    char_dim: int = Field(default=16, ge=1)
    char_width: int = Field(default=3, ge=1)
    max_chars: int = Field(default=16, ge=1)


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
    tokens: TokenFeatures | None = None
    """A sentence's tokens (a list column): the input of sequence models and ``tag`` tasks;
    it is then the only feature."""

    @field_validator("categorical", "numeric", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        """A bare column name is short for ``{name: ...}``."""
        return [{"name": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique(self) -> FeaturesConfig:
        names = [f.name for f in self.categorical] + [f.name for f in self.numeric]
        if self.tokens is not None:
            if names:
                raise ValueError(
                    f"features.tokens is the only input of a sequence model; found also "
                    f"categorical/numeric columns {names}"
                )
            return self
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature column(s) {dupes} listed more than once")
        if not names:
            raise ValueError("no feature columns: list at least one categorical or numeric column")
        single = {f.name: f for f in self.categorical if not f.is_list}
        kinds = dict.fromkeys(names, "a list-valued feature")  # a categorical not in single
        kinds.update(dict.fromkeys((f.name for f in self.numeric), "a numeric feature"))
        for f in self.categorical:
            for key in ("query", "shared_with"):
                target = getattr(f, key)
                if target is not None and target not in single:
                    kind = kinds.get(target, "not a feature")
                    raise ValueError(
                        f"categorical feature {f.name!r}: {key} {target!r} is {kind}; expected "
                        f"a single-valued categorical feature, one of {sorted(single)}"
                    )
            if f.shared_with is not None:
                for key in ("hash_buckets", "embedding_dim", "min_freq"):
                    if getattr(f, key) is not None:
                        raise ValueError(
                            f"categorical feature {f.name!r}: {key} is set, but the feature "
                            f"uses {f.shared_with!r}'s table (shared_with): set it there"
                        )
            if f.query is not None:
                dim, qdim = self.dim_of(f), self.dim_of(single[f.query])
                if dim != qdim:
                    raise ValueError(
                        f"categorical feature {f.name!r}: embedding_dim {dim} differs from its "
                        f"query {f.query!r}'s {qdim}; attention needs one dimension"
                    )
        return self

    def dim_of(self, feature: CategoricalFeature) -> int:
        """A categorical feature's embedding dimension (a shared one's is its table's)."""
        if feature.shared_with is not None:
            feature = next(f for f in self.categorical if f.name == feature.shared_with)
        return feature.embedding_dim or self.embedding_dim

    @property
    def single(self) -> list[CategoricalFeature]:
        """The single-valued categorical features, in order (the ``categorical`` tensor's
        columns)."""
        return [f for f in self.categorical if not f.is_list]

    @property
    def lists(self) -> list[CategoricalFeature]:
        """The list-valued categorical features, in order (`EncodedData.lists`)."""
        return [f for f in self.categorical if f.is_list]

    @property
    def columns(self) -> list[str]:
        tokens = [self.tokens.column] if self.tokens is not None else []
        return [f.name for f in self.categorical] + [f.name for f in self.numeric] + tokens
