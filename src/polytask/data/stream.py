"""Out-of-core training from Parquet files larger than memory (or than one machine).

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

The training set may be one Parquet file, a directory of them or a glob pattern
(`ParquetSet`); its row groups are the unit of reading. Under torchrun (docs/distributed.md)
the fit is sharded (each rank counts its row groups, `merge_counts` merges the counts, every
rank ends with the same preprocessor) and `ShardedStream` deals each epoch's row groups to
the ranks: no row group is read by two ranks, each rank has its own shuffle buffer, and every
rank takes the same number of steps.
"""

from __future__ import annotations

import contextlib
import glob
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, groupby, islice
from operator import itemgetter
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field

from polytask._defaults import BUFFER_ROWS, CHUNK_ROWS
from polytask._schema import Strict
from polytask.data.encoded import Batch, EncodedData
from polytask.data.lists import list_values
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


def parquet_files(path: str | PathLike[str], what: str = "training set") -> list[Path]:
    """The files of a streamed table: one Parquet file, every ``*.parquet``/``*.pq`` file
    under a directory (recursively, hidden and ``_``-prefixed names skipped, as pyarrow
    datasets skip them), or the files a glob pattern matches; sorted by path."""
    text = str(path)
    if any(c in text for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        where = f"glob {text!r} matches"
    elif Path(text).is_dir():
        found = sorted(
            p
            for p in Path(text).rglob("*")
            if p.is_file()
            and p.suffix.lower() in (".parquet", ".pq")
            and not any(part.startswith((".", "_")) for part in p.relative_to(text).parts)
        )
        where = f"directory {text!r} holds"
    elif Path(text).is_file():
        return [Path(text)]
    else:
        raise DataError(f"{what}: {text!r} does not exist (a Parquet file, directory or glob)")
    if not found:
        raise DataError(f"{what}: {where} no Parquet file (*.parquet, *.pq)")
    return found


class ParquetSet:
    """The row groups of a streamed table (`parquet_files`), numbered across its files in
    path order; only the footers are read here. ``columns`` must be in every file."""

    def __init__(
        self, path: str | PathLike[str], columns: Sequence[str], what: str = "training set"
    ) -> None:
        self.path, self.what, self.columns = path, what, list(columns)
        self.files = parquet_files(path, what)
        self.groups: list[tuple[int, int]] = []
        """``(file index, row group index)`` of each row group."""
        self.sizes: list[int] = []
        self.names: list[str] = []
        for i in range(len(self.files)):
            pf = self._open(i)
            if i == 0:
                self.names = [str(c) for c in pf.schema_arrow.names]
            for g in range(pf.num_row_groups):
                self.groups.append((i, g))
                self.sizes.append(int(pf.metadata.row_group(g).num_rows))

    def _open(self, index: int) -> pq.ParquetFile:
        file = self.files[index]
        try:
            # pre_buffer=False: with pre-buffering the reader keeps every byte range it has
            # read until it is closed, so arrow memory would grow with the file (~40 B per
            # row, 1.4 GiB peak RSS at 20M rows) instead of staying at about one row group.
            pf = pq.ParquetFile(file, pre_buffer=False)
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"{self.what} {str(file)!r}: cannot read Parquet: {err}") from None
        have = set(pf.schema_arrow.names)
        missing = [c for c in self.columns if c not in have]
        if missing:
            raise DataError(
                f"{self.what} {str(file)!r}: missing column(s) {missing} required by the "
                f"schema; the file has columns {sorted(have)[:12]}"
            )
        return pf

    @property
    def rows(self) -> int:
        return sum(self.sizes)

    def read(
        self, groups: Sequence[int], chunk_rows: int, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``chunk_rows`` rows of ``groups`` (indices into
        `groups`), in that order; consecutive groups of one file are read as one run."""
        cols = self.columns if columns is None else list(columns)
        for f, run in groupby((self.groups[g] for g in groups), key=itemgetter(0)):
            yield from self._open(f).iter_batches(
                batch_size=chunk_rows, row_groups=[rg for _, rg in run], columns=cols
            )


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

    def merge(self, other: _Moments) -> None:
        """Add ``other``'s values (Chan's merge of two partial results)."""
        if other.n == 0:
            return
        scale = max(self.scale, other.scale)
        a, b = self.scale / scale, other.scale / scale  # powers of two: exact
        mean_a, m2_a = self.mean * a, self.m2 * a * a
        mean_b, m2_b = other.mean * b, other.m2 * b * b
        n = self.n + other.n
        delta = mean_b - mean_a
        self.mean = mean_a + delta * other.n / n
        self.m2 = m2_a + m2_b + delta * delta * self.n * other.n / n
        self.n, self.scale = n, scale

    def mean_std(self) -> tuple[float, float]:
        if self.n == 0:
            return 0.0, 1.0
        return self.mean * self.scale, float(np.sqrt(max(self.m2, 0.0) / self.n)) * self.scale


@dataclass
class FitCounts:
    """What one process counts over its row groups for the streaming fit; `merge_counts`
    adds those of several processes. Plain data: it travels between ranks pickled."""

    rows: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    moments: dict[str, _Moments] = field(default_factory=dict)
    any_nan: dict[str, bool] = field(default_factory=dict)
    classes: dict[str, set[str]] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)
    positives: dict[str, int] = field(default_factory=dict)
    label_moments: dict[str, _Moments] = field(default_factory=dict)
    label_max: dict[str, float] = field(default_factory=dict)
    list_lengths: dict[str, int] = field(default_factory=dict)
    """The longest row of each list-valued column."""
    error: str | None = None
    """A `DataError` met while counting, raised on every rank after the merge (a rank that
    raised alone would leave the others waiting in the collective)."""


def _add_counts(total: dict[str, int], values: Mapping[str, int] | pd.Series) -> None:
    for key, n in values.items():
        total[str(key)] = total.get(str(key), 0) + int(n)


def merge_counts(parts: Sequence[FitCounts]) -> FitCounts:
    """The counts of all ``parts`` (in order: the result is the same on every rank)."""
    out = FitCounts()
    for part in parts:
        out.error = part.error if out.error is None else out.error
        out.rows += part.rows
        for name, c in part.counts.items():
            _add_counts(out.counts.setdefault(name, {}), pd.Series(c, dtype="int64"))
        for name, m in part.moments.items():
            out.moments.setdefault(name, _Moments()).merge(m)
        for name, m in part.label_moments.items():
            out.label_moments.setdefault(name, _Moments()).merge(m)
        for name, flag in part.any_nan.items():
            out.any_nan[name] = out.any_nan.get(name, False) or flag
        for name, values in part.classes.items():
            out.classes.setdefault(name, set()).update(values)
        _add_counts(out.labelled, part.labelled)
        _add_counts(out.positives, part.positives)
        for name, x in part.label_max.items():
            out.label_max[name] = max(out.label_max.get(name, 0.0), x)
        for name, n in part.list_lengths.items():
            out.list_lengths[name] = max(out.list_lengths.get(name, 0), n)
    return out


def needs_fit(pre: Preprocessor) -> list[Any]:
    """The categorical features whose values are counted: those whose table (their own, or
    the one they are ``shared_with``) has a vocabulary (a hashed one has none)."""
    return [f for f in pre.features.categorical if pre._owner(f).hash_buckets is None]


def count_for_fit(
    pre: Preprocessor, source: ParquetSet, groups: Sequence[int], chunk_rows: int
) -> FitCounts:
    """One pass over ``groups`` of ``source``: vocabulary counts, list widths, numeric
    moments, label classes."""
    what = "training set"
    out = FitCounts()
    categorical = needs_fit(pre)
    out.counts = {pre._owner(f).name: {} for f in categorical}
    out.list_lengths = {f.name: 0 for f in pre.features.lists}
    out.moments = {f.name: _Moments() for f in pre.features.numeric}
    out.any_nan = dict.fromkeys(out.moments, False)
    out.classes = {n: set() for n, t in pre.tasks.items() if task_type(t).has_classes}
    try:
        for rb in source.read(groups, chunk_rows):
            df = rb.to_pandas()
            out.rows += len(df)
            for feat in pre.features.lists:
                lc = list_values(df[feat.name], feat.name, feat.sep, what)
                longest = int(lc.lengths.max(initial=0))
                out.list_lengths[feat.name] = max(out.list_lengths[feat.name], longest)
                if (owner := pre._owner(feat)).hash_buckets is None:
                    _add_counts(out.counts[owner.name], pd.Series(lc.values).value_counts())
            for feat in (f for f in categorical if not f.is_list):
                values, missing = category_strings(df[feat.name])
                _add_counts(out.counts[feat.name], pd.Series(values[~missing]).value_counts())
            for nfeat in pre.features.numeric:
                arr = _numeric_input(df[nfeat.name], nfeat.name, nfeat.log1p, what)
                nan = np.isnan(arr)
                out.any_nan[nfeat.name] |= bool(nan.any())
                out.moments[nfeat.name].add(arr[~nan])
            for name in out.classes:
                values, missing = category_strings(df[pre.label_column(name)])
                out.classes[name].update(values[~missing].tolist())
    except DataError as err:
        out.error = str(err)
    return out


def _count_labels(
    pre: Preprocessor, source: ParquetSet, groups: Sequence[int], chunk: int
) -> FitCounts:
    """The label checks of ``Preprocessor.fit`` over ``groups`` (a second pass, over the
    label columns only, once the classes are known): bad values fail (per chunk); labelled
    rows, positives and the labels' moments are counted."""
    labels = list(dict.fromkeys(c for t in pre.tasks for c in pre.label_columns(t)))
    out = FitCounts(
        labelled=dict.fromkeys(pre.tasks, 0),
        positives=dict.fromkeys(pre.tasks, 0),
        label_moments={name: _Moments() for name in pre.tasks},
        label_max=dict.fromkeys(pre.tasks, 0.0),
    )
    try:
        for rb in source.read(groups, chunk, labels):
            df = rb.to_pandas()
            for name in pre.tasks:
                y = pre._encode_label(df, name, "training set (streamed)")
                pre._encode_weights(df, name, y, "training set (streamed)")  # checks them
                present = y[~np.isnan(y)].astype(np.float64)
                out.labelled[name] += present.size
                out.positives[name] += int((present == 1).sum())
                out.label_moments[name].add(present)
                out.label_max[name] = max(
                    out.label_max[name], float(np.abs(present).max(initial=0.0))
                )
    except DataError as err:
        out.error = str(err)
    return out


