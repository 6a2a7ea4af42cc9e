"""The fitted preprocessor against closed forms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from polytask.config import FeaturesConfig
from polytask.data import MISSING_INDEX, UNKNOWN_INDEX, Preprocessor
from polytask.tasks import TaskSpec


def _pre(features: Any, tasks: Any) -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig.model_validate(features),
        tasks={k: TaskSpec(**v) for k, v in tasks.items()},
    )


def test_vocabulary_unknown_and_missing_indices() -> None:
    train = pd.DataFrame({"c": ["b", "a", "b", None, "c"], "y": [0, 1, 0, 1, 0]})
    pre = _pre({"categorical": ["c"]}, {"y": {"type": "binary"}}).fit(train)
    assert pre.vocabularies_ == {"c": ["a", "b", "c"]}
    test = pd.DataFrame({"c": ["a", "zzz", None, "c"]})
    idx = pre.transform(test, labels=False).categorical[:, 0].tolist()
    assert idx == [2, UNKNOWN_INDEX, MISSING_INDEX, 4]
    assert pre.cardinalities == [5]
    assert list(pre.decode_categorical("c", np.array(idx))) == ["a", None, None, "c"]


def test_min_freq_sends_rare_values_to_unknown() -> None:
    train = pd.DataFrame({"c": ["a", "a", "b"], "y": [0, 1, 0]})
    pre = _pre({"categorical": [{"name": "c", "min_freq": 2}]}, {"y": {"type": "binary"}})
    pre.fit(train)
    assert pre.transform(train, labels=False).categorical[:, 0].tolist() == [2, 2, UNKNOWN_INDEX]


def test_integral_floats_and_ints_are_the_same_category() -> None:
    train = pd.DataFrame({"c": [1, 2, 3], "y": [0, 1, 0]})
    pre = _pre({"categorical": ["c"]}, {"y": {"type": "binary"}}).fit(train)
    other = pd.DataFrame({"c": [1.0, np.nan, 3.0]})
    assert pre.transform(other, labels=False).categorical[:, 0].tolist() == [2, 0, 4]


def test_numeric_standardization_imputation_and_indicator() -> None:
    train = pd.DataFrame({"x": [1.0, 3.0, np.nan, np.inf], "y": [0, 1, 0, 1]})
    pre = _pre({"numeric": ["x"]}, {"y": {"type": "binary"}}).fit(train)
    enc = pre.transform(train, labels=False).numeric.numpy()
    # mean 2, std 1 over the finite values; missing and inf -> 0 with indicator 1
    np.testing.assert_allclose(enc[:, 0], [-1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(enc[:, 1], [0, 0, 1, 1])
    assert pre.numeric_width == 2


def test_signed_log1p() -> None:
    train = pd.DataFrame({"x": [0.0, math.e - 1, -(math.e - 1)], "y": [0, 1, 0]})
    features = {"numeric": [{"name": "x", "log1p": True}], "numeric_scaling": "none"}
    pre = _pre(features, {"y": {"type": "binary"}}).fit(train)
    np.testing.assert_allclose(
        pre.transform(train, labels=False).numeric[:, 0], [0, 1, -1], atol=1e-6
    )


def test_label_mappings() -> None:
    df = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0],
            "inc": [" 50000+.", " - 50000.", None, " 50000+."],
            "flag": [True, False, True, False],
            "r": [1.5, None, 2.5, 3.0],
            "m": ["b", "a", None, "c"],
        }
    )
    tasks = {
        "inc": {"type": "binary", "positive": " 50000+."},
        "flag": {"type": "binary"},
        "r": {"type": "regression"},
        "m": {"type": "multiclass"},
    }
    pre = _pre({"numeric": ["x"]}, tasks).fit(df)
    labels = {k: v.numpy() for k, v in pre.transform(df).labels.items()}
    np.testing.assert_array_equal(labels["inc"], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(labels["flag"], [1, 0, 1, 0])
    # a regression label is learned standardized (training mean and std), unless told not to
    r = np.array([1.5, 2.5, 3.0])
    z = (np.array([1.5, np.nan, 2.5, 3.0]) - r.mean()) / r.std()
    np.testing.assert_allclose(labels["r"], z.astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(labels["m"], [1, 0, np.nan, 2])
    assert pre.classes_["m"] == ["a", "b", "c"]
    raw = _pre({"numeric": ["x"]}, {"r": {"type": "regression", "label_scaling": "none"}})
    np.testing.assert_array_equal(raw.fit_transform(df).labels["r"], [1.5, np.nan, 2.5, 3.0])


def test_fit_does_not_depend_on_row_order(toy_frame: pd.DataFrame) -> None:
    features = {"categorical": ["color", "size"], "numeric": ["x", "z"]}
    tasks = {"click": {"type": "binary"}, "kind": {"type": "multiclass"}}
    a = _pre(features, tasks).fit(toy_frame)
    shuffled = toy_frame.sample(frac=1.0, random_state=3)
    b = _pre(features, tasks).fit(shuffled)
    assert a.vocabularies_ == b.vocabularies_ and a.classes_ == b.classes_
    for k, s in a.numeric_stats_.items():
        assert math.isclose(s.mean, b.numeric_stats_[k].mean, rel_tol=1e-12, abs_tol=1e-12)
    ea, eb = a.transform(toy_frame), b.transform(shuffled)
    order = [toy_frame.index.get_loc(i) for i in shuffled.index]
    assert (ea.categorical[order] == eb.categorical).all()


def test_state_round_trip(toy_frame: pd.DataFrame) -> None:
    features = {"categorical": ["color"], "numeric": ["x"]}
    tasks = {"kind": {"type": "multiclass"}}
    a = _pre(features, tasks).fit(toy_frame)
    b = _pre(features, tasks).load_state_dict(a.state_dict())
    ea, eb = a.transform(toy_frame), b.transform(toy_frame)
    assert (ea.categorical == eb.categorical).all() and (ea.numeric == eb.numeric).all()


def test_decode_class_inverts_the_label_encoding() -> None:
    train = pd.DataFrame({"c": ["x"] * 4, "kind": ["b", "c", "a", "b"]})
    pre = _pre({"categorical": ["c"]}, {"kind": {"type": "multiclass"}}).fit(train)
    codes = pre.transform(train).labels["kind"].numpy().astype(np.int64)
    assert codes.tolist() == [1, 2, 0, 1]  # the sorted classes' indices
    assert list(pre.decode_class("kind", codes)) == ["b", "c", "a", "b"]


def test_transform_before_fit_is_an_error() -> None:
    from polytask import NotFittedError

    with pytest.raises(NotFittedError):
        _pre({"numeric": ["x"]}, {"y": {"type": "binary"}}).transform(pd.DataFrame({"x": [1]}))


def _mixed_table(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    mixed = np.array([1, 2.0, 2.5, "a", True, None, np.int8(3), 3.0, b"x", float("nan")], object)
    numeric = rng.normal(0, 5, n)
    numeric[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "mixed": rng.choice(mixed, n),
            "ints": pd.array(rng.choice([1, 2, 3, None], n), dtype="Int64"),
            "text": rng.choice(["u", "v", "w", "rare"], n, p=[0.4, 0.3, 0.29, 0.01]),
            "x": numeric,
            "big": rng.exponential(1e5, n),
            "click": rng.choice(np.array([0, 1, None], object), n),
            "kind": rng.choice(np.array(["a", 1, 1.0, True, None], object), n),
            "buy": rng.choice(np.array(["yes", "no", 7, None], object), n),
            "amount": rng.normal(0, 1, n),
        }
    )


@pytest.mark.parametrize("labels", [True, None, False])
def test_fit_transform_equals_fit_then_transform(labels: bool | None) -> None:
    features = {
        "categorical": ["mixed", "ints", {"name": "text", "min_freq": 5}],
        "numeric": ["x", {"name": "big", "log1p": True}],
    }
    tasks = {
        "click": {"type": "binary"},
        "kind": {"type": "multiclass"},
        "buy": {"type": "binary", "positive": "yes"},
        "amount": {"type": "regression", "loss": "huber"},
    }
    df = _mixed_table()
    two_steps = _pre(features, tasks).fit(df)
    expected = two_steps.transform(df, labels=labels, what="training set")
    one_step = _pre(features, tasks)
    got = one_step.fit_transform(df, labels=labels, what="training set")
    assert one_step.state_dict() == two_steps.state_dict()
    assert torch.equal(got.categorical, expected.categorical)
    assert torch.equal(got.numeric, expected.numeric)
    assert got.labels.keys() == expected.labels.keys()
    for name, y in expected.labels.items():
        assert torch.equal(got.labels[name].isnan(), y.isnan())
        assert torch.equal(got.labels[name].nan_to_num(-1), y.nan_to_num(-1))
