"""Reading table columns as values: canonical category strings, floats, numeric labels.

Shared by the task types (label encoding, `polytask.tasks`) and the preprocessor (features,
`polytask.data`), so a value reads the same way wherever it is used.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd

from polytask.errors import DataError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def category_strings(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Canonical string form of a categorical column, and its missing mask.

    The form of a value does not depend on the column's dtype, so a table read from CSV
    encodes like the DataFrame the model was fitted on: integral floats print as integers
    (``3``, ``3.0`` and ``np.int8(3)`` are all ``"3"``, as in an int column read with a NaN),
    booleans as ``True``/``False``, other floats by their shortest repr, anything else by
    ``str``.
    """
    missing = series.isna().to_numpy()
    dtype = series.dtype
    if pd.api.types.is_float_dtype(dtype):
        values = float_strings(series.to_numpy(dtype=np.float64, na_value=np.nan))
    elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        values = series.astype(str).to_numpy(dtype=object)
    else:
        values = _object_strings(series.to_numpy(dtype=object))
    values = values.copy()
    values[missing] = None
    return values, missing


def float_strings(arr: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2**53)
    as_int = np.round(np.where(integral, arr, 0)).astype(np.int64).astype(str)
    return np.where(integral, as_int, arr.astype(str)).astype(object)


def _object_strings(values: np.ndarray) -> np.ndarray:
    """Element-wise canonical strings of an object (or categorical) column; a column of
    strings only is returned as is."""
    if pd.api.types.infer_dtype(values, skipna=True) in {"string", "empty"}:
        return values
    out = np.empty(len(values), dtype=object)
    floats: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = v
        elif isinstance(v, bool | np.bool_):
            out[i] = str(bool(v))
        elif isinstance(v, numbers.Integral):
            out[i] = str(int(v))  # Python ints beyond int64 included
        elif isinstance(v, float | np.floating):
            floats.append(i)
        else:
            out[i] = str(v)
    if floats:
        out[floats] = float_strings(np.array([float(values[i]) for i in floats]))
    return out


# Text that pandas.read_csv reads as missing, so an object column holding it (a CSV read with
# dtype=str, a hand-built frame) means the same as the file read the usual way.
_BOOL_TEXT = {"true": 1.0, "false": 0.0}
_NA_TEXT = frozenset(
    {"", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a", "#na", "-1.#ind", "1.#ind"}
)


def not_real(dtype: Any) -> bool:
    return bool(
        pd.api.types.is_complex_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
    )


def as_float(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64 (NaN where missing or not a number; +-inf kept) and the mask of
    values that are not numbers. Text that read_csv reads as missing is missing, not bad;
    ``True``/``False`` as text count as 1/0, like the booleans they were written from."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return arr.copy(), np.zeros(len(series), dtype=bool)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    except (OverflowError, TypeError, ValueError):
        # ints beyond float64, undecodable bytes: one value at a time
        arr = np.array([_to_float(v) for v in series.to_numpy(dtype=object)], np.float64)
    arr = arr.copy()
    bad = np.isnan(arr) & series.notna().to_numpy()
    if bad.any():
        # str(), not astype(str): bytes that are not UTF-8 must not fail the check itself
        text = [str(v).strip().lower() for v in series.to_numpy(dtype=object)[bad]]
        # True/False written to CSV from a column that also holds numbers come back as text
        arr[bad] = [_BOOL_TEXT.get(t, np.nan) for t in text]
        bad[bad] = [t not in _NA_TEXT and t not in _BOOL_TEXT for t in text]
    return arr, bad


def examples(series: pd.Series, mask: np.ndarray, k: int) -> list[str]:
    return list(dict.fromkeys(str(v) for v in series.to_numpy(dtype=object)[mask]))[:k]


def _to_float(value: Any) -> float:
    """One value as a float: NaN when it is not a number, +-inf when it is beyond float64."""
    if isinstance(value, int):  # a Python int has no size limit; float64 has
        try:
            return float(value)
        except OverflowError:
            return float("inf") if value > 0 else float("-inf")
    if isinstance(value, numbers.Real | np.bool_ | str | bytes):
        try:
            return float(value)
        except (ValueError, OverflowError):
            return float("nan")
    return float("nan")


def numeric_label(series: pd.Series, where: str, kind: str, hint: str = "") -> np.ndarray:
    """Label column as float64, NaN where missing; text, inf and values float32 cannot hold
    are errors. ``where`` opens each message, ``kind`` names the task type and ``hint`` ends
    the message on non-numbers."""
    if not_real(series.dtype):
        raise DataError(f"{where} has dtype {series.dtype}; a {kind} task needs numbers{hint}")
    arr, bad = as_float(series)
    if bad.any():
        raise DataError(
            f"{where} has non-numeric values such as {examples(series, bad, 5)}; a {kind} "
            f"task needs numbers{hint}"
        )
    with np.errstate(invalid="ignore"):
        too_big = np.abs(arr) > FLOAT32_MAX
    if too_big.any():
        raise DataError(
            f"{where} has values that are infinite or beyond float32's range "
            f"(|x| > {FLOAT32_MAX:.3g}) such as {examples(series, too_big, 3)}"
        )
    return arr
