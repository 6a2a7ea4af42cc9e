"""Fuzzed tables through `Preprocessor.fit/transform`, and its properties: categorical
round trip, independence from row order and from column dtype, unseen -> unknown, missing ->
0, numeric always finite."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fuzz_tables import (
    CATEGORICAL,
    FEATURES,
    Case,
    category_value,
    prediction_tables,
    valid_tables,
    wild_tables,
)
from hypothesis import event, given
from hypothesis import strategies as st

from polytask import PolytaskError
from polytask.config import FeaturesConfig
from polytask.data import MISSING_INDEX, UNKNOWN_INDEX, EncodedData, Preprocessor
from polytask.data.preprocess import category_strings
from polytask.tasks import TaskSpec


def make(tasks: dict[str, dict[str, Any]], **features: Any) -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig(**{**FEATURES, **features}),
        tasks={k: TaskSpec(**v) for k, v in tasks.items()},
    )


def check_encoded(pre: Preprocessor, frame: pd.DataFrame, data: EncodedData) -> None:
    """What the model may rely on, whatever the table held."""
    assert len(data) == len(frame)
    cards = torch.tensor(pre.cardinalities)
    assert data.categorical.dtype == torch.int64
    assert bool(((data.categorical >= 0) & (data.categorical < cards)).all())
    assert data.numeric.shape == (len(frame), pre.numeric_width)
    assert bool(torch.isfinite(data.numeric).all())
    for j, name in enumerate(CATEGORICAL):
        missing = torch.from_numpy(frame[name].isna().to_numpy().copy())
        assert torch.equal(data.categorical[:, j] == MISSING_INDEX, missing)
    for name, labels in data.labels.items():
        present = labels[~torch.isnan(labels)]
        if pre.tasks[name].type == "binary":
            assert bool(((present == 0) | (present == 1)).all())
        elif pre.tasks[name].type == "multiclass":
            assert bool(((present >= 0) & (present < pre.num_classes(name))).all())
            assert torch.equal(present, present.round())
        else:
            assert bool(torch.isfinite(present).all())


@given(valid_tables(), prediction_tables())
def test_valid_tables_encode_within_bounds(case: Case, new: pd.DataFrame):
    pre = make(case.tasks).fit(case.frame)
    check_encoded(pre, case.frame, pre.transform(case.frame, labels=True))
    check_encoded(pre, new, pre.transform(new, labels=False))


@given(wild_tables(), st.booleans())
def test_broken_tables_raise_a_polytask_error(case: Case, log1p: bool):
    numeric = [{"name": n, "log1p": log1p} for n in FEATURES["numeric"]]
    with pytest.raises(PolytaskError) as err:
        make(case.tasks, numeric=numeric).fit(case.frame)
    event(f"refused: {type(err.value).__name__}")
    assert str(err.value) and "\n" not in str(err.value)


@given(valid_tables(), st.booleans())
def test_log1p_and_unscaled_numerics_stay_finite(case: Case, log1p: bool):
    numeric = [{"name": n, "log1p": log1p} for n in FEATURES["numeric"]]
    pre = make(case.tasks, numeric=numeric, numeric_scaling="none").fit(case.frame)
    check_encoded(pre, case.frame, pre.transform(case.frame))


@given(valid_tables())
def test_categorical_round_trip(case: Case):
    pre = make(case.tasks).fit(case.frame)
    encoded = pre.transform(case.frame).categorical.numpy()
    for j, name in enumerate(CATEGORICAL):
        canonical, _ = category_strings(case.frame[name])
        decoded = pre.decode_categorical(name, encoded[:, j])
        assert decoded.tolist() == canonical.tolist()  # None where missing


@given(st.lists(category_value, min_size=1, max_size=12))
def test_a_values_category_does_not_depend_on_its_columns_dtype(values: list[Any]):
    mixed, missing = category_strings(pd.Series(values, dtype=object))
    for value, string, miss in zip(values, mixed, missing, strict=True):
        alone, alone_missing = category_strings(pd.Series([value]))
        assert alone_missing[0] == miss
        assert alone[0] == string


@given(valid_tables(), st.randoms(use_true_random=False))
def test_row_order_does_not_change_the_fit(case: Case, rng: Any):
    order = list(range(len(case.frame)))
    rng.shuffle(order)
    shuffled = case.frame.iloc[order]
    a = make(case.tasks).fit(case.frame)
    b = make(case.tasks).fit(shuffled)
    assert a.state_dict()["vocabularies"] == b.state_dict()["vocabularies"]
    assert a.state_dict()["numeric"] == b.state_dict()["numeric"]  # exactly, bit for bit
    assert a.classes_ == b.classes_
    ea, eb = a.transform(case.frame), a.transform(shuffled)
    index = torch.tensor(order)
    assert torch.equal(ea.categorical[index], eb.categorical)
    assert torch.equal(ea.numeric[index], eb.numeric)
    for name in ea.labels:
        torch.testing.assert_close(
            ea.labels[name][index], eb.labels[name], rtol=0, atol=0, equal_nan=True
        )


@given(valid_tables(), st.integers(1, 8))
def test_unseen_categories_map_to_unknown_and_missing_to_zero(case: Case, n: int):
    pre = make(case.tasks).fit(case.frame)
    known = {v for vocab in pre.vocabularies_.values() for v in vocab}
    unseen = [f"unseen-{i}" for i in range(n)]
    assert not known & set(unseen)
    rows = pd.DataFrame(
        {
            "c1": unseen,
            "c2": [None] * n,
            "n1": [np.nan, np.inf, -np.inf, 1e308, None, "", "nan", 0][:n],
            "n2": [1.0] * n,
        },
    )
    encoded = pre.transform(rows, labels=False)
    assert encoded.categorical[:, 0].tolist() == [UNKNOWN_INDEX] * n
    assert encoded.categorical[:, 1].tolist() == [MISSING_INDEX] * n
    assert bool(torch.isfinite(encoded.numeric).all())
    decoded = pre.decode_categorical("c1", encoded.categorical[:, 0].numpy())
    assert decoded.tolist() == [None] * n


extreme = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1.7976931348623157e308, -1.7976931348623157e308, 1e308, 5e-324, -5e-324]
)


@given(st.lists(extreme, min_size=1, max_size=30))
def test_extreme_numeric_values_never_reach_the_model_as_nan_or_inf(xs: list[float]):
    frame = pd.DataFrame({"c1": "a", "c2": "b", "n1": xs, "n2": xs[::-1], "b": 1})
    pre = make({"b": {"type": "binary"}}).fit(frame)
    for stats in pre.numeric_stats_.values():
        assert np.isfinite(stats.mean) and np.isfinite(stats.std) and stats.std > 0
    assert bool(torch.isfinite(pre.transform(frame).numeric).all())


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3, 3.0, np.int8(3), "3"], ["3", "3", "3", "3"]),
        ([True, np.True_, 1], ["True", "True", "1"]),
        ([0.1, np.float32(0.5), -0.0, 1e20, 2**64], ["0.1", "0.5", "0", "1e+20", str(2**64)]),
        ([None, np.nan, pd.NA, "nan"], [None, None, None, "nan"]),
    ],
)
def test_canonical_category_strings(values, expected):
    assert category_strings(pd.Series(values, dtype=object))[0].tolist() == expected
