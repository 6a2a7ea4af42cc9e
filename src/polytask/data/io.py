"""Reading tables: a pandas DataFrame, or a CSV / Parquet path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from polytask.errors import DataError

TableLike = pd.DataFrame | str | os.PathLike[str]


def read_table(data: Any, *, what: str = "data") -> pd.DataFrame:
    """Return ``data`` as a DataFrame: a DataFrame as is, a ``.csv``/``.csv.gz``/``.parquet``
    path read from disk."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.exists():
            raise DataError(f"{what}: file {str(path)!r} does not exist")
        suffixes = "".join(path.suffixes[-2:]).lower()
        try:
            if path.is_dir() or suffixes.endswith((".parquet", ".pq")):
                return pd.read_parquet(path)
            if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".gz")):
                sep = "\t" if ".tsv" in suffixes else ","
                return pd.read_csv(path, sep=sep)
        except (OSError, ValueError) as err:
            raise DataError(f"{what}: could not read {str(path)!r}: {err}") from None
        raise DataError(
            f"{what}: cannot tell the format of {str(path)!r}; expected a .csv, .csv.gz or "
            ".parquet file"
        )
    raise DataError(
        f"{what}: expected a pandas DataFrame or a path to a CSV/Parquet file, "
        f"found {type(data).__name__}"
    )


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write CSV or Parquet by extension, atomically (temporary file, fsync, rename)."""
    from polytask._atomic import atomic_path

    target = Path(path)
    name = target.name.lower()
    if not name.endswith((".csv", ".parquet", ".pq")):
        raise DataError(f"output {str(target)!r}: expected a .csv or .parquet file name")
    with atomic_path(target) as tmp:
        if name.endswith(".csv"):
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