Gather = Callable[[FitCounts], list[FitCounts]]
"""Every rank's counts, in rank order, on every rank (`torch.distributed.all_gather_object`)."""


def fit_preprocessor_streaming(
    pre: Preprocessor,
    path: str | PathLike[str],
    *,
    chunk_rows: int = CHUNK_ROWS,
    shard: tuple[int, int] = (0, 1),
    gather: Gather | None = None,
) -> Preprocessor:
    """Fit ``pre`` on the Parquet file(s) at ``path`` (`parquet_files`) in one streaming
    pass; returns ``pre``.

    Sharded, ``shard = (rank, world_size)``: this process counts the row groups ``rank,
    rank + W, ...`` and ``gather`` brings every rank's counts; they are merged in rank order
    (``min_freq`` applies to the merged counts), so every rank ends with the same
    preprocessor, equal to the one-process fit's (means/stds to float64 rounding)."""
    source = ParquetSet(path, _columns(pre))
    rank, world = shard
    if world > 1 and gather is None:
        raise ValueError("a sharded fit needs gather")
    groups = list(range(rank, len(source.groups), world))
    mine = count_for_fit(pre, source, groups, chunk_rows)
    merged = merge_counts(gather(mine)) if gather is not None else mine
    if merged.error is not None:
        raise DataError(merged.error)
    if merged.rows == 0:
        raise DataError("training set is empty: expected at least one row, found 0")
    by_name = {f.name: f for f in pre.features.categorical}
    features = pre.features
    pre.tasks = dict(pre.specs)  # unscaled until `_finish_labels`
    pre.vocabularies_ = {
        name: _vocabulary(pd.Series(counts, dtype="int64"), by_name[name], features)
        for name, counts in merged.counts.items()
    }
    pre.list_lengths_ = {
        f.name: f.max_len or max(merged.list_lengths.get(f.name, 0), 1) for f in features.lists
    }
    pre.numeric_stats_ = {
        f.name: _numeric_state(
            *merged.moments[f.name].mean_std(), merged.any_nan[f.name], f, features.numeric_scaling
        )
        for f in features.numeric
    }
    pre.classes_ = {
        k: task_type(pre.tasks[k]).fit_classes(k, pre.label_column(k), sorted(v))
        for k, v in merged.classes.items()
    }
    pre.train_columns_ = source.names
    labels = _count_labels(pre, source, groups, chunk_rows)
    merged = merge_counts(gather(labels)) if gather is not None else labels
    if merged.error is not None:
        raise DataError(merged.error)
    _finish_labels(pre, merged, source.rows)
    return pre


