"""The fitted preprocessor: raw table -> column tensors, and back for labels.

Fitted on the training split only and saved with the model as plain JSON, so ``predict``
works on raw rows of the original table.

- Categorical: a vocabulary per column from the training data (values seen at least
  ``min_freq`` times, sorted, so the result does not depend on row order). Index 0 is
  "missing", index 1 "unknown"; values start at 2. Unseen values at predict time map to 1.
- Numeric: optional signed log1p, then standardization with the training mean and std;
  NaN and +-inf are missing and imputed with the training mean (0 after scaling), with a 0/1
  missing-indicator column for every column that had missing values in training.
- Labels: binary from 0/1, bool or a ``positive`` value; regression floats; multiclass from
  the sorted training classes. A missing label is NaN and is masked out of loss and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask.config import FeaturesConfig, TaskConfig
from polytask.data.encoded import EncodedData
from polytask.errors import DataError, NotFittedError

MISSING_INDEX = 0
UNKNOWN_INDEX = 1
_CLIP = 1e6  # standardized values beyond this are clipped so float32 never overflows


def category_strings(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Canonical string form of a categorical column, and its missing mask.

    Integral floats print as integers, so ``3`` and ``3.0`` (an int column read with a NaN)
    are the same category.
    """
    missing = series.isna().to_numpy()
    if pd.api.types.is_float_dtype(series.dtype):
        arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2**53)
        as_int = np.round(np.where(integral, arr, 0)).astype(np.int64).astype(str)
        values = np.where(integral, as_int, arr.astype(str)).astype(object)
    else:
        values = series.astype(str).to_numpy(dtype=object)
    values = values.copy()
    values[missing] = None
    return values, missing


