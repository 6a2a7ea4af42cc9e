"""The fitted preprocessor: raw table -> column tensors, and back for labels.

Fitted on the training split only and saved with the model as plain JSON, so ``predict``
works on raw rows of the original table.

- Categorical: a vocabulary per column from the training data (values seen at least
  ``min_freq`` times, sorted, so the result does not depend on row order). Index 0 is
  "missing", index 1 "unknown"; values start at 2. Unseen values at predict time map to 1.
  With ``hash_buckets: N`` there is no vocabulary: a value's index is 2 + its stable hash
  (`hash_buckets`) modulo N; missing is still 0.
- List-valued categorical: each cell a list of values (a list, or text split on ``sep``),
  every value encoded as above (by the column's vocabulary, its hash, or the vocabulary of
  the column it is ``shared_with``), left-aligned in a padded ``[N, max_len]`` tensor whose
  padding is 0 (`EncodedData.lists`). Missing elements and empty strings are dropped; a
  missing cell is an empty list. ``max_len`` is the column's setting, else the longest
  training row; a longer row keeps its first or last ``max_len`` values (``truncate``).
- Numeric: optional signed log1p, then standardization with the training mean and std;
  NaN and +-inf are missing and imputed with the training mean (0 after scaling), with a 0/1
  missing-indicator column for every column that had missing values in training.
- Labels: binary from 0/1, bool or a ``positive`` value; regression floats; multiclass from
  the sorted training classes. A missing label is NaN and is masked out of loss and metrics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask._columns import as_float, category_strings, examples, not_real, numeric_label
from polytask.data.encoded import EncodedData
from polytask.data.features import CategoricalFeature, FeaturesConfig, NumericFeature
from polytask.data.lists import ListColumn, list_values, pad_lists, value_kind
from polytask.errors import DataError, NotFittedError, closest
from polytask.tasks import TaskSpec, task_type, weight_key

MISSING_INDEX = 0
UNKNOWN_INDEX = 1
_CLIP = 1e6  # standardized values beyond this are clipped so float32 never overflows


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of finite values, independent of their order; when the sums
    overflow float64 (values near 1e308) they are taken on ``x / max|x|`` and scaled back, so
    both stay finite."""
    if x.size == 0:
        return 0.0, 1.0
    x = np.sort(x)  # the same sums, to the last bit, whatever the row order
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(x.mean()), float(x.std())
    if np.isfinite(mean) and np.isfinite(std):
        return mean, std
    scale = float(np.abs(x).max())
    y = x / scale
    return float(y.mean()) * scale, float(y.std()) * scale


@dataclass
class _NumericStats:
    mean: float
    std: float
    log1p: bool
    indicator: bool


