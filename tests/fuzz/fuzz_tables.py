"""Hypothesis strategies for the fuzz suite: tables a user might hand polytask.

Two kinds: ``valid_tables`` hold every kind of value polytask promises to accept (mixed types
in a categorical column, NaN, +-inf, huge ints, numeric text, unicode, a single row...) and
must work; ``wild_tables`` add what it must refuse (text in numeric columns, non-binary
labels, ...), which must fail with a `PolytaskError` and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from polytask.data.preprocess import category_strings

CATEGORICAL = ["c1", "c2"]
NUMERIC = ["n1", "n2"]
FEATURES = {"categorical": CATEGORICAL, "numeric": NUMERIC}
TASK_TYPES = {"b": "binary", "r": "regression", "m": "multiclass"}

MAX_ROWS = 24

# -------------------------------------------------------------------------------- values

missing = st.sampled_from([None, math.nan, np.nan, pd.NA])
huge_ints = st.sampled_from([2**63, -(2**63) - 1, 2**64 + 1, 10**30, -(10**400), 10**400])
ints = st.integers(-(2**70), 2**70) | huge_ints | st.sampled_from([0, 1, -1])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, 3.0, 0.1, 1e308, -1e308, 5e-324, math.inf, -math.inf]
)
special_text = st.sampled_from(
    ["", " ", "😀", "👩‍👩‍👧", "\u202eRTL", "שלום", "مرحبا", "a\x00b", "\x00", "line\nbreak",
     "tab\t", 'quo"te', "a,b", "nan", "NULL", "None", "True", "1", "1.0", "-0", "é", "e\u0301"]
)  # fmt: skip
text = st.text(max_size=6) | special_text
bools = st.booleans() | st.sampled_from([np.bool_(True), np.bool_(False)])
numpy_scalars = st.sampled_from([np.int8(3), np.uint64(2**64 - 1), np.float32(0.1), np.float16(2)])

category_kinds = [missing, bools, ints, floats, text, numpy_scalars]
category_value = st.one_of(*category_kinds)
numeric_text = st.one_of(
    st.floats(allow_nan=False).map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["", " 1 ", "1e400", "-inf", "inf", "nan", "NaN", "NULL", "n/a"]),
)
numeric_kinds = [missing, bools, ints, floats, numeric_text, numpy_scalars]
# never a number, never what read_csv reads as missing
garbage_text = st.sampled_from(["abc", "1,5", "12abc", "😀", "\x00", "--1", "1e", "0x1F"]) | (
    st.text(max_size=4).map(lambda s: "x" + s)
)


binary_label = st.sampled_from([0, 1, True, False, 0.0, 1.0, "0", "1", np.int64(1), np.True_])
regression_label = st.floats(-1e6, 1e6) | st.integers(-(10**6), 10**6) | bools
multiclass_label = st.one_of(st.sampled_from(["x", "y", "z", "😀"]), st.integers(0, 3), bools)


# -------------------------------------------------------------------------------- columns


@st.composite
def column(draw: st.DrawFn, kinds: list[st.SearchStrategy[Any]], n: int) -> pd.Series:
    """``n`` values of one kind or of all ``kinds`` mixed (with or without missing ones); as
    pandas infers the dtype, or as object."""
    if draw(st.booleans()):
        values = draw(st.sampled_from(kinds))
        values = st.one_of(values, missing) if draw(st.booleans()) else values
    else:
        values = st.one_of(*kinds)
    items = draw(st.lists(values, min_size=n, max_size=n))
    if draw(st.booleans()):
        return pd.Series(items, dtype=object)
    try:
        return pd.Series(items)
    except (OverflowError, TypeError, ValueError):  # pandas cannot infer: a user would see this
        return pd.Series(items, dtype=object)


@st.composite
def label_column(draw: st.DrawFn, values: st.SearchStrategy[Any], n: int) -> pd.Series:
    """A label column with at least one labelled row (the others labelled or missing)."""
    items = draw(st.lists(st.one_of(values, missing), min_size=n, max_size=n))
    items[draw(st.integers(0, n - 1))] = draw(values)
    return pd.Series(items, dtype=object) if draw(st.booleans()) else _inferred(items)


def _inferred(items: list[Any]) -> pd.Series:
    try:
        return pd.Series(items)
    except (OverflowError, TypeError, ValueError):
        return pd.Series(items, dtype=object)


@st.composite
def index(draw: st.DrawFn, n: int) -> pd.Index:
    kind = draw(st.sampled_from(["range", "ints", "strings"]))
    if kind == "range":
        return pd.RangeIndex(n)
    if kind == "ints":
        return pd.Index(draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n)))
    return pd.Index(draw(st.lists(st.text(max_size=3), min_size=n, max_size=n)), dtype=object)


# -------------------------------------------------------------------------------- tables


@dataclass
class Case:
    """A table and the tasks it can train (a multiclass task needs two classes)."""

    frame: pd.DataFrame
    tasks: dict[str, dict[str, Any]]


def classes(series: pd.Series) -> set[str]:
    values, miss = category_strings(series)
    return set(values[~miss].tolist())


@st.composite
def valid_tables(draw: st.DrawFn, min_rows: int = 1, labels: bool = True) -> Case:
    n = draw(st.integers(min_rows, MAX_ROWS))
    data: dict[str, pd.Series] = {}
    for name in CATEGORICAL:
        data[name] = draw(column(category_kinds, n))
    for name in NUMERIC:
        data[name] = draw(column(numeric_kinds, n))
    tasks: dict[str, dict[str, Any]] = {}
    if labels:
        data["b"] = draw(label_column(binary_label, n))
        data["r"] = draw(label_column(regression_label, n))
        data["m"] = draw(label_column(multiclass_label, n))
        tasks = {"b": {"type": "binary"}, "r": {"type": "regression"}}
        if len(classes(data["m"])) >= 2:
            tasks["m"] = {"type": "multiclass"}
    frame = pd.DataFrame(data)  # every column keeps the dtype it was drawn with
    frame.index = draw(index(n))
    return Case(frame, tasks)


@st.composite
def prediction_tables(draw: st.DrawFn) -> pd.DataFrame:
    """New rows for a fitted model: unseen values, columns reordered, extra columns, labels
    sometimes present, sometimes not."""
    frame = draw(valid_tables(labels=draw(st.booleans()))).frame
    if draw(st.booleans()):
        frame = frame.assign(extra=draw(column(category_kinds, len(frame))).to_numpy())
        frame["😀 col"] = 1.5
    order = draw(st.permutations(list(frame.columns)))
    return frame[order]


@st.composite
def wild_tables(draw: st.DrawFn) -> Case:
    """A valid table with one to three things broken: each must be refused with a
    PolytaskError. Cells are broken first, then a column dropped or every row removed."""
    case = draw(valid_tables())
    frame = case.frame.copy()
    n = len(frame)
    breaks = draw(
        st.lists(
            st.sampled_from(["numeric", "binary", "regression", "labels", "drop", "empty"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    cells = {
        "numeric": (st.sampled_from(NUMERIC), garbage_text),
        "binary": (st.just("b"), st.sampled_from([2, -1, 0.5, "yes", math.inf])),
        "regression": (st.just("r"), st.sampled_from([math.inf, 1e300, 10**400, "abc"])),
    }
    for what in breaks:
        if what in cells:
            col = draw(cells[what][0])
            values = frame[col].to_numpy(dtype=object, copy=True)
            values[draw(st.integers(0, n - 1))] = draw(cells[what][1])
            frame[col] = pd.Series(values, index=frame.index, dtype=object)
        elif what == "labels":
            frame[draw(st.sampled_from(["b", "r"]))] = None
    if "drop" in breaks:
        frame = frame.drop(columns=draw(st.sampled_from([*CATEGORICAL, *NUMERIC, "b"])))
    if "empty" in breaks:
        frame = frame.iloc[:0]
    return Case(frame, case.tasks)