def _finish_labels(pre: Preprocessor, counts: FitCounts, rows: int) -> None:
    """A task with no labelled row or a ``positive`` value that never occurs fails. The
    labels' moments give each task its label scaling, as ``fit`` does from the column."""
    pre.label_max_ = dict(counts.label_max)
    for name, task in pre.specs.items():
        if task_type(task).fit_scaling(0.0, 1.0) is not None:
            pre.set_label_scaling(name, *counts.label_moments[name].mean_std())
    for name, task in pre.tasks.items():
        col = pre.label_column(name)
        if counts.labelled[name] == 0:
            raise DataError(
                f"training set: task {name!r}: label column {col!r} has no values (all "
                f"{rows} rows are missing); a task needs labelled rows"
            )
        if task.positive is not None and counts.positives[name] == 0:  # binary tasks only
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
        self.source = ParquetSet(path, _columns(preprocessor))
        self._rows = self.source.rows

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
        for rb in self.source.read(groups, self.chunk_rows):
            yield self.preprocessor.transform(rb.to_pandas(), labels=True, what="training set")

    def _prefetched(
        self, generator: torch.Generator | None, groups: Sequence[int] | None
    ) -> Iterator[EncodedData]:
        """`_chunks` one chunk ahead in a thread: decoding/encoding overlaps the steps. The
        row-group order is drawn here (unless ``groups`` gives it), so only this thread
        touches ``generator`` until the first chunk arrives."""
        if groups is None:
            n = len(self.source.groups)
            groups = (
                range(n) if generator is None else torch.randperm(n, generator=generator).tolist()
            )
        order = list(groups)
        q: queue.Queue[Any] = queue.Queue(maxsize=1)
        done = object()
        stop = threading.Event()

        def work() -> None:
            try:
                for chunk in self._chunks(order):
                    while not stop.is_set():
                        with contextlib.suppress(queue.Full):
                            q.put(chunk, timeout=0.1)
                            break
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as err:  # re-raised in the consumer
                q.put(err)

        thread = threading.Thread(target=work, daemon=True, name="polytask-stream")
        thread.start()
        try:
            for item in iter(q.get, done):
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
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        groups: Sequence[int] | None = None,
    ) -> Generator[Batch, None, None]:
        """Batches of ``batch_size`` rows (the last may be smaller). With a generator, row
        groups are read in a random order (``groups``, when given, are read in their order)
        and rows pass through the shuffle buffer: once it holds ``buffer_rows`` rows it is
        permuted, and whole batches are emitted until half of it remains; without one, rows
        come in file order."""
        buffer: list[EncodedData] = []
        held = 0
        shuffle = generator is not None
        for chunk in chain(self._prefetched(generator, groups), [None]):  # None: the end
            if chunk is not None:
                buffer.append(chunk)
                held += len(chunk)
                if held < (self.buffer_rows if shuffle else batch_size):
                    continue
            elif not buffer:
                return
            data = EncodedData.concat(buffer) if len(buffer) > 1 else buffer[0]
            if shuffle:
                data = data.select(torch.randperm(len(data), generator=generator))
            keep = self.buffer_rows // 2 if shuffle else 0
            # at the end every row is emitted, the last batch possibly smaller
            emit = len(data) if chunk is None else (len(data) - keep) // batch_size * batch_size
            # only the emitted rows go to the device; the rest stays a view of the buffer
            out = data.select(slice(0, emit)).to(self.device)
            for start in range(0, emit, batch_size):
                yield out.slice(start, start + batch_size)
            rest = data.select(slice(emit, None))
            buffer = [rest] if len(rest) else []
            held = len(rest)


