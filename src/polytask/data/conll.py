"""Reading the CoNLL column format: one token per line, its fields separated by whitespace, a
blank line between sentences. Each sentence becomes one row whose columns are lists (one
entry per token), the form the ``tag`` task type and `polytask.data.tokens` read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from polytask.errors import DataError


def read_conll(
    path: str | os.PathLike[str], columns: Sequence[str], *, what: str = "data"
) -> pd.DataFrame:
    """One row per sentence, one list column per name in ``columns`` (the file's fields in
    order). Lines starting with ``-DOCSTART-`` are skipped. A line with another number of
    fields is a `DataError` naming the file and line."""
    names = list(columns)
    if not names or len(set(names)) != len(names):
        raise DataError(f"{what}: conll columns must be distinct names, found {names}")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what}: file {str(p)!r} does not exist")
    rows: list[list[list[str]]] = []
    current: list[list[str]] = [[] for _ in names]
    try:
        with p.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    if current[0]:
                        rows.append(current)
                        current = [[] for _ in names]
                    continue
                if fields[0] == "-DOCSTART-":
                    continue
                if len(fields) != len(names):
                    raise DataError(
                        f"{what}: {str(p)!r} line {number}: expected {len(names)} "
                        f"whitespace-separated fields ({', '.join(names)}), found "
                        f"{len(fields)}: {line.strip()[:80]!r}"
                    )
                for column, value in zip(current, fields, strict=True):
                    column.append(value)
    except UnicodeDecodeError as err:
        raise DataError(f"{what}: {str(p)!r} is not UTF-8 text ({err.reason})") from None
    if current[0]:
        rows.append(current)
    if not rows:
        raise DataError(f"{what}: {str(p)!r} holds no sentence")
    return pd.DataFrame({name: [r[j] for r in rows] for j, name in enumerate(names)})
