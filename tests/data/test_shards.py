"""Sharded streaming: Parquet directories and globs, row groups dealt to ranks, the merged fit."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from polytask.config import FeaturesConfig, TaskConfig
from polytask.data import Preprocessor
from polytask.data.stream import (
    FitCounts,
    ShardedStream,
    StreamingBatches,
    fit_preprocessor_streaming,
)
from polytask.errors import DataError

FEATURES = {
    "categorical": ["city", {"name": "device", "min_freq": 3}, "code"],
    "numeric": ["price", {"name": "income", "log1p": True}],
}
TASKS = {
    "click": {"type": "binary", "label": "clicked"},
    "kind": {"type": "multiclass", "label": "kind"},
}


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.normal(10, 3, n)
    price[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "city": rng.choice(["a", "b", "c", None], n),
            # rare values: min_freq must apply to the merged counts, not per rank
            "device": rng.choice([f"d{i}" for i in range(300)], n),
            "code": np.arange(n),  # a unique id: which rows were read
            "price": price,
            "income": rng.exponential(1e4, n),
            "clicked": rng.integers(0, 2, n).astype(float),
            "kind": rng.choice(["x", "y", "z"], n),
        }
    )


def _pre() -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig.model_validate(FEATURES),
        tasks={k: TaskConfig.model_validate(v) for k, v in TASKS.items()},
    )


def _directory(df: pd.DataFrame, folder: Path, cuts: list[tuple[int, int]]) -> Path:
    """One file per ``(rows, row group size)`` in ``cuts``: row groups of unequal sizes."""
    folder.mkdir()
    start = 0
    for i, (rows, group) in enumerate(cuts):
        part = pa.Table.from_pandas(df.iloc[start : start + rows], preserve_index=False)
        pq.write_table(part, folder / f"part-{i}.parquet", row_group_size=group)
        start += rows
    assert start == len(df)
    return folder


CUTS = [(900, 130), (700, 300), (400, 55)]  # 7 + 3 + 8 row groups, 30 to 300 rows


def _assert_same_fit(ours: Preprocessor, reference: Preprocessor) -> None:
    a, b = ours.state_dict(), reference.state_dict()
    assert a["vocabularies"] == b["vocabularies"] and a["classes"] == b["classes"]
    assert a["train_columns"] == b["train_columns"]
    for name, st in b["numeric"].items():
        assert a["numeric"][name]["indicator"] == st["indicator"]
        assert a["numeric"][name]["mean"] == pytest.approx(st["mean"], rel=1e-12)
        assert a["numeric"][name]["std"] == pytest.approx(st["std"], rel=1e-12)


def test_a_directory_or_glob_streams_like_one_table(tmp_path: Path) -> None:
    df = _frame(2000)
    folder = _directory(df, tmp_path / "train", CUTS)
    (folder / "_SUCCESS").write_text("")  # marker files are not data
    reference = _pre().fit(df)
    for source in (folder, f"{folder}/part-*.parquet"):
        pre = fit_preprocessor_streaming(_pre(), source, chunk_rows=100)
        _assert_same_fit(pre, reference)
        batches = StreamingBatches(source, pre, buffer_rows=500, chunk_rows=100)
        assert len(batches) == 2000 and len(batches.source.groups) == 18
        codes = torch.cat(
            [b["categorical"][:, 2] for b in batches.batches(64, generator=torch.Generator())]
        )
        assert sorted(codes.tolist()) == sorted(pre.transform(df).categorical[:, 2].tolist())
    with pytest.raises(DataError, match="matches no Parquet file"):
        fit_preprocessor_streaming(_pre(), f"{folder}/nothing-*.parquet")
    with pytest.raises(DataError, match="does not exist"):
        fit_preprocessor_streaming(_pre(), tmp_path / "absent")


def test_two_ranks_merged_fit_equals_the_one_process_fit(tmp_path: Path) -> None:
    """Two ranks (threads standing in for processes) each count their row groups; the
    merged counts give both the one-process fit, min_freq applied after the merge."""
    df = _frame(2000, seed=1)
    folder = _directory(df, tmp_path / "train", CUTS)
    barrier, slots = threading.Barrier(2), [FitCounts(), FitCounts()]
    results: list[Preprocessor | BaseException | None] = [None, None]

    def rank(r: int) -> None:
        def gather(mine: FitCounts) -> list[FitCounts]:
            slots[r] = mine
            barrier.wait()
            got = list(slots)
            barrier.wait()
            return got

        try:
            results[r] = fit_preprocessor_streaming(
                _pre(), folder, chunk_rows=64, shard=(r, 2), gather=gather
            )
        except BaseException as err:  # pragma: no cover - shown by the assert below
            results[r] = err

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ours = [r for r in results if isinstance(r, Preprocessor)]
    assert len(ours) == 2, results
    # every rank the same, to the bit (the data fingerprint checks this under torchrun)
    assert ours[0].state_dict() == ours[1].state_dict()
    _assert_same_fit(ours[0], _pre().fit(df))
    # a device value seen 3 times in all but fewer on each rank is in the vocabulary
    per_rank = [
        count_devices(folder, r) for r in (0, 1)
    ]  # how often each value occurs in rank r's row groups
    split = [v for v in ours[0].vocabularies_["device"] if max(c.get(v, 0) for c in per_rank) < 3]
    assert split, "the data should have values that pass min_freq only once merged"


def count_devices(folder: Path, rank: int) -> dict[str, int]:
    from polytask.data.stream import ParquetSet

    source = ParquetSet(folder, ["device"])
    counts: dict[str, int] = {}
    for rb in source.read(range(rank, len(source.groups), 2), 1000):
        for v in rb.column("device").to_pylist():
            counts[v] = counts.get(v, 0) + 1
    return counts


def _sharded(folder: Path, pre: Preprocessor, rank: int, world: int) -> ShardedStream:
    data = StreamingBatches(folder, pre, buffer_rows=300, chunk_rows=64)
    return ShardedStream(data, batch_size=50, seed=7, rank=rank, world_size=world)


@pytest.mark.parametrize("world", [2, 3])
def test_row_groups_dealt_over_an_epoch_partition_the_files(tmp_path: Path, world: int) -> None:
    df = _frame(2000)
    folder = _directory(df, tmp_path / "train", CUTS)
    pre = fit_preprocessor_streaming(_pre(), folder, chunk_rows=100)
    streams = [_sharded(folder, pre, r, world) for r in range(world)]
    groups = len(streams[0].data.source.groups)
    orders = set()
    for epoch in range(4):
        plans = [s.plan(epoch) for s in streams]
        assert all(p == plans[0] for p in plans)  # every rank computes the same dealing
        hands = plans[0].hands
        dealt = sorted(g for hand in hands for g in hand)
        assert dealt == list(range(groups))  # each row group to exactly one rank
        assert all(0 < len(hand) < groups for hand in hands)  # no rank reads everything
        orders.add(tuple(map(tuple, hands)))
    assert len(orders) > 1  # the permutation changes with the epoch


def test_unequal_row_groups_give_every_rank_the_same_steps(tmp_path: Path) -> None:
    df = _frame(2000)
    folder = _directory(df, tmp_path / "train", CUTS)
    pre = fit_preprocessor_streaming(_pre(), folder, chunk_rows=100)
    codes_of = pre.transform(df).categorical[:, 2]
    streams = [_sharded(folder, pre, r, 3) for r in range(3)]  # shares 16, 17, 17 of 50
    sizes = streams[0].data.source.sizes
    for epoch in range(3):
        plan = streams[0].plan(epoch)
        loads = [sum(sizes[g] for g in hand) for hand in plan.hands]
        assert len(set(loads)) > 1  # the ranks' rows differ...
        seen = []
        for r, stream in enumerate(streams):
            assert stream.steps == plan.steps
            batches = [b for _, b in stream.epoch()]
            # ...yet each takes the same number of full batches of its share
            assert (
                len(batches)
                == plan.steps
                == min(n // s for n, s in zip(loads, (16, 17, 17), strict=True))
            )
            assert {len(b["categorical"]) for b in batches} == {stream.local_batch}
            assert stream.rows_per_epoch == plan.steps * 50  # the finished epoch's, reported
            codes = torch.cat([b["categorical"][:, 2] for b in batches])
            # only rows of the rank's own row groups; each at most once
            own = torch.cat([codes_of[_rows(sizes, g)] for g in plan.hands[r]])
            assert set(codes.tolist()) <= set(own.tolist())
            assert len(set(codes.tolist())) == len(codes)
            seen.append(set(codes.tolist()))
        assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])


def _rows(sizes: list[int], group: int) -> slice:
    start = sum(sizes[:group])
    return slice(start, start + sizes[group])


def test_too_few_rows_per_rank_is_a_clear_error(tmp_path: Path) -> None:
    df = _frame(120)
    folder = _directory(df, tmp_path / "train", [(120, 120)])  # one row group
    pre = fit_preprocessor_streaming(_pre(), folder)
    with pytest.raises(DataError, match="fewer than a batch share"):
        _sharded(folder, pre, 0, 2)


def test_evaluate_sharded_in_one_process_equals_evaluate(tmp_path: Path) -> None:
    from polytask import MultiTaskModel

    df = _frame(1500)
    folder = _directory(df, tmp_path / "eval", [(800, 90), (700, 200)])
    model = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model={"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        training={"epochs": 1, "progress": False},
    ).fit(df)
    ours = model.evaluate_sharded(folder, chunk_rows=128)
    theirs = model.evaluate(df)
    assert ours.keys() == theirs.keys()
    for task, values in theirs.items():
        assert ours[task] == pytest.approx(values, rel=1e-9), task


def test_a_resumed_epoch_continues_where_it_stopped(tmp_path: Path) -> None:
    df = _frame(2000)
    folder = _directory(df, tmp_path / "train", CUTS)
    pre = fit_preprocessor_streaming(_pre(), folder, chunk_rows=100)
    stream = _sharded(folder, pre, 1, 2)
    first = [b for _, b in stream.epoch()]
    second = stream.epoch()
    taken = [next(second)[1] for _ in range(5)]
    state = stream.state_dict()
    again = _sharded(folder, pre, 1, 2)
    again.load_state_dict(state, position=5)
    assert again.steps == stream.steps
    rest = [b for _, b in again.epoch()]
    whole = [b for _, b in _sharded_epochs(folder, pre, 2)[1]]
    assert len(taken) + len(rest) == len(whole)
    for ours, theirs in zip([*taken, *rest], whole, strict=True):
        assert torch.equal(ours["categorical"], theirs["categorical"])
    assert not torch.equal(first[0]["categorical"], whole[0]["categorical"])
    again.load_state_dict(state, position=again.plan(1).steps)  # saved at the epoch's end
    assert list(again.epoch()) == [] and again.steps == again.plan(2).steps


def _sharded_epochs(folder: Path, pre: Preprocessor, epochs: int) -> list[list[tuple]]:
    stream = _sharded(folder, pre, 1, 2)
    return [list(stream.epoch()) for _ in range(epochs)]