def _seeded(*words: int) -> torch.Generator:
    """A generator seeded from ``words`` (numpy's SeedSequence mixes them)."""
    state = np.random.SeedSequence([w & 0xFFFFFFFF for w in words]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def deal(sizes: Sequence[int], world_size: int, generator: torch.Generator) -> list[list[int]]:
    """Row groups (their row counts ``sizes``) permuted by ``generator`` and dealt to
    ``world_size`` ranks: each in turn goes to the rank holding the fewest rows so far (the
    lowest rank on a tie). A partition: every row group goes to exactly one rank."""
    loads = [0] * world_size
    hands: list[list[int]] = [[] for _ in range(world_size)]
    for g in torch.randperm(len(sizes), generator=generator).tolist():
        r = min(range(world_size), key=lambda k: (loads[k], k))
        hands[r].append(g)
        loads[r] += sizes[g]
    return hands


def share(batch_size: int, rank: int, world_size: int) -> int:
    """Rank ``rank``'s share of a global batch (shares differ by at most one row)."""
    return batch_size * (rank + 1) // world_size - batch_size * rank // world_size


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of sharded streaming: every rank's row groups and the steps all take."""

    hands: list[list[int]]
    steps: int


class ShardedStream:
    """The batch source of streamed training on one rank of a torchrun job.

    Epoch ``e`` permutes the row groups with a generator seeded from ``(seed, e)`` (the same
    on every rank) and `deal`s them to the ranks, so no row group is read twice and no rank
    reads the whole table. Rank ``r`` reads its row groups in the dealt order through its own
    shuffle buffer, seeded from ``(seed, e, r)``, in batches of its `share` ``b_r`` of
    ``batch_size``. Every rank takes the same number of steps, ``S_e = min_r floor(n_r / b_r)``
    over the ranks' dealt rows ``n_r`` (every rank can compute it from the footers); each rank
    drops the rows of its epoch beyond ``S_e * b_r`` (a different set each epoch).

    Resumable from ``{"epoch"}`` and a position: everything is drawn from seeds, so the
    epoch is replayed up to the position (its row groups are read again, not trained on).
    """

    def __init__(
        self,
        data: StreamingBatches,
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = share(batch_size, rank, world_size)
        self._active = 0  # the epoch `steps` describes: in progress, else the next
        self._current: int | None = None
        self._resume_at: int | None = None
        self._finished: int | None = None
        self.plan(0)

    def plan(self, epoch: int) -> EpochPlan:
        """Epoch ``epoch``'s dealing and step count (the same on every rank); a
        `DataError` when some rank would get fewer rows than its batch share."""
        sizes = self.data.source.sizes
        hands = deal(sizes, self.world_size, _seeded(self.seed, epoch))
        loads = [sum(sizes[g] for g in hand) for hand in hands]
        steps = min(n // share(self.batch_size, r, self.world_size) for r, n in enumerate(loads))
        if steps == 0:
            raise DataError(
                f"streamed training set: {len(sizes)} row group(s) of {sum(sizes)} rows "
                f"dealt to {self.world_size} processes give rows {loads} in epoch {epoch + 1}, "
                f"fewer than a batch share ({self.local_batch} rows) on some rank; write the "
                "file(s) with more, smaller row groups or lower training.batch_size"
            )
        return EpochPlan(hands, steps)

    @property
    def steps(self) -> int:
        return self.plan(self._active).steps

    @property
    def rows_per_epoch(self) -> int:
        """Rows the epoch trains on: the epoch just finished (what its record reports), else
        the one in progress or next."""
        if self._finished is not None:
            return self._finished
        return self.steps * self.batch_size

    def epoch(self) -> Iterator[tuple[str | None, Batch]]:
        # `load_state_dict` sets the saved epoch as the active one, with where to resume in it
        e, start = self._active, self._resume_at or 0
        self._current, self._resume_at, self._finished = e, None, None
        plan = self.plan(e)
        if start >= plan.steps:  # resumed after the epoch's last step: nothing to replay
            self._active, self._finished = e + 1, plan.steps * self.batch_size
            return
        generator = _seeded(self.seed, e, self.rank)
        stream: Generator[Batch, None, None] = self.data.batches(
            self.local_batch, generator=generator, groups=plan.hands[self.rank]
        )
        with contextlib.closing(stream):
            for batch in islice(stream, start, plan.steps):
                yield None, batch
        self._active, self._finished = e + 1, plan.steps * self.batch_size

    def state_dict(self) -> dict[str, torch.Tensor]:
        assert self._current is not None, "state_dict() is only meaningful inside an epoch"
        return {"epoch": torch.tensor(self._current)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], *, position: int) -> None:
        """Make the next `epoch` continue the saved epoch after its first ``position`` steps."""
        self._current = self._active = int(state["epoch"])
        self._resume_at = position


class SplitShard:
    """One rank's part of an evaluation split stored as Parquet (a file, directory or glob),
    for exact metrics over a split no rank holds whole: rank ``r`` of ``W`` reads the row
    groups ``r, r + W, ...`` chunk by chunk (`chunks`); its outputs and labels, not its
    feature columns, are what it keeps (`polytask.training.distributed.evaluate_shard`)."""

    def __init__(
        self,
        path: str | PathLike[str],
        preprocessor: Preprocessor,
        *,
        rank: int,
        world_size: int,
        chunk_rows: int = CHUNK_ROWS,
        what: str = "validation set",
    ) -> None:
        self.path, self.preprocessor, self.what = path, preprocessor, what
        self.rank, self.world_size, self.chunk_rows = rank, world_size, chunk_rows
        self.source = ParquetSet(path, _columns(preprocessor), what)
        self.groups = list(range(rank, len(self.source.groups), world_size))
        if self.source.rows == 0:  # every rank knows it from the footers: all raise
            raise DataError(f"{what} is empty: expected at least one row, found 0")

    @property
    def rows(self) -> int:
        """Rows of the whole split (every rank's)."""
        return self.source.rows

    def __len__(self) -> int:
        return self.rows

    def chunks(self) -> Iterator[EncodedData]:
        """This rank's rows, encoded ``chunk_rows`` at a time."""
        for rb in self.source.read(self.groups, self.chunk_rows):
            yield self.preprocessor.transform(rb.to_pandas(), labels=True, what=self.what)
