"""Loader for the UCI Census-Income (KDD) data, the MMoE paper's real-data benchmark.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, section 6.3 (census-income data, tasks income > 50K and
marital status == never married).
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from polytask.errors import DataError

_SOURCE = (
    "the UCI KDD archive, 'Census-Income (KDD)' "
    "(https://archive.ics.uci.edu/ml/datasets/Census-Income+(KDD), files "
    "census-income.data.gz and census-income.test.gz)"
)

# The short names of the keras-mmoe demo, in file order (see the .names file for the long ones).
_COLUMNS: tuple[str, ...] = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin",
    "sex", "union_member", "unemp_reason", "full_or_part_emp", "capital_gains",
    "capital_losses", "stock_dividends", "tax_filer_stat", "region_prev_res", "state_prev_res",
    "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa", "mig_chg_reg",
    "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18",
    "country_father", "country_mother", "country_self", "citizenship", "own_or_self",
    "vet_question", "vet_benefits", "weeks_worked", "year", "income_50k",
)  # fmt: skip

_FLOAT_COLUMNS: tuple[str, ...] = (
    "age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
    "instance_weight", "num_emp", "weeks_worked",
)  # fmt: skip

CENSUS_NUMERIC: tuple[str, ...] = tuple(c for c in _FLOAT_COLUMNS if c != "instance_weight")
"""Continuous feature columns. ``instance_weight`` is left out: it is a sampling weight that the
``.names`` file says must not be used by classifiers."""

CENSUS_TASKS: dict[str, dict[str, str]] = {
    "income": {"type": "binary", "label": "income_50k", "positive": "50000+."},
    "marital": {"type": "binary", "label": "marital_stat", "positive": "Never married"},
}
"""The two tasks of the MMoE paper's first census experiment: label column and positive value."""

CENSUS_CATEGORICAL: tuple[str, ...] = tuple(
    c
    for c in _COLUMNS
    if c not in _FLOAT_COLUMNS and c not in {task["label"] for task in CENSUS_TASKS.values()}
)
"""Categorical feature columns (read as strings), without the label columns ``marital_stat`` and
``income_50k``. The integer codes ``det_ind_code``, ``det_occ_code``, ``own_or_self``,
``vet_benefits`` and ``year`` are nominal, so they are here too."""


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic number."""
    if not path.exists():
        raise DataError(
            f"census-income file {str(path)!r} does not exist; expected the UCI "
            f"Census-Income (KDD) file, available from {_SOURCE}"
        )
    if not path.is_file():
        raise DataError(f"census-income path {str(path)!r} expected a file, found a directory")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"census-income file {str(path)!r} starts like gzip but cannot be "
                f"decompressed: {exc}"
            ) from exc
    return raw


def _check_field_counts(raw: bytes, path: Path) -> None:
    """Raise DataError at the first non-blank line that does not hold 42 fields.

    ``read_csv`` pads short rows with NaN without a word, so the count is checked here, with
    numpy over the whole buffer rather than a Python loop over lines.
    """
    if not raw.strip():
        raise DataError(f"census-income file {str(path)!r} is empty, expected 42 fields a line")
    buffer = np.frombuffer(raw, dtype=np.uint8)
    line_ends = np.flatnonzero(buffer == ord("\n"))
    if buffer[-1] != ord("\n"):
        line_ends = np.append(line_ends, len(buffer))
    line_starts = np.concatenate(([0], line_ends[:-1] + 1))
    commas_per_line = np.bincount(
        np.searchsorted(line_ends, np.flatnonzero(buffer == ord(","))), minlength=len(line_ends)
    )[: len(line_ends)]
    # An empty line (or a lone "\r" of a CRLF file) is skipped by read_csv, so it is here too.
    lengths = line_ends - line_starts
    carriage_return = buffer[np.minimum(line_starts, len(buffer) - 1)] == ord("\r")
    blank = (lengths == 0) | ((lengths == 1) & carriage_return)
    fields = commas_per_line + 1
    bad = np.flatnonzero(~blank & (fields != len(_COLUMNS)))
    if len(bad):
        first = int(bad[0])
        raise DataError(
            f"census-income file {str(path)!r}: line {first + 1} has {int(fields[first])} "
            f"comma-separated fields, expected {len(_COLUMNS)} "
            f"({len(bad)} line(s) in all have the wrong count)"
        )


def load_census_income(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a UCI Census-Income (KDD) file into a frame with the short column names.

    The census benchmark of Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018. The file (``census-income.data`` or
    ``census-income.test``, gzipped or not) has no header and 42 comma-separated fields a line,
    each value after the first preceded by a space; ``?`` marks a missing value.

    Args:
        path: the file, plain or gzip-compressed (recognised by its content, not its name).

    Returns:
        One row per line (99,762 for the official test file) and 42 columns named as in
        ``PROVENANCE.md`` (``age, class_worker, ..., year, income_50k``). The continuous columns
        (``age`` in years, ``wage_per_hour``, ``capital_gains``, ``capital_losses`` and
        ``stock_dividends`` in US dollars, ``instance_weight``, ``num_emp``, ``weeks_worked``) are
        float64; every other column holds strings with the leading space removed (so the income
        labels are ``"50000+."`` and ``"- 50000."``), including the nominal integer codes such as
        ``det_ind_code`` and ``year`` (``"94"``, ``"95"``). ``?`` becomes NaN.

    Raises:
        DataError: the file is missing, is not a file, or a line has other than 42 fields.
    """
    path = Path(path)
    raw = _read_bytes(path)
    _check_field_counts(raw, path)
    dtypes = {c: ("float64" if c in _FLOAT_COLUMNS else str) for c in _COLUMNS}
    try:
        return pd.read_csv(
            io.BytesIO(raw),
            header=None,
            names=list(_COLUMNS),
            index_col=False,
            dtype=dtypes,
            skipinitialspace=True,
            na_values=["?"],
            # Only "?" means missing: the pandas defaults would also turn strings such as "NA"
            # or "None" into NaN.
            keep_default_na=False,
            quoting=3,  # csv.QUOTE_NONE: the file has no quoting, so a '"' is just a character.
            engine="c",
        )
    except ValueError as exc:  # for example a word in a float column
        raise DataError(f"census-income file {str(path)!r} cannot be parsed: {exc}") from exc
