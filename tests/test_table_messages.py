"""Bad tables get one clean message, the same for CSV and Parquet and for training and
prediction (issue 17.9)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polytask import DataError, MultiTaskModel
from polytask.cli import main
from polytask.data.preprocess import IdLikeColumnWarning

RUN = """\
features: {categorical: [color], numeric: [age]}
tasks: {click: {type: binary}}
model: {name: shared_bottom, shared_units: [4], tower_units: [2]}
training: {epochs: 1, progress: false}
data: {path: table.EXT, split: {train: 0.5, validation: 0.25, test: 0.25}}
"""


def _duplicate_table(path: Path) -> None:
    names = ["color", "age", "age", "click"]
    rows = [["a", 1.0, 50.0, 0], ["b", 2.0, 60.0, 1]] * 4
    if path.suffix == ".csv":
        path.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
    else:
        arrays = [pa.array([r[i] for r in rows]) for i in range(len(names))]
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_a_duplicate_column_is_one_clean_error_when_training(tmp_path, capsys, ext):
    (tmp_path / "run.yaml").write_text(RUN.replace("EXT", ext))
    _duplicate_table(tmp_path / f"table.{ext}")
    code = main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"error: data.path: column(s) ['age'] appear more than once in "
        f"{str(tmp_path / f'table.{ext}')!r}; expected each column once\n"
    )


@pytest.mark.parametrize("ext", ["csv", "parquet"])
@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_a_duplicate_column_is_one_clean_error_when_predicting(tmp_path, ext, chunk_rows):
    frame = pd.DataFrame({"color": ["a", "b"] * 4, "age": [1.0, 2.0] * 4, "click": [0, 1] * 4})
    model = MultiTaskModel(
        features={"categorical": ["color"], "numeric": ["age"]},
        tasks={"click": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [4], "tower_units": [2]},
        training={"epochs": 1, "progress": False},
    ).fit(frame)
    table = tmp_path / f"table.{ext}"
    _duplicate_table(table)
    message = f"prediction data: column(s) ['age'] appear more than once in {str(table)!r}"
    with pytest.raises(DataError) as err:
        if chunk_rows is None:
            model.predict(table)
        else:
            model.predict_to(table, tmp_path / "out.csv", chunk_rows=chunk_rows)
    assert str(err.value).startswith(message)


def test_a_header_only_table_does_not_name_internal_functions(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(RUN.replace("EXT", "csv"))
    (tmp_path / "table.csv").write_text("color,age,click\n")
    code = main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "split_frame" not in err
    assert err == (
        "error: data.path 'table.csv' has no rows (only a header); data.split needs at least "
        "one row for each of its 3 split(s)\n"
    )


def test_predict_of_a_mixed_type_csv_prints_no_dtype_warning(tmp_path):
    frame = pd.DataFrame({"color": ["a", "b"] * 4, "age": [1.0, 2.0] * 4, "click": [0, 1] * 4})
    model = MultiTaskModel(
        features={"categorical": ["color"], "numeric": ["age"]},
        tasks={"click": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [4], "tower_units": [2]},
        training={"epochs": 1, "progress": False},
    ).fit(frame)
    n = 600_000  # pandas' low-memory reader types a column per internal chunk
    color = np.where(np.arange(n) < n // 2, "1", "a")
    big = pd.DataFrame({"color": color, "age": 1.0})
    big.to_csv(tmp_path / "mixed.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(model.predict(tmp_path / "mixed.csv")) == n


@pytest.mark.parametrize(
    ("values", "kind"),
    [([["a", "b"], ["c"]] * 4, "list"), ([{"k": "a"}, {"k": "b"}] * 4, "struct")],
)
def test_a_parquet_list_or_struct_column_is_refused_as_a_categorical(tmp_path, values, kind):
    pq.write_table(
        pa.table({"tags": values, "age": [1.0] * 8, "click": [0, 1] * 4}), tmp_path / "t.parquet"
    )
    model = MultiTaskModel(
        features={"categorical": ["tags"], "numeric": ["age"]},
        tasks={"click": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [4], "tower_units": [2]},
        training={"epochs": 1, "progress": False},
    )
    with pytest.raises(DataError) as err:
        model.fit(tmp_path / "t.parquet")
    assert str(err.value).startswith(
        f"training set: categorical column 'tags' holds {kind} values (a Parquet {kind} column)"
    )


def test_an_id_like_categorical_warns(tmp_path):
    n = 12_000
    frame = pd.DataFrame(
        {"user": [f"u{i}" for i in range(n)], "age": 1.0, "click": np.arange(n) % 2}
    )
    model = MultiTaskModel(
        features={"categorical": ["user"], "numeric": ["age"]},
        tasks={"click": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [4], "tower_units": [2]},
        training={"epochs": 1, "progress": False, "batch_size": 4096},
    )
    with pytest.warns(IdLikeColumnWarning) as record:
        model.fit(frame)
    assert str(record[0].message).startswith(
        "training set: categorical column 'user' has 12,000 distinct values in 12,000 rows: it "
        "looks like an ID column"
    )
    few = frame.assign(user=[f"u{i % 50}" for i in range(n)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdLikeColumnWarning)
        MultiTaskModel.from_config(model.config).fit(few)
