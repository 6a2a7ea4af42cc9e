"""Reading tables: a pandas DataFrame, or a CSV / Parquet path.

`table_format` is the one place that tells a file's format (``read_table`` here and the
chunked reader in ``chunks.py`` both use it); `output_format` does the same for the files
``write_table`` and ``write_chunks`` write.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from polytask.errors import DataError

TableFormat = Literal["csv", "tsv", "parquet"]

_FORMATS = ("csv", "parquet")


def sniff_format(path: str | os.PathLike[str]) -> TableFormat | None:
    """A table file's format by its name: ``.parquet``/``.pq`` or a directory (a Parquet
    dataset) is Parquet, ``.tsv`` tab-separated, ``.csv``/``.csv.gz``/``.txt``/``.gz`` CSV;
    None when the name says nothing."""
    p = Path(path)
    suffixes = "".join(p.suffixes[-2:]).lower()
    if suffixes.endswith((".parquet", ".pq")) or p.is_dir():
        return "parquet"
    if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".gz")):
        return "tsv" if ".tsv" in suffixes else "csv"
    return None


def table_format(
    path: str | os.PathLike[str], format: str | None = None, *, what: str = "data"
) -> TableFormat:
    """The format to read the existing file ``path`` as: ``format`` (``"csv"`` or
    ``"parquet"``) when given, else `sniff_format`; a `DataError` when the file is missing,
    neither says, or the file names a column twice (`check_unique_columns`)."""
    if not Path(path).exists():
        raise DataError(f"{what}: file {str(path)!r} does not exist")
    if format is not None:
        if format not in _FORMATS:
            raise DataError(f"{what}: format must be one of {list(_FORMATS)}, found {format!r}")
        found: TableFormat | None = "csv" if format == "csv" else "parquet"
    else:
        found = sniff_format(path)
    if found is None:
        raise DataError(
            f"{what}: cannot tell the format of {str(path)!r}; expected a .csv, .csv.gz or "
            ".parquet file"
        )
    check_unique_columns(Path(path), found, what)
    return found


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a Parquet file or dataset directory (by its name)."""
    return sniff_format(path) == "parquet"


def output_format(path: str | os.PathLike[str]) -> Literal["csv", "parquet"]:
    """The format of an output file by extension (``.csv``, ``.parquet``/``.pq``)."""
    name = Path(path).name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise DataError(f"output {str(path)!r}: expected a .csv or .parquet file name")


def read_table(data: Any, *, format: str | None = None, what: str = "data") -> pd.DataFrame:
    """Return ``data`` as a DataFrame: a DataFrame as is, a ``.csv``/``.csv.gz``/``.parquet``
    path (or Parquet directory) read from disk. ``format`` (``"csv"`` or ``"parquet"``)
    forces the format whatever the file's name; ``None`` goes by its name. A file that
    cannot be read or parsed is a `DataError` naming it."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        kind = table_format(path, format, what=what)
        try:
            if kind == "parquet":
                return pd.read_parquet(path)
            # low_memory=False: each column's type from the whole column, with no
            # DtypeWarning for a column whose chunks pandas would have typed differently
            return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", low_memory=False)
        except (OSError, ValueError, pa.ArrowException) as err:
            raise DataError(f"{what}: could not read {str(path)!r}: {err}") from None
    raise DataError(
        f"{what}: expected a pandas DataFrame or a path to a CSV/Parquet file, "
        f"found {type(data).__name__}"
    )


def check_unique_columns(path: Path, kind: TableFormat, what: str) -> None:
    """Refuse a file that names a column twice, the same way for CSV and Parquet (pandas
    would rename a CSV's second ``age`` to ``age.1`` and use the first; pyarrow would fail
    with its schema dump)."""
    try:
        if kind == "parquet" and path.is_dir():
            import pyarrow.dataset as ds

            names = ds.dataset(path, format="parquet").schema.names
        elif kind == "parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            header = pd.read_csv(
                path, sep="\t" if kind == "tsv" else ",", header=None, nrows=1, dtype=str
            )
            names = [] if header.empty else [str(x) for x in header.iloc[0].tolist()]
    except (OSError, ValueError, pa.ArrowException):
        return  # unreadable: the reader that follows says so
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise DataError(
            f"{what}: column(s) {repeated} appear more than once in {str(path)!r}; expected "
            "each column once"
        )


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write CSV or Parquet by extension, atomically (temporary file, fsync, rename)."""
    from polytask._atomic import atomic_path

    kind = output_format(path)
    with atomic_path(Path(path)) as tmp:
        if kind == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
