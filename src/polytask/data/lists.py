"""Reading list-valued columns: a cell is a list of values, read without per-row Python.

A column of Python lists or numpy arrays (a Parquet list column read by pandas), a pyarrow
list column (``pd.ArrowDtype``), or text split on a separator becomes one pyarrow list array;
its values are flattened into canonical strings (`polytask._columns.category_strings`, so a
value reads the same in a list as in a single-valued column) with the length of each row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from polytask._columns import category_strings
from polytask.errors import DataError


@dataclass
class ListColumn:
    """The present values of a list column, flattened in row order, and each row's count."""

    values: np.ndarray
    """Canonical strings (object), row 0's values first; missing elements left out."""
    lengths: np.ndarray
    """int64 ``[N]``: how many of ``values`` each row holds (0 for an empty or missing cell)."""


def _arrow(series: pd.Series, column: str, sep: str | None, what: str) -> Any:
    """The column as one pyarrow list array (nulls for missing cells); None when every cell
    is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    where = f"{what}: list column {column!r}"
    if isinstance(series.dtype, pd.ArrowDtype):
        arr = pa.array(series.array)  # the Arrow data as is, no conversion
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
    else:
        values = series.to_numpy(dtype=object)
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            bad = _first_bad(values)
            if bad is not None:
                raise _not_lists(where, bad) from None
            raise DataError(
                f"{where} mixes value types within its lists or lists with text; expected "
                "lists whose values are all numbers or all text"
            ) from None
    kind = arr.type
    if arr.null_count == len(arr):
        return None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if sep is None:
            example = next(v for v in arr.to_pylist() if v is not None)
            raise DataError(
                f"{where} holds text such as {example!r} and no sep is set; set sep (e.g. "
                "sep: '|') to split it, or give lists"
            )
        return pc.split_pattern(arr, pattern=sep)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        if pa.types.is_nested(kind.value_type):
            raise DataError(
                f"{where} holds lists of {kind.value_type}; expected lists of single values"
            )
        return arr
    raise _not_lists(where, next(v for v in arr.to_pylist() if v is not None))


def _not_lists(where: str, example: object) -> DataError:
    return DataError(
        f"{where} holds {type(example).__name__} values such as {example!r}; expected a list "
        "per row (or text split on sep), empty or missing for none"
    )


def _first_bad(values: np.ndarray) -> object | None:
    """The first value that is neither a list, text nor missing (for an error message)."""
    for v in values:
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        if not missing and not isinstance(v, list | tuple | np.ndarray | str):
            return v
    return None


def list_values(series: pd.Series, column: str, sep: str | None, what: str) -> ListColumn:
    """A list-valued column's values and row lengths (missing values and empty strings
    dropped, so a missing cell and an empty list both have length 0)."""
    import pyarrow.compute as pc

    n = len(series)
    arr = _arrow(series, column, sep, what)
    if arr is None:
        return ListColumn(values=np.empty(0, dtype=object), lengths=np.zeros(n, dtype=np.int64))
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    strings, missing = category_strings(arr.flatten().to_pandas())
    drop = missing | (strings == "")
    if drop.any():
        rows = np.repeat(np.arange(n), lengths)
        lengths = np.bincount(rows[~drop], minlength=n).astype(np.int64)
        strings = strings[~drop]
    return ListColumn(values=strings, lengths=lengths)


def pad_lists(codes: np.ndarray, lengths: np.ndarray, width: int, truncate: str) -> np.ndarray:
    """Flat codes of rows with ``lengths`` -> int64 ``[N, width]``, each row left-aligned and
    padded with 0; a longer row keeps its ``first`` or ``last`` ``width`` values."""
    n = len(lengths)
    out = np.zeros((n, width), dtype=np.int64)
    if codes.size == 0:
        return out
    rows = np.repeat(np.arange(n), lengths)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(codes.size) - starts[rows]
    if truncate == "last":
        pos -= np.maximum(lengths - width, 0)[rows]
    keep = (pos >= 0) & (pos < width)
    out[rows[keep], pos[keep]] = codes[keep]
    return out


_INTEGER = re.compile(r"^[+-]?\d+$")


def value_kind(values: np.ndarray, sample: int = 10_000) -> str:
    """``integer``, ``number`` or ``text``: what a column's canonical strings look like (on
    its first ``sample`` values), so that a table shared by two columns is refused when one
    holds ids like ``123`` and the other names like ``"m123"``."""
    head = pd.Series(values[:sample], dtype=object)
    if head.empty:
        return "empty"
    if head.str.fullmatch(_INTEGER).all():
        return "integer"
    if pd.to_numeric(head, errors="coerce").notna().all():
        return "number"
    return "text"


__all__ = ["ListColumn", "list_values", "pad_lists", "value_kind"]
