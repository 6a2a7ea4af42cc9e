"""Tables that do not match the schema fail in `Preprocessor.fit`/`transform` with a
`DataError` naming the column, what was expected and what was found."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import DataError, NotFittedError
from polytask.config import FeaturesConfig
from polytask.data import Preprocessor, read_table
from polytask.tasks import TaskSpec


def preprocessor(**tasks: dict[str, Any]) -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig(categorical=["color"], numeric=["x"]),
        tasks={name: TaskSpec(**t) for name, t in (tasks or {"y": {"type": "binary"}}).items()},
    )


def table(**columns: Any) -> pd.DataFrame:
    base = {"color": ["red", "blue", "red", "green"], "x": [0.5, 1.0, -2.0, 3.0], "y": [0, 1, 1, 0]}
    return pd.DataFrame({**base, **columns})


def one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_column_names_it_and_lists_the_table_columns():
    with pytest.raises(DataError) as err:
        preprocessor().fit(table().drop(columns="x"))
    assert one_line(err) == (
        "training set: missing column(s) ['x'] required by the schema; the table has columns "
        "['color', 'y']"
    )


def test_missing_column_suggests_a_close_name():
    with pytest.raises(DataError, match=r"missing column\(s\) \['color'\].*did you mean 'colour'"):
        preprocessor().fit(table().rename(columns={"color": "colour"}))


def test_missing_label_column():
    with pytest.raises(DataError, match=r"missing column\(s\) \['y'\]"):
        preprocessor().fit(table().drop(columns="y"))


def test_repeated_column():
    frame = pd.concat([table(), table()[["x"]]], axis=1)
    with pytest.raises(DataError) as err:
        preprocessor().fit(frame)
    assert one_line(err) == (
        "training set: column(s) ['x'] appear more than once in the table; expected each "
        "column once"
    )


def test_empty_training_set():
    with pytest.raises(
        DataError, match="training set is empty: expected at least one row, found 0"
    ):
        preprocessor().fit(table().iloc[:0])


def test_non_binary_label_lists_the_values():
    with pytest.raises(DataError) as err:
        preprocessor().fit(table(y=[0, 1, 2, 1]))
    assert one_line(err) == (
        "training set: task 'y': label column 'y' has values {0, 1, 2}; a binary task needs "
        "0/1, booleans or a `positive:` value"
    )


def test_text_in_a_binary_label_suggests_positive():
    with pytest.raises(DataError) as err:
        preprocessor().fit(table(y=["yes", "no", "yes", None]))
    assert "label column 'y' has non-numeric values such as ['yes', 'no']" in one_line(err)
    assert "or a `positive:` value" in str(err.value)


def test_positive_value_that_never_occurs():
    pre = preprocessor(y={"type": "binary", "positive": " 50000+."})
    with pytest.raises(DataError) as err:
        pre.fit(table(y=[" - 50000.", "50000+.", " - 50000.", None]))
    assert one_line(err) == (
        "task 'y': positive value ' 50000+.' never occurs in label column 'y'; values found: "
        "[' - 50000.', '50000+.']"
    )


def test_positive_value_is_matched_in_canonical_form():
    pre = preprocessor(y={"type": "binary", "positive": 1}).fit(table(y=[1.0, 2.0, np.nan, 1.0]))
    labels = pre.transform(table(y=[1.0, 2.0, np.nan, 1.0])).labels["y"]
    assert labels.tolist()[:2] == [1.0, 0.0] and np.isnan(labels[2].item())


def test_label_without_any_value():
    with pytest.raises(DataError) as err:
        preprocessor().fit(table(y=[None, None, np.nan, None]))
    assert one_line(err) == (
        "training set: task 'y': label column 'y' has no values (all 4 rows are missing); a "
        "task needs labelled rows"
    )


def test_numeric_column_with_text():
    with pytest.raises(DataError) as err:
        preprocessor().fit(table(x=["1.5", "abc", "", "2"]))
    assert one_line(err) == (
        "training set: numeric column 'x' has non-numeric values such as ['abc']; expected "
        "numbers (empty or NaN for missing)"
    )


def test_numeric_column_text_that_csv_reads_as_missing_is_missing():
    pre = preprocessor().fit(table(x=["1.5", "nan", "", "NULL"]))
    assert pre.numeric_stats_["x"].indicator


def test_numeric_column_with_dates():
    dates = pd.to_datetime(["2020-01-01", None, "2021-01-01", "2022-01-01"])
    with pytest.raises(DataError, match=r"numeric column 'x' has dtype datetime64.*real numbers"):
        preprocessor().fit(table(x=dates))


def test_regression_label_with_text():
    with pytest.raises(DataError) as err:
        preprocessor(y={"type": "regression"}).fit(table(y=[1.0, "n/a?", 2.0, 3.0]))
    assert "task 'y': label column 'y' has non-numeric values such as ['n/a?']" in one_line(err)
    assert "a regression task needs numbers" in str(err.value)


@pytest.mark.parametrize("bad", [np.inf, 1e300, -(10**400)])
def test_regression_label_float32_cannot_hold(bad):
    frame = table(y=pd.Series([1.0, bad, 2.0, 3.0], dtype=object))
    with pytest.raises(DataError, match=r"label column 'y' has values that are infinite or beyond"):
        preprocessor(y={"type": "regression"}).fit(frame)


def test_multiclass_with_one_class():
    with pytest.raises(DataError) as err:
        preprocessor(y={"type": "multiclass"}).fit(table(y=["a", "a", None, "a"]))
    assert one_line(err) == (
        "task 'y': label column 'y' has 1 class(es) ['a']; a multiclass task needs at least 2"
    )


def test_unseen_class_in_a_validation_set():
    pre = preprocessor(y={"type": "multiclass"}).fit(table(y=["a", "b", "a", "b"]))
    with pytest.raises(DataError) as err:
        pre.transform(table(y=["a", "c", "d", None]), what="validation set")
    assert one_line(err) == (
        "validation set: task 'y': label column 'y' has class(es) ['c', 'd'] not seen in "
        "training; known classes are ['a', 'b']"
    )


def test_transform_before_fit():
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        preprocessor().transform(table())


def test_transform_missing_feature_names_the_split():
    pre = preprocessor().fit(table())
    with pytest.raises(DataError, match=r"^prediction data: missing column\(s\) \['color'\]"):
        pre.transform(table().drop(columns="color"), labels=False, what="prediction data")


def test_transform_requires_labels_only_when_asked():
    pre = preprocessor().fit(table())
    unlabelled = table().drop(columns="y")
    assert torch.isnan(pre.transform(unlabelled).labels["y"]).all()
    with pytest.raises(DataError, match=r"missing column\(s\) \['y'\]"):
        pre.transform(unlabelled, labels=True)


# ------------------------------------------------------------------------------ read_table


def test_read_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"training set: file '.*nope\.csv' does not exist"):
        read_table(tmp_path / "nope.csv", what="training set")


def test_read_unknown_format(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format of .*expected a \.csv"):
        read_table(path)


def test_read_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"could not read '.*empty\.csv'"):
        read_table(path)


def test_read_corrupt_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"could not read '.*t\.parquet'"):
        read_table(path)


def test_read_something_else():
    with pytest.raises(DataError, match=r"expected a pandas DataFrame or a path.*found list"):
        read_table([[1, 2]])
