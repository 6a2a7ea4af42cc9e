"""Out-of-core training: streaming preprocessor fit and the streamed batch source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from polytask import MultiTaskModel
from polytask.config import FeaturesConfig
from polytask.data import Preprocessor
from polytask.data.stream import StreamingBatches, fit_preprocessor_streaming
from polytask.tasks import TaskSpec

FEATURES = {
    "categorical": ["city", {"name": "device", "min_freq": 3}, "code"],
    "numeric": ["price", {"name": "income", "log1p": True}],
}
TASKS = {
    "click": {"type": "binary", "label": "clicked"},
    "buy": {"type": "binary", "label": "bought", "positive": "yes"},
    "kind": {"type": "multiclass", "label": "kind"},
}


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    price = rng.normal(10, 3, n)
    price[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "city": rng.choice(["a", "b", "c", None], n),
            "device": rng.choice([f"d{i}" for i in range(40)], n),
            "code": rng.integers(0, 30, n),
            "price": price,
            "income": rng.exponential(1e4, n),
            "clicked": rng.integers(0, 2, n).astype(float),
            "bought": rng.choice(["yes", "no", None], n),
            "kind": rng.choice(["x", "y", "z"], n),
        }
    )


def _write(df: pd.DataFrame, path: Path, row_group: int) -> Path:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group)
    return path


def _pre() -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig.model_validate(FEATURES),
        tasks={k: TaskSpec(**v) for k, v in TASKS.items()},
    )


def test_streaming_fit_matches_in_memory_fit(tmp_path: Path) -> None:
    df = _frame(5000)
    path = _write(df, tmp_path / "t.parquet", row_group=700)
    full = _pre().fit(df).state_dict()
    streamed = fit_preprocessor_streaming(_pre(), path, chunk_rows=333).state_dict()
    assert streamed["vocabularies"] == full["vocabularies"]
    assert streamed["classes"] == full["classes"]
    assert streamed["train_columns"] == full["train_columns"]
    assert streamed["numeric"].keys() == full["numeric"].keys()
    for name, st in full["numeric"].items():
        got = streamed["numeric"][name]
        assert got["indicator"] == st["indicator"] and got["log1p"] == st["log1p"]
        assert got["mean"] == pytest.approx(st["mean"], rel=1e-12, abs=1e-12)
        assert got["std"] == pytest.approx(st["std"], rel=1e-12)


def test_streamed_batches_cover_every_row_once(tmp_path: Path) -> None:
    df = _frame(3000)
    df["code"] = np.arange(3000)  # a unique id, to check coverage
    path = _write(df, tmp_path / "t.parquet", row_group=500)
    pre = fit_preprocessor_streaming(_pre(), path, chunk_rows=256)
    source = StreamingBatches(path, pre, buffer_rows=1000, chunk_rows=256)
    assert len(source) == 3000 and source.num_batches(128) == 24
    batches = list(source.batches(128, generator=torch.Generator().manual_seed(0)))
    assert [len(b["categorical"]) for b in batches[:-1]] == [128] * (len(batches) - 1)
    codes = torch.cat([b["categorical"][:, 2] for b in batches])
    assert sorted(codes.tolist()) == sorted(pre.transform(df).categorical[:, 2].tolist())
    # shuffled: not in file order, and a different seed gives a different order
    first = codes[:200].tolist()
    again = torch.cat(
        [b["categorical"][:, 2] for b in source.batches(128, generator=torch.Generator())]
    )
    assert first != sorted(first) and again[:200].tolist() != first
    in_order = torch.cat([b["categorical"][:, 2] for b in source.batches(128)])
    assert torch.equal(in_order, pre.transform(df).categorical[:, 2])


def test_fit_streaming_from_parquet(tmp_path: Path) -> None:
    df = _frame(4000)
    path = _write(df, tmp_path / "t.parquet", row_group=1000)
    model = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        training={
            "epochs": 2,
            "batch_size": 256,
            "progress": False,
            "stream": {"buffer_rows": 1500, "chunk_rows": 500},
        },
    ).fit(str(path), validation=df.iloc[:500])
    assert model.n_train_ == 4000 and len(model.history_) == 2
    assert model.preprocessor_.state_dict()["vocabularies"] == _pre().fit(df).vocabularies_
    assert len(model.predict(df.iloc[:10])) == 10


def test_streamed_source_errors_name_the_column(tmp_path: Path) -> None:
    from polytask.errors import DataError

    path = _write(_frame(100).drop(columns=["price"]), tmp_path / "t.parquet", row_group=50)
    with pytest.raises(DataError, match="price"):
        fit_preprocessor_streaming(_pre(), path)


def test_streaming_arrow_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """The Parquet reader must not keep the row groups it has read (pre-buffering did: arrow
    memory grew with the file, ~40 B per row, so peak RSS grew with rows)."""
    df = _frame(80_000, seed=3)
    path = _write(df, tmp_path / "t.parquet", row_group=1000)
    file_bytes = path.stat().st_size
    pre = _pre()
    before = pa.total_allocated_bytes()
    fit_preprocessor_streaming(pre, path, chunk_rows=1000)
    assert pa.total_allocated_bytes() - before < file_bytes / 4
    source = StreamingBatches(path, pre, buffer_rows=2000, chunk_rows=1000)
    peak = 0
    for i, _ in enumerate(source.batches(500, generator=torch.Generator().manual_seed(0))):
        if i % 10 == 0:
            peak = max(peak, pa.total_allocated_bytes() - before)
    # about one decoded chunk is held (~0.2 MB here); pre-buffering held ~the whole file
    assert i + 1 == 160 and peak < file_bytes / 4, (peak, file_bytes)


def _rare_positive_file(tmp_path: Path, positives: int) -> tuple[pd.DataFrame, Path]:
    """200 rows whose ``positives`` "yes" labels are all in the first rows, so every later
    50-row chunk has none."""
    df = _frame(200)
    df["bought"] = ["yes"] * positives + ["no"] * (200 - positives)
    return df, _write(df, tmp_path / "t.parquet", row_group=50)


def test_streamed_training_with_a_positive_value_absent_from_some_chunks(tmp_path: Path) -> None:
    """A chunk without a positive row is fine; only the whole training set must have one."""
    df, path = _rare_positive_file(tmp_path, positives=10)
    pre = fit_preprocessor_streaming(_pre(), path, chunk_rows=50)
    source = StreamingBatches(path, pre, buffer_rows=100, chunk_rows=50)
    in_order = torch.cat([b["label:buy"] for b in source.batches(32)])
    assert torch.equal(in_order, _pre().fit(df).transform(df).labels["buy"])
    shuffled = torch.cat([b["label:buy"] for b in source.batches(32, generator=torch.Generator())])
    assert len(shuffled) == 200 and int(shuffled.sum()) == 10


def test_positive_value_that_never_occurs_fails_the_fit(tmp_path: Path) -> None:
    from polytask.errors import DataError

    df, path = _rare_positive_file(tmp_path, positives=0)
    message = r"task 'buy': positive value 'yes' never occurs in label column 'bought'"
    with pytest.raises(DataError, match=message + r"; values found: \['no'\]"):
        _pre().fit(df)
    with pytest.raises(DataError, match=message):
        fit_preprocessor_streaming(_pre(), path, chunk_rows=50)


def test_streamed_batches_move_each_row_to_the_device_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The half of the shuffle buffer that is kept stays where it is; only emitted rows are
    moved (``EncodedData.to``), so the rows moved add up to the file's rows."""
    from polytask.data.encoded import EncodedData

    path = _write(_frame(3000), tmp_path / "t.parquet", row_group=500)
    pre = fit_preprocessor_streaming(_pre(), path, chunk_rows=256)
    source = StreamingBatches(path, pre, buffer_rows=1000, chunk_rows=256)
    moved: list[int] = []
    to = EncodedData.to

    def recording_to(self: EncodedData, device: torch.device | str) -> EncodedData:
        moved.append(len(self))
        return to(self, device)

    monkeypatch.setattr(EncodedData, "to", recording_to)
    for generator in (None, torch.Generator().manual_seed(0)):
        moved.clear()
        rows = sum(len(b["numeric"]) for b in source.batches(128, generator=generator))
        assert rows == 3000 and sum(moved) == 3000


