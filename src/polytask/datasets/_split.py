"""Seeded random split of a frame into consecutive parts of given fractions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from numbers import Real

import numpy as np
import pandas as pd

from polytask.datasets._synthetic import _check_int
from polytask.errors import DataError


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence):
        raise DataError(
            "split_frame: argument 'fractions' expected a sequence of positive numbers summing "
            f"to 1, received {fractions!r}"
        )
    values = list(fractions)
    if not values or not all(
        isinstance(f, Real) and not isinstance(f, bool) and math.isfinite(f) and f > 0
        for f in values
    ):
        raise DataError(
            "split_frame: argument 'fractions' expected a non-empty sequence of positive numbers, "
            f"received {fractions!r}"
        )
    total = math.fsum(float(f) for f in values)
    if abs(total - 1.0) > 1e-6:
        raise DataError(
            "split_frame: argument 'fractions' expected numbers summing to 1 (within 1e-6), "
            f"received {fractions!r}, which sum to {total!r}"
        )
    return [float(f) for f in values]


def split_frame(
    df: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[pd.DataFrame, ...]:
    """Shuffle the rows of ``df`` with ``seed`` and cut them into parts of the given fractions.

    The row positions are permuted with ``numpy.random.default_rng(seed).permutation`` and cut
    at ``round(n * (f_1 + ... + f_k))`` for each ``k``, so part ``k`` holds ``n * f_k`` rows up to
    rounding (within one row). The parts are disjoint, together hold every row exactly once,
    keep ``df``'s index labels and list their rows in the shuffled order. polytask splits the
    census-income test file 80/10/10 with ``seed=0`` (see ``docs/datasets.md``).

    Args:
        df: the frame to split.
        fractions: the share of rows in each part, each > 0, summing to 1 within 1e-6.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same parts.

    Returns:
        One frame per fraction, in the order of ``fractions``.

    Raises:
        DataError: ``df`` is not a DataFrame, ``fractions`` are not positive or do not sum to 1,
            or ``df`` has too few rows to give every part at least one row.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(
            f"split_frame: argument 'df' expected a pandas DataFrame, received {type(df).__name__}"
        )
    values = _check_fractions(fractions)
    seed = _check_int("split_frame", "seed", seed, minimum=0)
    n = len(df)
    cuts = [0, *(round(n * c) for c in np.cumsum(values)[:-1]), n]
    sizes = np.diff(cuts)
    if (sizes <= 0).any():
        raise DataError(
            f"split_frame: fractions {tuple(values)} of a frame of {n} rows give part sizes "
            f"{sizes.tolist()}; every part needs at least one row (expected more rows or larger "
            "fractions)"
        )
    order = np.random.default_rng(seed).permutation(n)
    return tuple(df.iloc[order[a:b]] for a, b in itertools.pairwise(cuts))
