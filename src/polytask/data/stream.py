"""Out-of-core training from a Parquet file larger than memory.

- `fit_preprocessor_streaming` fits a `Preprocessor` in one pass over the file's record
  batches (``pyarrow.parquet.ParquetFile.iter_batches``): vocabulary counts, numeric
  count/mean/M2 (Chan's parallel merge of per-chunk statistics, float64), label classes. The
  vocabularies, indicators and classes are exactly those of ``Preprocessor.fit`` on the whole
  table; the numeric mean/std agree to float64 rounding (``fit`` sums sorted values, a stream
  cannot), i.e. to ~1e-12 relative.
- `StreamingBatches` is a training batch source with the interface `fit_loop` uses for an
  `EncodedData` (``len``, ``num_batches``, ``batches(batch_size, generator=)``). Each epoch
  reads the row groups in a seeded random order, encodes each chunk with the fitted
  preprocessor (in a background thread, one chunk ahead) and passes rows through a shuffle
  buffer of ``buffer_rows`` rows.

The shuffle is **approximate**: a row can only be mixed with rows within about
``buffer_rows`` of it after the row-group permutation, so data sorted by a label or a time
column in the file trains on a biased sequence unless the buffer spans a good share of it.
Memory is bounded by the buffer plus two encoded chunks, not by the file.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from pydantic import Field

from polytask._defaults import BUFFER_ROWS, CHUNK_ROWS
from polytask._schema import Strict
from polytask.data.encoded import Batch, EncodedData
from polytask.data.preprocess import (
    Preprocessor,
    _numeric_input,
    _numeric_state,
    _vocabulary,
    category_strings,
)
from polytask.errors import DataError
from polytask.tasks import task_type


class StreamConfig(Strict):
    """Out-of-core training from a Parquet file: rows are read ``chunk_rows`` at a time and
    shuffled through a buffer of ``buffer_rows`` rows (the ``training.stream`` section)."""

    buffer_rows: int = Field(default=BUFFER_ROWS, ge=1)
    chunk_rows: int = Field(default=CHUNK_ROWS, ge=1)


def _columns(pre: Preprocessor) -> list[str]:
    labels = [c for t in pre.tasks for c in pre.label_columns(t)]
    return list(dict.fromkeys([*pre.features.columns, *labels]))


def _open(path: str | PathLike[str], pre: Preprocessor) -> pq.ParquetFile:
    try:
        # pre_buffer=False: with pre-buffering the reader keeps every byte range it has
        # read until it is closed, so arrow memory would grow with the file (~40 B per
        # row, 1.4 GiB peak RSS at 20M rows) instead of staying at about one row group.
        pf = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, ValueError) as err:
        raise DataError(
            f"streamed training set {str(path)!r}: cannot read Parquet: {err}"
        ) from None
    have = set(pf.schema_arrow.names)
    missing = [c for c in _columns(pre) if c not in have]
    if missing:
        raise DataError(
            f"streamed training set {str(path)!r}: missing column(s) {missing} required by the "
            f"schema; the file has columns {sorted(have)[:12]}"
        )
    return pf


class _Moments:
    """Count, mean and M2 of a stream of float64 chunks (Chan et al.'s pairwise merge).

    Kept in units of ``scale``, a power of two that grows with the largest ``|x|`` seen (1
    while it is below 1), so sums of values near 1e308 do not overflow: the streaming form of
    `_mean_std`'s fallback. Dividing by a power of two is exact, so for other data the result
    is the unscaled computation's to the last bit."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.scale = 0, 0.0, 0.0, 1.0

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        exponent = int(np.frexp(np.abs(x).max())[1])  # max|x| < 2**exponent
        scale = max(self.scale, float(np.ldexp(1.0, exponent - 1)))
        if scale > self.scale:
            ratio = self.scale / scale
            self.mean *= ratio
            self.m2 *= ratio * ratio
            self.scale = scale
        x = x / self.scale  # |x| < 2: no sum below overflows
        n_b = int(x.size)
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return 0.0, 1.0
        return self.mean * self.scale, float(np.sqrt(max(self.m2, 0.0) / self.n)) * self.scale


def fit_preprocessor_streaming(
    pre: Preprocessor, path: str | PathLike[str], *, chunk_rows: int = CHUNK_ROWS
) -> Preprocessor:
    """Fit ``pre`` on the Parquet file at ``path`` in one streaming pass; returns ``pre``."""
    what = "training set"
    pf = _open(path, pre)
    columns = _columns(pre)
    counts: dict[str, pd.Series] = {
        f.name: pd.Series(dtype="int64") for f in pre.features.categorical
    }
    moments = {f.name: _Moments() for f in pre.features.numeric}
    any_nan = dict.fromkeys(moments, False)
    classes: dict[str, set[str]] = {
        n: set() for n, t in pre.tasks.items() if task_type(t).has_classes
    }
    rows = 0
    for rb in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        df = rb.to_pandas()
        rows += len(df)
        for feat in pre.features.categorical:
            values, missing = category_strings(df[feat.name])
            vc = pd.Series(values[~missing]).value_counts()
            counts[feat.name] = counts[feat.name].add(vc, fill_value=0).astype("int64")
        for nfeat in pre.features.numeric:
            arr = _numeric_input(df[nfeat.name], nfeat.name, nfeat.log1p, what)
            nan = np.isnan(arr)
            any_nan[nfeat.name] |= bool(nan.any())
            moments[nfeat.name].add(arr[~nan])
        for name in classes:
            values, missing = category_strings(df[pre.label_column(name)])
            classes[name].update(values[~missing].tolist())
    if rows == 0:
        raise DataError(f"{what} is empty: expected at least one row, found 0")
    vocabularies = {
        f.name: _vocabulary(counts[f.name], f, pre.features) for f in pre.features.categorical
    }
    numeric: dict[str, dict[str, Any]] = {}
    for f in pre.features.numeric:
        mean, std = moments[f.name].mean_std()
        state = _numeric_state(mean, std, any_nan[f.name], f, pre.features.numeric_scaling)
        numeric[f.name] = vars(state)
    pre.load_state_dict(
        {
            "vocabularies": vocabularies,
            "numeric": numeric,
            "classes": {
                k: task_type(pre.tasks[k]).fit_classes(k, pre.label_column(k), list(v))
                for k, v in classes.items()
            },
            "train_columns": [str(c) for c in pf.schema_arrow.names],
        }
    )
    _check_labels(pre, pf, columns, chunk_rows)
    return pre


def _check_labels(pre: Preprocessor, pf: pq.ParquetFile, columns: list[str], chunk: int) -> None:
    """The label checks of ``Preprocessor.fit`` over the whole stream: bad values fail (per
    chunk), a task with no labelled row or a ``positive`` value that never occurs fails. The
    labels' moments give each task its label scaling, as ``fit`` does from the whole column."""
    labelled = dict.fromkeys(pre.tasks, 0)
    positives = dict.fromkeys(pre.tasks, 0)
    moments = {name: _Moments() for name in pre.tasks}
    largest = dict.fromkeys(pre.tasks, 0.0)
    labels = [c for t in pre.tasks for c in pre.label_columns(t)]
    for rb in pf.iter_batches(batch_size=chunk, columns=list(dict.fromkeys(labels))):
        df = rb.to_pandas()
        for name in pre.tasks:
            y = pre._encode_label(df, name, "training set (streamed)")
            pre._encode_weights(df, name, y, "training set (streamed)")  # checks them
            present = y[~np.isnan(y)].astype(np.float64)
            labelled[name] += present.size
            positives[name] += int((present == 1).sum())
            moments[name].add(present)
            largest[name] = max(largest[name], float(np.abs(present).max(initial=0.0)))
    pre.label_max_ = largest
    for name, task in pre.specs.items():
        if task_type(task).fit_scaling(0.0, 1.0) is not None:
            pre.set_label_scaling(name, *moments[name].mean_std())
    for name, task in pre.tasks.items():
        col = pre.label_column(name)
        if labelled[name] == 0:
            raise DataError(
                f"training set: task {name!r}: label column {col!r} has no values (all "
                f"{pf.metadata.num_rows} rows are missing); a task needs labelled rows"
            )
        if task.positive is not None and positives[name] == 0:  # only binary tasks have one
            raise DataError(
                f"task {name!r}: positive value {task.positive!r} never occurs in label "
                f"column {col!r}"
            )


class StreamingBatches:
    """Shuffled training batches streamed from a Parquet file; see the module docstring."""

    def __init__(
        self,
        path: str | PathLike[str],
        preprocessor: Preprocessor,
        *,
        buffer_rows: int = BUFFER_ROWS,
        chunk_rows: int = CHUNK_ROWS,
        device: torch.device | str = "cpu",
    ) -> None:
        self.path = path
        self.preprocessor = preprocessor
        self.buffer_rows = buffer_rows
        self.chunk_rows = chunk_rows
        self.device = torch.device(device)
        self._file = _open(path, preprocessor)
        self._columns = _columns(preprocessor)
        self._rows = int(self._file.metadata.num_rows)

    @classmethod
    def from_config(
        cls,
        path: str | PathLike[str],
        preprocessor: Preprocessor,
        cfg: StreamConfig,
        device: torch.device | str = "cpu",
    ) -> StreamingBatches:
        return cls(
            path,
            preprocessor,
            buffer_rows=cfg.buffer_rows,
            chunk_rows=cfg.chunk_rows,
            device=device,
        )

    def __len__(self) -> int:
        return self._rows

    def num_batches(self, batch_size: int) -> int:
        return (self._rows + batch_size - 1) // batch_size

    def to(self, device: torch.device | str) -> StreamingBatches:
        """Batches are moved to ``device`` as they leave the buffer."""
        self.device = torch.device(device)
        return self

    def _chunks(self, groups: list[int]) -> Iterator[EncodedData]:
        for rb in self._file.iter_batches(
            batch_size=self.chunk_rows, row_groups=groups, columns=self._columns
        ):
            yield self.preprocessor.transform(rb.to_pandas(), labels=True, what="training set")

    def _prefetched(self, generator: torch.Generator | None) -> Iterator[EncodedData]:
        """`_chunks` one chunk ahead in a thread: decoding/encoding overlaps the steps. The
        row-group order is drawn here, so only this thread touches ``generator``."""
        groups = list(range(self._file.num_row_groups))
        if generator is not None:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator)]
        q: queue.Queue[Any] = queue.Queue(maxsize=1)
        done = object()
        stop = threading.Event()

        def work() -> None:
            try:
                for chunk in self._chunks(groups):
                    while not stop.is_set():
                        try:
                            q.put(chunk, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as err:  # re-raised in the consumer
                q.put(err)

        thread = threading.Thread(target=work, daemon=True, name="polytask-stream")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
                thread.join(timeout=0.1)

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Batches of ``batch_size`` rows (the last may be smaller). With a generator, row
        groups are read in a random order and rows pass through the shuffle buffer: once it
        holds ``buffer_rows`` rows it is permuted, and whole batches are emitted until half
        of it remains; without one, rows come in file order."""
        buffer: list[EncodedData] = []
        held = 0
        shuffle = generator is not None
        for chunk in self._prefetched(generator):
            buffer.append(chunk)
            held += len(chunk)
            limit = self.buffer_rows if shuffle else batch_size
            if held < limit:
                continue
            data = EncodedData.concat(buffer) if len(buffer) > 1 else buffer[0]
            if shuffle:
                data = data.select(torch.randperm(len(data), generator=generator))
            keep = self.buffer_rows // 2 if shuffle else 0
            emit = (len(data) - keep) // batch_size * batch_size
            # only the emitted rows go to the device; the rest stays a view of the buffer
            out = data.select(slice(0, emit)).to(self.device)
            for start in range(0, emit, batch_size):
                yield out.slice(start, start + batch_size)
            rest = data.select(slice(emit, None))
            buffer = [rest] if len(rest) else []
            held = len(rest)
        if buffer:
            data = EncodedData.concat(buffer) if len(buffer) > 1 else buffer[0]
            if shuffle:
                data = data.select(torch.randperm(len(data), generator=generator))
            out = data.to(self.device)
            for start in range(0, len(out), batch_size):
                yield out.slice(start, start + batch_size)