def test_streaming_moments_do_not_overflow_near_the_float64_limit(tmp_path: Path) -> None:
    """Values near 1e308 overflow the sums; the streamed statistics fall back like the
    in-memory `_mean_std` and agree with it."""
    df = _frame(1000)
    df["price"] = np.random.default_rng(1).uniform(-1, 1, 1000) * 1.7e308
    df.loc[::5, "price"] = 1.7e308
    path = _write(df, tmp_path / "t.parquet", row_group=300)
    full = _pre().fit(df).numeric_stats_["price"]
    streamed = fit_preprocessor_streaming(_pre(), path, chunk_rows=128).numeric_stats_["price"]
    assert np.isfinite([full.mean, full.std]).all() and full.std > 1e307
    assert streamed.mean == pytest.approx(full.mean, rel=1e-12)
    assert streamed.std == pytest.approx(full.std, rel=1e-12)


def test_streaming_fit_checks_multiclass_labels_like_fit(tmp_path: Path) -> None:
    from polytask.errors import DataError

    df = _frame(300).assign(kind="x")
    path = _write(df, tmp_path / "t.parquet", row_group=100)
    message = r"task 'kind': label column 'kind' has 1 class\(es\) \['x'\]; a multiclass task"
    with pytest.raises(DataError, match=message):
        _pre().fit(df)
    with pytest.raises(DataError, match=message):
        fit_preprocessor_streaming(_pre(), path, chunk_rows=64)
