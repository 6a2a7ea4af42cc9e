"""Streaming predict: a file in, a file out, chunk by chunk, same answers as `predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polytask import DataError, MultiTaskModel
from polytask.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=toy_features,
        tasks=toy_tasks,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        training={"epochs": 1, "batch_size": 256, "progress": False},
    ).fit(toy_frame)


def _assert_same_predictions(expected: pd.DataFrame, found: pd.DataFrame) -> None:
    assert list(found.columns) == list(expected.columns)
    assert len(found) == len(expected)
    for column in expected.columns:
        if not pd.api.types.is_float_dtype(expected[column].dtype):
            assert found[column].tolist() == expected[column].tolist(), column
        else:
            np.testing.assert_allclose(found[column], expected[column], rtol=1e-5, atol=1e-7)


def test_parquet_in_chunks_matches_predict_in_input_order(
    model: MultiTaskModel, toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(toy_frame), source, row_group_size=700)
    assert model.predict_to(source, tmp_path / "out.parquet", chunk_rows=300) == 2000
    found = pd.read_parquet(tmp_path / "out.parquet")
    _assert_same_predictions(model.predict(toy_frame), found)
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 7  # one per chunk


def test_csv_in_chunks_to_csv(
    model: MultiTaskModel, toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    toy_frame.to_csv(tmp_path / "rows.csv", index=False)
    assert model.predict_to(tmp_path / "rows.csv", tmp_path / "out.csv", chunk_rows=512) == 2000
    _assert_same_predictions(model.predict(toy_frame), pd.read_csv(tmp_path / "out.csv"))


def test_an_empty_file_gives_an_empty_table_with_the_columns(
    model: MultiTaskModel, toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "empty.parquet"
    pq.write_table(pa.Table.from_pandas(toy_frame.head(0)), source)
    assert model.predict_to(source, tmp_path / "out.parquet") == 0
    found = pd.read_parquet(tmp_path / "out.parquet")
    assert len(found) == 0
    assert list(found.columns) == list(model.predict(toy_frame.head(3)).columns)


def test_a_missing_feature_column_is_named(
    model: MultiTaskModel, toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "rows.parquet"
    toy_frame.drop(columns=["z"]).to_parquet(source)
    with pytest.raises(DataError, match=r"missing column\(s\) \['z'\]"):
        model.predict_to(source, tmp_path / "out.parquet")


def test_a_failure_midway_leaves_no_partial_output(
    model: MultiTaskModel, toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame = toy_frame.astype({"x": object})
    frame.loc[1500, "x"] = "not a number"  # in the third chunk of 600
    frame.to_csv(tmp_path / "rows.csv", index=False)
    target = tmp_path / "out.parquet"
    target.write_bytes(b"previous output")
    with pytest.raises(DataError, match="non-numeric"):
        model.predict_to(tmp_path / "rows.csv", target, chunk_rows=600)
    assert target.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_bad_output_name_fails_before_reading(model: MultiTaskModel, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected a \.csv or \.parquet file name"):
        model.predict_to(tmp_path / "missing.parquet", tmp_path / "out.json")


def test_cli_predict_streams_parquet_and_csv_with_chunk_rows(
    model: MultiTaskModel,
    toy_frame: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model.save(tmp_path / "model")
    toy_frame.to_parquet(tmp_path / "rows.parquet")
    toy_frame.to_csv(tmp_path / "rows.csv", index=False)
    expected = model.predict(toy_frame)
    assert (
        main(
            [
                "predict",
                str(tmp_path / "model"),
                str(tmp_path / "rows.parquet"),
                "-o",
                str(tmp_path / "a.parquet"),
            ]
        )
        == 0
    )
    assert "wrote 2000 rows" in capsys.readouterr().out
    _assert_same_predictions(expected, pd.read_parquet(tmp_path / "a.parquet"))
    assert (
        main(
            [
                "predict",
                str(tmp_path / "model"),
                str(tmp_path / "rows.csv"),
                "-o",
                str(tmp_path / "b.csv"),
                "--chunk-rows",
                "333",
            ]
        )
        == 0
    )
    assert "333 rows at a time" in capsys.readouterr().out
    _assert_same_predictions(expected, pd.read_csv(tmp_path / "b.csv"))


@pytest.mark.parametrize("chunk_rows", ["0", "-1"])
def test_cli_predict_refuses_a_chunk_size_below_one(
    model: MultiTaskModel,
    toy_frame: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    chunk_rows: str,
) -> None:
    model.save(tmp_path / "model")
    toy_frame.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "p.csv"
    argv = ["predict", str(tmp_path / "model"), str(tmp_path / "rows.csv"), "-o", str(out)]
    assert main([*argv, "--chunk-rows", chunk_rows]) == 2
    assert capsys.readouterr().err == (
        f"error: prediction data: chunk_rows must be at least 1, found {chunk_rows}\n"
    )
    assert not out.exists()