def _numeric(series: pd.Series, column: str, what: str) -> np.ndarray:
    """Column as float64 with NaN for missing and non-finite values; text is an error."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(series.dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna() & series.notna() & (series.astype(str).str.strip() != "")
        if bad.any():
            examples = list(dict.fromkeys(series[bad].astype(str).tolist()))[:3]
            raise DataError(
                f"{what}: numeric column {column!r} has non-numeric values such as {examples}"
            )
        arr = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = arr.copy()
    arr[~np.isfinite(arr)] = np.nan
    return arr


@dataclass
class _NumericStats:
    mean: float
    std: float
    log1p: bool
    indicator: bool


class Preprocessor:
    """Fit on a training table, then encode any table with the same columns into tensors.

    Parameters are the validated ``features`` and ``tasks`` sections of the run file.
    """

    def __init__(self, *, features: FeaturesConfig, tasks: Mapping[str, TaskConfig]) -> None:
        self.features = features
        self.tasks = dict(tasks)
        self.vocabularies_: dict[str, list[str]] | None = None
        self.numeric_stats_: dict[str, _NumericStats] = {}
        self.classes_: dict[str, list[str]] = {}
        self.train_columns_: list[str] = []

    # ---------------------------------------------------------------------------- helpers
    def label_column(self, task: str) -> str:
        return self.tasks[task].label or task

    @property
    def fitted(self) -> bool:
        return self.vocabularies_ is not None

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError("this Preprocessor is not fitted yet; call fit(train) first")

    def _require_columns(self, df: pd.DataFrame, columns: list[str], what: str) -> None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            from polytask.errors import closest

            hints = "".join(
                f" (for {c!r}{closest(c, [str(x) for x in df.columns]).removeprefix(';')})"
                for c in missing
                if closest(c, [str(x) for x in df.columns])
            )
            raise DataError(
                f"{what}: missing column(s) {missing} required by the schema; the table has "
                f"{len(df.columns)} columns{hints}"
            )

    # ---------------------------------------------------------------------------- fit
    def fit(
        self, df: pd.DataFrame, *, label_frames: Mapping[str, pd.DataFrame] | None = None
    ) -> Preprocessor:
        """Learn vocabularies, scaling statistics and label classes from the training table.

        With ``label_frames`` (one table per task, for alternate training) ``df`` holds the
        feature columns of all of them and each task's labels come from its own table."""
        what = "training set"
        if len(df) == 0:
            raise DataError(f"{what} is empty: expected at least one row, found 0")
        if label_frames is None:
            labels = [self.label_column(t) for t in self.tasks]
            self._require_columns(df, self.features.columns + labels, what)
            label_frames = dict.fromkeys(self.tasks, df)
        else:
            self._require_columns(df, self.features.columns, what)
            for name in self.tasks:
                self._require_columns(
                    label_frames[name], [self.label_column(name)], f"training set of task {name!r}"
                )
        self.train_columns_ = [str(c) for c in df.columns]

        vocabularies: dict[str, list[str]] = {}
        for feat in self.features.categorical:
            values, missing = category_strings(df[feat.name])
            counts = pd.Series(values[~missing]).value_counts()
            min_freq = feat.min_freq or self.features.min_freq
            vocabularies[feat.name] = sorted(counts[counts >= min_freq].index.tolist())

        stats: dict[str, _NumericStats] = {}
        for nfeat in self.features.numeric:
            arr = _numeric(df[nfeat.name], nfeat.name, what)
            if nfeat.log1p:
                arr = np.sign(arr) * np.log1p(np.abs(arr))
            finite = arr[~np.isnan(arr)]
            mean = float(finite.mean()) if finite.size else 0.0
            std = float(finite.std()) if finite.size else 1.0
            if self.features.numeric_scaling == "none":
                mean, std = 0.0, 1.0
            stats[nfeat.name] = _NumericStats(
                mean=mean,
                std=std if std > 0 and np.isfinite(std) else 1.0,
                log1p=nfeat.log1p,
                indicator=bool(np.isnan(arr).any()),
            )

        classes: dict[str, list[str]] = {}
        for name, task in self.tasks.items():
            col = label_frames[name][self.label_column(name)]
            if task.type == "multiclass":
                values, missing = category_strings(col)
                found = sorted(set(values[~missing].tolist()))
                if len(found) < 2:
                    raise DataError(
                        f"task {name!r}: label column {self.label_column(name)!r} has "
                        f"{len(found)} class(es) {found}; a multiclass task needs at least 2"
                    )
                classes[name] = found
        self.vocabularies_ = vocabularies
        self.numeric_stats_ = stats
        self.classes_ = classes
        # Validate the labels now, so a bad label fails before any training.
        for name in self.tasks:
            self._encode_label(label_frames[name], name, what)
        return self

    # ---------------------------------------------------------------------------- transform
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column (vocabulary + missing + unknown)."""
        self._check_fitted()
        assert self.vocabularies_ is not None
        return [len(self.vocabularies_[f.name]) + 2 for f in self.features.categorical]

    @property
    def numeric_width(self) -> int:
        """Numeric input width: one per numeric column plus one per missing indicator."""
        return len(self.numeric_stats_) + sum(s.indicator for s in self.numeric_stats_.values())

    def num_classes(self, task: str) -> int:
        t = self.tasks[task]
        return len(self.classes_[task]) if t.type == "multiclass" else 1

    def transform(
        self,
        df: pd.DataFrame,
        *,
        labels: bool | None = None,
        what: str = "data",
        only: str | None = None,
    ) -> EncodedData:
        """Encode a table. ``labels=True`` requires every label column, ``False`` ignores
        them, ``None`` encodes the ones present (absent ones become all-NaN). ``only=task``
        encodes that task's label alone (a per-task dataset); the others are all-NaN."""
        self._check_fitted()
        assert self.vocabularies_ is not None
        self._require_columns(df, self.features.columns, what)
        n = len(df)

        cat = np.zeros((n, len(self.features.categorical)), dtype=np.int64)
        for j, feat in enumerate(self.features.categorical):
            values, missing = category_strings(df[feat.name])
            codes = pd.Index(self.vocabularies_[feat.name], dtype=object).get_indexer(
                pd.Index(values, dtype=object)
            )
            cat[:, j] = np.where(
                missing, MISSING_INDEX, np.where(codes < 0, UNKNOWN_INDEX, codes + 2)
            )

        num_cols: list[np.ndarray] = []
        indicators: list[np.ndarray] = []
        for nfeat in self.features.numeric:
            s = self.numeric_stats_[nfeat.name]
            arr = _numeric(df[nfeat.name], nfeat.name, what)
            if s.log1p:
                arr = np.sign(arr) * np.log1p(np.abs(arr))
            isnan = np.isnan(arr)
            z = np.clip((arr - s.mean) / s.std, -_CLIP, _CLIP)
            num_cols.append(np.where(isnan, 0.0, z))
            if s.indicator:
                indicators.append(isnan.astype(np.float64))
        num = np.stack(num_cols + indicators, axis=1) if num_cols else np.zeros((n, 0))

        label_tensors: dict[str, torch.Tensor] = {}
        if labels is not False:
            for name in self.tasks:
                col = self.label_column(name)
                if only is not None and name != only:
                    label_tensors[name] = torch.full((n,), float("nan"))
                elif col not in df.columns:
                    if labels:
                        self._require_columns(df, [col], what)
                    label_tensors[name] = torch.full((n,), float("nan"))
                else:
                    label_tensors[name] = torch.from_numpy(self._encode_label(df, name, what))
        return EncodedData(
            categorical=torch.from_numpy(cat),
            numeric=torch.from_numpy(num.astype(np.float32)),
            labels=label_tensors,
        )

    def _encode_label(self, df: pd.DataFrame, task: str, what: str) -> np.ndarray:
        t = self.tasks[task]
        col = self.label_column(task)
        series = df[col]
        if t.type == "regression":
            arr = _numeric_label(series, task, col, what)
            return arr.astype(np.float32)
        if t.type == "multiclass":
            values, missing = category_strings(series)
            codes = pd.Index(self.classes_[task], dtype=object).get_indexer(
                pd.Index(values, dtype=object)
            )
            unseen = (codes < 0) & ~missing
            if unseen.any():
                examples = sorted(set(values[unseen].tolist()))[:5]
                raise DataError(
                    f"{what}: task {task!r}: label column {col!r} has class(es) {examples} not "
                    f"seen in training; known classes are {self.classes_[task][:20]}"
                )
            return np.where(missing, np.nan, codes).astype(np.float32)
        # binary
        missing = series.isna().to_numpy()
        if t.positive is not None:
            values, _ = category_strings(series)
            positive = category_strings(pd.Series([t.positive]))[0][0]
            hit = values == positive
            if what == "training set" and not hit.any():
                seen = sorted(set(values[~missing].tolist()))[:10]
                raise DataError(
                    f"task {task!r}: positive value {t.positive!r} never occurs in label column "
                    f"{col!r}; values found: {seen}"
                )
            return np.where(missing, np.nan, hit.astype(np.float64)).astype(np.float32)
        arr = _numeric_label(series, task, col, what, binary=True)
        present = arr[~np.isnan(arr)]
        bad = np.unique(present[(present != 0) & (present != 1)])
        if bad.size:
            found = sorted({*np.unique(present)[:10].tolist()})
            raise DataError(
                f"{what}: task {task!r}: label column {col!r} has values {found}; a binary task "
                "needs 0/1, booleans or a `positive:` value"
            )
        return arr.astype(np.float32)

    # ---------------------------------------------------------------------------- decode
    def decode_categorical(self, column: str, indices: np.ndarray) -> np.ndarray:
        """Inverse of the categorical encoding: index -> value (None for missing/unknown)."""
        self._check_fitted()
        assert self.vocabularies_ is not None
        vocab = np.asarray([None, None, *self.vocabularies_[column]], dtype=object)
        return vocab[np.asarray(indices)]

    def decode_class(self, task: str, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[task], dtype=object)[np.asarray(indices)]

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON state: vocabularies, numeric statistics, label classes."""
        self._check_fitted()
        return {
            "vocabularies": self.vocabularies_,
            "numeric": {k: vars(v) for k, v in self.numeric_stats_.items()},
            "classes": self.classes_,
            "train_columns": self.train_columns_,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> Preprocessor:
        try:
            self.vocabularies_ = {k: [str(x) for x in v] for k, v in state["vocabularies"].items()}
            self.numeric_stats_ = {k: _NumericStats(**v) for k, v in state["numeric"].items()}
            self.classes_ = {k: [str(x) for x in v] for k, v in state["classes"].items()}
            self.train_columns_ = list(state.get("train_columns", []))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"preprocessor state is malformed: {err!r}") from None
        expected = {f.name for f in self.features.categorical}
        if set(self.vocabularies_) != expected:
            raise DataError(
                f"preprocessor state has vocabularies for {sorted(self.vocabularies_)}, "
                f"the features section expects {sorted(expected)}"
            )
        return self


def _numeric_label(
    series: pd.Series, task: str, col: str, what: str, *, binary: bool = False
) -> np.ndarray:
    present = series.dropna()
    if pd.api.types.is_bool_dtype(series.dtype) or (
        series.dtype == object
        and len(present) > 0
        and all(isinstance(v, bool | np.bool_) for v in present)
    ):
        return series.map(lambda v: np.nan if pd.isna(v) else float(v)).to_numpy(dtype=np.float64)
    coerced = pd.to_numeric(series, errors="coerce")
    bad = coerced.isna() & series.notna()
    if bad.any():
        examples = list(dict.fromkeys(series[bad].astype(str).tolist()))[:5]
        kind = "binary" if binary else "regression"
        hint = " or a `positive:` value" if binary else ""
        raise DataError(
            f"{what}: task {task!r}: label column {col!r} has non-numeric values such as "
            f"{examples}; a {kind} task needs numbers{hint}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        arr = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(arr).any():
        raise DataError(f"{what}: task {task!r}: label column {col!r} has infinite values")
    return arr
