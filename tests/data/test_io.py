"""Reading tables: one format detection for whole-table and chunked reads; forced formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polytask.config import DataConfig
from polytask.data import read_table
from polytask.data.chunks import read_chunks
from polytask.data.io import is_parquet
from polytask.errors import DataError
from polytask.run import load_splits


def _frame(n: int = 250) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(n), "b": [f"s{i % 7}" for i in range(n)]})


def test_a_parquet_directory_reads_the_same_whole_and_in_chunks(tmp_path: Path) -> None:
    folder = tmp_path / "rows"
    folder.mkdir()
    df = _frame()
    for k, start in enumerate(range(0, 250, 100)):
        df.iloc[start : start + 100].to_parquet(folder / f"part-{k}.parquet", index=False)
    assert is_parquet(folder)
    whole = read_table(folder)
    chunks = list(read_chunks(folder, columns=["a", "b"], chunk_rows=64))
    assert all(len(c) <= 64 for c in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    assert whole["a"].tolist() == list(range(250))


def test_chunked_and_whole_reads_refuse_an_unknown_format_alike(tmp_path: Path) -> None:
    path = tmp_path / "rows.xlsx"
    path.write_text("x")
    message = r"rows: cannot tell the format of '.*rows\.xlsx'"
    with pytest.raises(DataError, match=message):
        read_table(path, what="rows")
    with pytest.raises(DataError, match=message):
        list(read_chunks(path, columns=["a"], chunk_rows=10, what="rows"))


def test_a_forced_format_ignores_the_name(tmp_path: Path) -> None:
    df = _frame(5)
    df.to_parquet(tmp_path / "rows.data", index=False)
    df.to_csv(tmp_path / "rows.parquet", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "rows.data", format="parquet"), df)
    pd.testing.assert_frame_equal(read_table(tmp_path / "rows.parquet", format="csv"), df)
    with pytest.raises(DataError, match=r"format must be one of \['csv', 'parquet'\]"):
        read_table(tmp_path / "rows.data", format="xlsx")


@pytest.mark.parametrize(
    ("loader", "name", "content"),
    [("parquet", "train.csv", "a,b\n1,2\n"), ("csv", "train.parquet", "a,b\n1,2\n1,2,3,4\n")],
)
def test_a_forced_format_parse_error_names_the_file(
    tmp_path: Path, loader: str, name: str, content: str
) -> None:
    (tmp_path / name).write_text(content)
    data = DataConfig.model_validate({"train": name, "loader": loader})
    with pytest.raises(DataError, match=rf"data\.train: could not read '.*{name}'"):
        load_splits(data, tmp_path)