def _category_codes(values: np.ndarray, missing: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Embedding indices of a column's canonical strings: 0 missing, 1 unknown, then the
    vocabulary from 2."""
    codes = pd.Index(vocabulary, dtype=object).get_indexer(pd.Index(values, dtype=object))
    return np.where(missing, MISSING_INDEX, np.where(codes < 0, UNKNOWN_INDEX, codes + 2))


HASH_KEY = "polytask.hash.v1"
"""The fixed 16-byte SipHash key of `hash_buckets`: part of the encoding, never changed."""


def hash_buckets(values: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket in ``[0, buckets)`` of each canonical string: SipHash-2-4 of its UTF-8 bytes
    under the fixed key `HASH_KEY`, mixed by pandas' 64-bit finaliser
    (``pandas.util.hash_array``), modulo ``buckets``. Vectorised, seedless and independent of
    the process, machine and ``PYTHONHASHSEED`` (never Python's salted ``hash``)."""
    h = pd.util.hash_array(
        np.asarray(values, dtype=object), encoding="utf8", hash_key=HASH_KEY, categorize=False
    )
    return (h % np.uint64(buckets)).astype(np.int64)


def _hashed_codes(values: np.ndarray, missing: np.ndarray, buckets: int) -> np.ndarray:
    """Embedding indices by hash: 0 missing, then 2 + the value's bucket."""
    filled = np.where(missing, "", values) if missing.any() else values
    return np.where(missing, MISSING_INDEX, hash_buckets(filled, buckets) + 2)


HASH_CHUNK = 1 << 18
"""Rows whose canonical strings are built and hashed at once (about 180 bytes a row, so 45
MiB): a whole column's strings are never all held, and hashing's memory does not grow with
the rows."""


def _hashed_column(series: pd.Series, buckets: int) -> np.ndarray:
    """`_hashed_codes` of a single-valued column, `HASH_CHUNK` rows at a time."""
    out = np.empty(len(series), dtype=np.int64)
    for start in range(0, len(series), HASH_CHUNK):
        values, missing = category_strings(series.iloc[start : start + HASH_CHUNK])
        out[start : start + HASH_CHUNK] = _hashed_codes(values, missing, buckets)
    return out


_Scaled = tuple[np.ndarray, np.ndarray | None]


def _scaled(arr: np.ndarray, isnan: np.ndarray, s: _NumericStats) -> _Scaled:
    """A numeric column standardized (0 where missing, clipped to +-_CLIP), and its 0/1
    missing indicator when the column has one."""
    with np.errstate(over="ignore"):  # an overflow is +-inf, clipped just below
        z = np.clip((arr - s.mean) / s.std, -_CLIP, _CLIP)
    return np.where(isnan, 0.0, z), isnan.astype(np.float64) if s.indicator else None


def _encoded(
    cat: np.ndarray,
    scaled: list[_Scaled],
    labels: dict[str, torch.Tensor],
    lists: dict[str, np.ndarray],
) -> EncodedData:
    """The encoded split: categorical codes; the scaled numeric columns, then their missing
    indicators; the labels; the padded list columns."""
    columns = [z for z, _ in scaled] + [ind for _, ind in scaled if ind is not None]
    num = np.stack(columns, axis=1) if columns else np.zeros((len(cat), 0))
    return EncodedData(
        categorical=torch.from_numpy(cat),
        numeric=torch.from_numpy(num.astype(np.float32)),
        labels=labels,
        lists={k: torch.from_numpy(v) for k, v in lists.items()},
    )


# The pieces of a fit shared by `Preprocessor.fit` and the streaming fit (data/stream.py), so
# the two cannot drift apart.


def _numeric_input(series: pd.Series, column: str, log1p: bool, what: str) -> np.ndarray:
    """A numeric column as it is scaled: float64 with NaN for missing and non-finite values,
    after the optional signed log1p; text is an error."""
    if not_real(series.dtype):
        raise DataError(
            f"{what}: numeric column {column!r} has dtype {series.dtype}; expected real numbers"
        )
    arr, bad = as_float(series)
    if bad.any():
        raise DataError(
            f"{what}: numeric column {column!r} has non-numeric values such as "
            f"{examples(series, bad, 3)}; expected numbers (empty or NaN for missing)"
        )
    arr[~np.isfinite(arr)] = np.nan
    if log1p:
        arr = np.sign(arr) * np.log1p(np.abs(arr))
    return arr


def _vocabulary(counts: pd.Series, feat: CategoricalFeature, features: FeaturesConfig) -> list[str]:
    """The sorted values counted at least ``min_freq`` times (the column's, else the
    section's)."""
    min_freq = feat.min_freq or features.min_freq
    return sorted(counts[counts >= min_freq].index.tolist())


def _numeric_state(
    mean: float, std: float, has_nan: bool, feat: NumericFeature, scaling: str
) -> _NumericStats:
    """Scaling statistics of a numeric column: none at all with ``numeric_scaling: none``; a
    zero or non-finite std (a constant column) scales by 1."""
    if scaling == "none":
        mean, std = 0.0, 1.0
    return _NumericStats(
        mean=mean,
        std=std if std > 0 and np.isfinite(std) else 1.0,
        log1p=feat.log1p,
        indicator=has_nan,
    )


class Preprocessor:
    """Fit on a training table, then encode any table with the same columns into tensors.

    Parameters are the validated ``features`` and ``tasks`` sections of the run file. With
    ``features.tokens`` (sentences) the preprocessor built is a
    `polytask.data.tokens.SentencePreprocessor`.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Preprocessor:
        # (no arguments when copy or pickle rebuilds one: its class is already the right one)
        features = kwargs.get("features")
        if cls is Preprocessor and features is not None and features.tokens is not None:
            from polytask.data.tokens import SentencePreprocessor

            return super().__new__(SentencePreprocessor)
        return super().__new__(cls)

    def __init__(self, *, features: FeaturesConfig, tasks: Mapping[str, TaskSpec]) -> None:
        self.features = features
        self.specs = {name: TaskSpec.of(t) for name, t in tasks.items()}
        """The tasks as given."""
        self.tasks = dict(self.specs)
        """The tasks as the network learns them: `specs` plus the label scaling fitted on
        the training labels (`TaskSpec.label_shift`, ``label_scale``)."""
        self.label_max_: dict[str, float] = {}
        """Largest absolute training label per task (set by a fit, not saved)."""
        self.vocabularies_: dict[str, list[str]] | None = None
        """Per categorical column with a table of its own and no ``hash_buckets``."""
        self.list_lengths_: dict[str, int] = {}
        """Padded width (``max_len``) per list-valued column."""
        self.numeric_stats_: dict[str, _NumericStats] = {}
        self.classes_: dict[str, list[str]] = {}
        self.train_columns_: list[str] = []

    # ---------------------------------------------------------------------------- helpers
    def label_column(self, task: str) -> str:
        return self.tasks[task].label or task

    def label_columns(self, task: str) -> list[str]:
        """The columns a task's labels are read from: the label, and its sample weights."""
        weight = self.tasks[task].sample_weight
        return [self.label_column(task), *([weight] if weight else [])]

    def set_label_scaling(self, task: str, mean: float, std: float) -> None:
        """The task's label scaling from its training labels' mean and std (its type's form;
        none with ``label_scaling: none``)."""
        spec = self.specs[task]
        fitted = None if spec.label_scaling == "none" else task_type(spec).fit_scaling(mean, std)
        shift, scale = fitted if fitted is not None else (0.0, 1.0)
        self.tasks[task] = replace(spec, label_shift=shift, label_scale=scale)

    def scaling_hint(self) -> str:
        """What a non-finite loss most likely comes from when a task's labels are huge and
        not scaled: ``"; the likely cause: ..."``, or empty."""
        suspects = [
            f"task {name!r}: label column {self.label_column(name)!r} reaches "
            f"{self.label_max_[name]:.3g}"
            for name, spec in self.tasks.items()
            if self.label_max_.get(name, 0.0) / spec.label_scale > 1e6
        ]
        if not suspects:
            return ""
        return (
            f"; the likely cause: {', '.join(suspects)}, a scale the network cannot learn "
            "directly: keep label_scaling: auto (the default) or rescale the column"
        )

    @property
    def fitted(self) -> bool:
        return self.vocabularies_ is not None

    def _check_fitted(self) -> dict[str, list[str]]:
        """The fitted vocabularies; a `NotFittedError` before a fit."""
        if self.vocabularies_ is None:
            raise NotFittedError("this Preprocessor is not fitted yet; call fit(train) first")
        return self.vocabularies_

    def _require_columns(self, df: pd.DataFrame, columns: list[str], what: str) -> None:
        have = [str(x) for x in df.columns]
        missing = [c for c in columns if c not in df.columns]
        if missing:
            hints = "".join(
                f" (for {c!r}{closest(c, have).removeprefix(';')})"
                for c in missing
                if closest(c, have)
            )
            shown = have if len(have) <= 12 else [*have[:12], f"... {len(have)} in all"]
            raise DataError(
                f"{what}: missing column(s) {missing} required by the schema; the table has "
                f"columns {shown}{hints}"
            )
        repeated = sorted({str(c) for c in df.columns[df.columns.duplicated()]} & set(columns))
        if repeated:
            raise DataError(
                f"{what}: column(s) {repeated} appear more than once in the table; expected "
                "each column once"
            )

    # ---------------------------------------------------------------------------- fit
    def _fit_frames(
        self,
        df: pd.DataFrame,
        label_frames: Mapping[str, pd.DataFrame] | None,
        columns: list[str],
        what: str,
    ) -> Mapping[str, pd.DataFrame]:
        """Each task's training table, once ``df`` is checked to have ``columns`` and each
        table its task's label columns; the tasks are unscaled until the fit scales them."""
        self.tasks = dict(self.specs)
        if label_frames is None:
            labels = [c for t in self.tasks for c in self.label_columns(t)]
            self._require_columns(df, columns + labels, what)
            return dict.fromkeys(self.tasks, df)
        self._require_columns(df, columns, what)
        for name in self.tasks:
            self._require_columns(
                label_frames[name], self.label_columns(name), f"training set of task {name!r}"
            )
        return label_frames

    def fit(
        self, df: pd.DataFrame, *, label_frames: Mapping[str, pd.DataFrame] | None = None
    ) -> Preprocessor:
        """Learn vocabularies, scaling statistics and label classes from the training table.

        With ``label_frames`` (one table per task, for alternate training) ``df`` holds the
        feature columns of all of them and each task's labels come from its own table."""
        self._fit(df, label_frames, "training set", encode=False)
        return self

    def fit_transform(
        self, df: pd.DataFrame, *, labels: bool | None = True, what: str = "training set"
    ) -> EncodedData:
        """`fit` on ``df`` and encode it: the same as ``fit(df).transform(df, labels=labels,
        what=what)``, but each column's canonical strings, numbers and labels are computed
        once, not once to fit and again to encode."""
        data = self._fit(df, None, what, encode=True)
        assert data is not None
        if labels is False:
            data.labels = {}
        return data

    def _fit(
        self,
        df: pd.DataFrame,
        label_frames: Mapping[str, pd.DataFrame] | None,
        what: str,
        *,
        encode: bool,
    ) -> EncodedData | None:
        """`fit`; with ``encode`` also `transform` ``df`` (labels included) from the values
        the fit computes, column by column, so no more than one column's strings are held."""
        if len(df) == 0:
            raise DataError(f"{what} is empty: expected at least one row, found 0")
        label_frames = self._fit_frames(df, label_frames, self.features.columns, what)

        vocabularies, list_lengths, cat, lists = self._fit_categorical(df, what, encode=encode)

        stats: dict[str, _NumericStats] = {}
        scaled: list[_Scaled] = []
        for nfeat in self.features.numeric:
            arr = _numeric_input(df[nfeat.name], nfeat.name, nfeat.log1p, what)
            isnan = np.isnan(arr)
            stats[nfeat.name] = _numeric_state(
                *_mean_std(arr[~isnan]), bool(isnan.any()), nfeat, self.features.numeric_scaling
            )
            if encode:
                scaled.append(_scaled(arr, isnan, stats[nfeat.name]))

        classes: dict[str, list[str]] = {}
        label_strings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, task in self.tasks.items():
            kind = task_type(task)
            if kind.has_classes:
                col = self.label_column(name)
                values, missing = category_strings(label_frames[name][col])
                classes[name] = kind.fit_classes(name, col, values[~missing].tolist())
                label_strings[name] = values, missing
        self.vocabularies_ = vocabularies
        self.list_lengths_ = list_lengths
        self.numeric_stats_ = stats
        self.classes_ = classes
        self.train_columns_ = [str(c) for c in df.columns]
        # Validate the labels now, so a bad label fails before any training. These are
        # checks of the whole training set: a chunk of it (streamed training) may well have
        # no positive row, so `_encode_label` must not make them.
        encoded: dict[str, torch.Tensor] = {}
        for name, task in self.tasks.items():
            frame = label_frames[name]
            y = self._encode_label(frame, name, what, strings=label_strings.pop(name, None))
            present = y[~np.isnan(y)].astype(np.float64)
            self.label_max_[name] = float(np.abs(present).max()) if present.size else 0.0
            if task_type(task).fit_scaling(0.0, 1.0) is not None:  # a scaled type
                self.set_label_scaling(name, *_mean_std(present))
            y = task_type(self.tasks[name]).scale_label(y, self.tasks[name])
            if np.isnan(y).all():
                raise DataError(
                    f"{what}: task {name!r}: label column {self.label_column(name)!r} has no "
                    f"values (all {len(frame)} rows are missing); a task needs labelled rows"
                )
            if task.positive is not None and not (y == 1).any():  # only binary tasks have one
                values, missing = category_strings(frame[self.label_column(name)])
                seen = sorted(set(values[~missing].tolist()))[:10]
                raise DataError(
                    f"task {name!r}: positive value {task.positive!r} never occurs in label "
                    f"column {self.label_column(name)!r}; values found: {seen}"
                )
            weights = self._encode_weights(frame, name, y, what)
            if encode:
                encoded[name] = torch.from_numpy(y)
                if weights is not None:
                    encoded[weight_key(name)] = torch.from_numpy(weights)
        return _encoded(cat, scaled, encoded, lists) if encode else None

    def _fit_categorical(
        self, df: pd.DataFrame, what: str, *, encode: bool
    ) -> tuple[dict[str, list[str]], dict[str, int], np.ndarray, dict[str, np.ndarray]]:
        """Vocabularies (of the columns that have one) and list widths from the training
        table; with ``encode`` also its categorical codes and padded lists. List columns are
        read first, so a column's vocabulary counts the lists that share its table."""
        features = self.features
        n = len(df)
        counts: dict[str, pd.Series] = {}
        kinds: dict[str, str] = {}
        read: dict[str, ListColumn] = {}
        list_lengths: dict[str, int] = {}
        for feat in features.lists:
            lc = list_values(df[feat.name], feat.name, feat.sep, what)
            list_lengths[feat.name] = feat.max_len or max(int(lc.lengths.max(initial=0)), 1)
            owner = self._owner(feat)
            if owner.hash_buckets is None:
                vc = pd.Series(lc.values).value_counts()
                if owner is feat:
                    _warn_if_id_like(feat.name, len(vc), len(lc.values), what)
                counts[owner.name] = (
                    counts[owner.name].add(vc, fill_value=0) if (owner.name in counts) else vc
                )
            if feat.shared_with is not None:
                kinds[feat.name] = value_kind(lc.values)
            if encode:
                read[feat.name] = lc
        vocabularies: dict[str, list[str]] = {}
        cat = np.zeros((n if encode else 0, len(features.single)), dtype=np.int64)
        for j, feat in enumerate(features.single):
            column = df[feat.name]
            _refuse_nested(column, feat.name, what)
            hashed = feat.hash_buckets is not None
            # a hashed column needs no strings to fit: only a sample for the kind check
            values, missing = category_strings(column.iloc[:10_000] if hashed else column)
            sharers = [f for f in features.lists if f.shared_with == feat.name]
            if sharers:
                kind = value_kind(values[~missing])
                for f in sharers:
                    if "empty" not in (kind, kinds[f.name]) and kinds[f.name] != kind:
                        mine = read[f.name].values[:3].tolist() if f.name in read else []
                        raise DataError(
                            f"{what}: list column {f.name!r} is shared_with {feat.name!r}, but "
                            f"its values are {kinds[f.name]} and {feat.name!r}'s are {kind} "
                            f"(such as {mine} vs "
                            f"{values[~missing][:3].tolist()}); a shared table needs values "
                            "of one kind"
                        )
            if feat.hash_buckets is not None:
                if encode:
                    cat[:, j] = _hashed_column(column, feat.hash_buckets)
                continue
            vc = pd.Series(values[~missing]).value_counts()
            _warn_if_id_like(feat.name, len(vc), n, what)
            if feat.name in counts:
                vc = counts.pop(feat.name).add(vc, fill_value=0)
            vocabularies[feat.name] = _vocabulary(vc, feat, features)
            if encode:
                cat[:, j] = self._codes(feat, values, missing, vocabularies)
        for name, vc in counts.items():  # list columns with a table of their own
            feat = next(f for f in features.lists if f.name == name)
            vocabularies[name] = _vocabulary(vc, feat, features)
        if not encode:
            return vocabularies, list_lengths, cat, {}
        lists = self._list_codes(lambda f: read.pop(f.name), vocabularies, list_lengths)
        return vocabularies, list_lengths, cat, lists

    def _list_codes(
        self,
        read: Callable[[CategoricalFeature], ListColumn],
        vocabularies: Mapping[str, list[str]],
        widths: Mapping[str, int],
    ) -> dict[str, np.ndarray]:
        """The padded codes of each list column, ``read`` one at a time (a list's values are
        never missing)."""
        out: dict[str, np.ndarray] = {}
        for feat in self.features.lists:
            lc = read(feat)
            none = np.zeros(len(lc.values), bool)
            codes = self._codes(self._owner(feat), lc.values, none, vocabularies)
            out[feat.name] = pad_lists(codes, lc.lengths, widths[feat.name], feat.truncate)
        return out

    def _owner(self, feat: CategoricalFeature) -> CategoricalFeature:
        """The feature whose table (vocabulary or hashing) ``feat`` uses."""
        if feat.shared_with is None:
            return feat
        return next(f for f in self.features.categorical if f.name == feat.shared_with)

    @staticmethod
    def _codes(
        feat: CategoricalFeature,
        values: np.ndarray,
        missing: np.ndarray,
        vocabularies: Mapping[str, list[str]],
    ) -> np.ndarray:
        """Embedding indices of canonical strings in ``feat``'s table."""
        if feat.hash_buckets is not None:
            return _hashed_codes(values, missing, feat.hash_buckets)
        return _category_codes(values, missing, vocabularies[feat.name])

    # ---------------------------------------------------------------------------- transform
    def table_size(self, feat: CategoricalFeature) -> int:
        """Rows of a categorical feature's own embedding table: its vocabulary (or hash
        buckets) + missing + unknown."""
        vocabularies = self._check_fitted()
        if feat.hash_buckets is not None:
            return feat.hash_buckets + 2
        return len(vocabularies[feat.name]) + 2

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per single-valued categorical column (vocabulary, or hash
        buckets, + missing + unknown)."""
        return [self.table_size(f) for f in self.features.single]

    @property
    def list_cardinalities(self) -> dict[str, int]:
        """Embedding table size per list-valued column with a table of its own (not
        ``shared_with`` another)."""
        return {f.name: self.table_size(f) for f in self.features.lists if f.shared_with is None}

    @property
    def numeric_width(self) -> int:
        """Numeric input width: one per numeric column plus one per missing indicator."""
        return len(self.numeric_stats_) + sum(s.indicator for s in self.numeric_stats_.values())

    def num_classes(self, task: str) -> int:
        """Width of the task's raw output (its number of classes; 1 for a type without)."""
        return task_type(self.tasks[task]).out_dim(self.classes_.get(task))

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
        vocabularies = self._check_fitted()
        self._require_columns(df, self.features.columns, what)
        n = len(df)

        cat = np.zeros((n, len(self.features.single)), dtype=np.int64)
        for j, feat in enumerate(self.features.single):
            _refuse_nested(df[feat.name], feat.name, what)
            if feat.hash_buckets is not None:
                cat[:, j] = _hashed_column(df[feat.name], feat.hash_buckets)
            else:
                cat[:, j] = self._codes(feat, *category_strings(df[feat.name]), vocabularies)
        lists = self._list_codes(
            lambda f: list_values(df[f.name], f.name, f.sep, what), vocabularies, self.list_lengths_
        )

        scaled: list[_Scaled] = []
        for nfeat in self.features.numeric:
            s = self.numeric_stats_[nfeat.name]
            arr = _numeric_input(df[nfeat.name], nfeat.name, s.log1p, what)
            scaled.append(_scaled(arr, np.isnan(arr), s))

        label_tensors: dict[str, torch.Tensor] = {}
        if labels is not False:
            for name, spec in self.tasks.items():
                col = self.label_column(name)
                if (only is not None and name != only) or col not in df.columns:
                    if labels and only in (None, name):
                        self._require_columns(df, [col], what)
                    y = np.full(n, np.nan, dtype=np.float32)
                else:
                    y = task_type(spec).scale_label(self._encode_label(df, name, what), spec)
                label_tensors[name] = torch.from_numpy(y)
                weights = self._encode_weights(df, name, y, what)
                if weights is not None:
                    label_tensors[weight_key(name)] = torch.from_numpy(weights)
        return _encoded(cat, scaled, label_tensors, lists)

    def _encode_weights(
        self, df: pd.DataFrame, task: str, y: np.ndarray, what: str
    ) -> np.ndarray | None:
        """The task's sample weights (float32), or None for a task without; a labelled row
        whose weight is missing or negative is a `DataError` naming the column."""
        column = self.tasks[task].sample_weight
        if column is None:
            return None
        labelled = ~np.isnan(y)
        if column not in df.columns:
            if not labelled.any():
                return np.full(len(df), np.nan, dtype=np.float32)
            self._require_columns(df, [column], what)
        where = f"{what}: task {task!r}: sample_weight column {column!r}"
        w = numeric_label(df[column], where, "sample_weight")
        with np.errstate(invalid="ignore"):
            bad = labelled & ~(w >= 0)
        if bad.any():
            raise DataError(
                f"{where} has {int(bad.sum())} of {int(labelled.sum())} labelled rows with a "
                "missing or negative weight; expected numbers >= 0"
            )
        return w.astype(np.float32)

    def _encode_label(
        self,
        df: pd.DataFrame,
        task: str,
        what: str,
        *,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """A label column as float32 (NaN where missing); ``strings`` are its
        `category_strings` when the caller has them already (multiclass)."""
        col = self.label_column(task)
        spec = self.tasks[task]
        return task_type(spec).encode(
            df[col],
            spec,
            where=f"{what}: task {task!r}: label column {col!r}",
            classes=self.classes_.get(task),
            strings=strings,
        )  # raw: `TaskType.scale_label` maps it to what the network learns

    # ---------------------------------------------------------------------------- decode
    def decode_categorical(self, column: str, indices: np.ndarray) -> np.ndarray:
        """Inverse of the categorical encoding: index -> value (None for missing/unknown, and
        for every index of a hashed column, which keeps no vocabulary)."""
        vocabularies = self._check_fitted()
        if column not in vocabularies:
            return np.full(np.shape(indices), None, dtype=object)
        vocab = np.asarray([None, None, *vocabularies[column]], dtype=object)
        return vocab[np.asarray(indices)]

    def decode_class(self, task: str, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[task], dtype=object)[np.asarray(indices)]

    # ---------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON state: vocabularies, numeric statistics, label classes."""
        self._check_fitted()
        return {
            "vocabularies": self.vocabularies_,
            "hash_buckets": {
                f.name: f.hash_buckets for f in self.features.categorical if f.hash_buckets
            },
            "list_lengths": self.list_lengths_,
            "numeric": {k: vars(v) for k, v in self.numeric_stats_.items()},
            "classes": self.classes_,
            "train_columns": self.train_columns_,
            "label_scaling": {
                name: {"shift": t.label_shift, "scale": t.label_scale}
                for name, t in self.tasks.items()
                if (t.label_shift, t.label_scale) != (0.0, 1.0)
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> Preprocessor:
        """Restore a fitted state; anything that does not fit the features/tasks sections
        (a column or task left out, a repeated value, a wrong type) is a `DataError`."""
        try:
            vocabularies = {k: [str(x) for x in v] for k, v in state["vocabularies"].items()}
            numeric = {k: _NumericStats(**v) for k, v in state["numeric"].items()}
            classes = {k: [str(x) for x in v] for k, v in state["classes"].items()}
            train_columns = [str(c) for c in state.get("train_columns", [])]
            # absent from folders saved before list-valued and hashed features
            buckets = {str(k): int(v) for k, v in state.get("hash_buckets", {}).items()}
            list_lengths = {str(k): int(v) for k, v in state.get("list_lengths", {}).items()}
            # absent from folders saved before label scaling: their labels were not scaled
            label_scaling = {
                str(k): (v["shift"], v["scale"]) for k, v in state.get("label_scaling", {}).items()
            }
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"preprocessor state is malformed: {err!r}") from None
        own = [f for f in self.features.categorical if f.shared_with is None]
        expected: list[tuple[str, set[str], set[str]]] = [
            ("vocabularies", set(vocabularies), {f.name for f in own if f.hash_buckets is None}),
            ("list widths", set(list_lengths), {f.name for f in self.features.lists}),
            ("numeric statistics", set(numeric), {f.name for f in self.features.numeric}),
            (
                "classes",
                set(classes),
                {n for n, t in self.tasks.items() if task_type(t).has_classes},
            ),
        ]
        for what, found, names in expected:
            if found != names:
                raise DataError(
                    f"preprocessor state has {what} for {sorted(found)}, the config expects "
                    f"{sorted(names)}"
                )
        configured = {f.name: f.hash_buckets for f in own if f.hash_buckets is not None}
        if buckets != configured:
            raise DataError(
                f"preprocessor state has hash buckets {buckets}, the config {configured}: the "
                "buckets a model was trained with cannot change"
            )
        bad_width = {k: v for k, v in list_lengths.items() if v < 1}
        if bad_width:
            raise DataError(f"preprocessor state: list widths {bad_width}; expected >= 1")
        for what, lists in (("vocabulary", vocabularies), ("classes", classes)):
            for key, values in lists.items():
                if len(set(values)) != len(values):
                    raise DataError(f"preprocessor state: {what} of {key!r} repeats values")
        for key, st in numeric.items():
            if not (_finite(st.mean) and _finite(st.std) and st.std > 0):
                raise DataError(
                    f"preprocessor state: numeric column {key!r} has mean {st.mean!r} and std "
                    f"{st.std!r}; expected finite numbers and std > 0"
                )
        unknown = sorted(set(label_scaling) - set(self.tasks))
        if unknown:
            raise DataError(f"preprocessor state has label scaling for unknown task(s) {unknown}")
        for key, (shift, scale) in label_scaling.items():
            if not (_finite(shift) and _finite(scale) and scale > 0):
                raise DataError(
                    f"preprocessor state: task {key!r} has label shift {shift!r} and scale "
                    f"{scale!r}; expected finite numbers and scale > 0"
                )
        self.vocabularies_ = vocabularies
        self.list_lengths_ = list_lengths
        self.numeric_stats_ = numeric
        self.classes_ = classes
        self.train_columns_ = train_columns
        self.tasks = dict(self.specs)
        for name, (shift, scale) in label_scaling.items():
            self.tasks[name] = replace(
                self.specs[name], label_shift=float(shift), label_scale=float(scale)
            )
        return self


ID_LIKE_DISTINCT = 100_000
"""A categorical column with more distinct values than this (or than half its rows, when
that is above `ID_LIKE_MIN`) draws a warning that it looks like an ID column."""
ID_LIKE_MIN = 10_000


class IdLikeColumnWarning(UserWarning):
    """A categorical feature has so many distinct values that it looks like an identifier."""


def _warn_if_id_like(column: str, distinct: int, rows: int, what: str) -> None:
    if distinct > ID_LIKE_DISTINCT or (distinct > ID_LIKE_MIN and distinct > rows / 2):
        warnings.warn(
            f"{what}: categorical column {column!r} has {distinct:,} distinct values in "
            f"{rows:,} rows: it looks like an ID column, whose embedding table is large and "
            "learns little per value; set hash_buckets: N on it (a fixed-size table, no stored "
            "vocabulary), raise its min_freq so rare values share the unseen row, or drop it",
            IdLikeColumnWarning,
            stacklevel=4,
        )


_NESTED = (list, tuple, dict, np.ndarray)
_NESTED_FIX = {
    "struct": "",
    "list": "declare it list-valued (e.g. pooling: mean, docs/features.md), or ",
}


def _refuse_nested(series: pd.Series, column: str, what: str) -> None:
    """A list- or struct-valued column (a Parquet list or struct column) is not a plain
    categorical: refused rather than silently turned into strings."""
    if isinstance(series.dtype, pd.ArrowDtype):
        import pyarrow as pa

        arrow = series.dtype.pyarrow_dtype
        nested = pa.types.is_nested(arrow)
        kind = "struct" if pa.types.is_struct(arrow) else "list"
    elif series.dtype == object:
        found = next((v for v in series.to_numpy() if isinstance(v, _NESTED)), None)
        nested = found is not None
        kind = "struct" if isinstance(found, dict) else "list"
    else:
        return
    if nested:
        raise DataError(
            f"{what}: categorical column {column!r} holds {kind} values (a Parquet {kind} "
            f"column); a categorical feature takes one value per row: {_NESTED_FIX[kind]}"
            "leave the column out"
        )


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and bool(np.isfinite(x))
