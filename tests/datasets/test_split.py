from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polytask.datasets import split_frame
from polytask.errors import DataError


@pytest.fixture
def frame() -> pd.DataFrame:
    # A non-default index, to check that the parts keep the labels, not the positions.
    return pd.DataFrame(
        {"a": np.arange(1000), "b": np.arange(1000) * 2.0}, index=np.arange(1000) * 7
    )


def test_parts_are_disjoint_cover_every_row_and_keep_the_index(frame: pd.DataFrame) -> None:
    parts = split_frame(frame, fractions=(0.6, 0.3, 0.1), seed=3)
    assert [len(p) for p in parts] == [600, 300, 100]
    labels = np.concatenate([p.index.to_numpy() for p in parts])
    assert sorted(labels) == list(frame.index)
    for part in parts:
        pd.testing.assert_frame_equal(part, frame.loc[part.index])


def test_rows_are_shuffled(frame: pd.DataFrame) -> None:
    first, _ = split_frame(frame, fractions=(0.5, 0.5))
    assert not first.index.is_monotonic_increasing


def test_same_seed_same_parts_and_different_seed_different_parts(frame: pd.DataFrame) -> None:
    a = split_frame(frame, seed=1)
    b = split_frame(frame, seed=1)
    c = split_frame(frame, seed=2)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert not a[0].index.equals(c[0].index)


def test_sizes_are_within_one_row_of_the_fractions() -> None:
    frame = pd.DataFrame({"a": range(101)})
    parts = split_frame(frame, fractions=[1 / 3, 1 / 3, 1 / 3])
    assert sum(len(p) for p in parts) == 101
    assert all(abs(len(p) - 101 / 3) <= 1 for p in parts)


def test_one_fraction_returns_a_shuffled_copy(frame: pd.DataFrame) -> None:
    (whole,) = split_frame(frame, fractions=(1.0,))
    assert sorted(whole.index) == list(frame.index)
    assert whole is not frame and not whole.index.equals(frame.index)  # copied and shuffled
    assert whole.equals(frame.loc[whole.index])


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((0.8, 0.1), "summing to 1"),
        ((0.8, 0.3, -0.1), "positive"),
        ((1.0, 0.0), "positive"),
        ((), "non-empty"),
        ("0.5", "sequence"),
        ((0.5, float("nan"), 0.5), "positive"),
    ],
)
def test_bad_fractions_raise_data_error(
    frame: pd.DataFrame, fractions: tuple[float, ...], message: str
) -> None:
    with pytest.raises(DataError, match=rf"'fractions' expected .*{message}.*received"):
        split_frame(frame, fractions=fractions)


def test_a_part_that_would_be_empty_is_an_error() -> None:
    with pytest.raises(DataError, match=r"5 rows give part sizes \[4, 0, 1\]"):
        split_frame(pd.DataFrame({"a": range(5)}))


def test_not_a_frame_is_an_error() -> None:
    with pytest.raises(DataError, match="'df' expected a pandas DataFrame, received list"):
        split_frame([1, 2, 3])  # type: ignore[arg-type]
