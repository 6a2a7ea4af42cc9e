"""The monitor that picks the best epoch: ``mean.<metric>`` with a task whose metric is
undefined on the validation split, and a binary task that cannot learn."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel
from polytask.metrics import monitor_value, undefined_in_mean


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + x[:, 2] * x[:, 3]
    return pd.DataFrame(
        {
            **{f"x{i}": x[:, i] for i in range(4)},
            "click": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
            "buy": (rng.random(n) < 1 / (1 + np.exp(-x[:, 1]))).astype(int),
        }
    )


def _model(**training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features={"numeric": ["x0", "x1", "x2", "x3"]},
        tasks={"click": {"type": "binary"}, "buy": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [16], "tower_units": [8]},
        optimizer={"lr": 3e-3},
        training={"batch_size": 128, "progress": False, "monitor": "mean.auc", **training},
    )


def test_mean_leaves_out_an_undefined_metric() -> None:
    metrics = {"a": {"auc": 0.8}, "b": {"auc": math.nan}, "c": {"rmse": 1.0}}
    assert monitor_value(metrics, "mean.auc") == pytest.approx(0.8)
    assert undefined_in_mean(metrics, "mean.auc") == {"b": "its labels there are all one class"}
    assert math.isnan(monitor_value({"b": {"auc": math.nan}}, "mean.auc"))
    assert undefined_in_mean(metrics, "a.auc") == {}


def test_a_one_class_validation_task_does_not_freeze_the_best_epoch() -> None:
    """``buy`` has one class in validation: its AUC is NaN every epoch. The mean over the
    defined AUCs (click's) must pick the best epoch, with one warning naming ``buy``; a NaN
    mean would keep epoch 1 and stop after ``patience`` epochs."""
    train, valid = _frame(3000, 0), _frame(600, 1)
    valid["buy"] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _model(epochs=6, patience=1).fit(train, validation=valid)
    left_out = [w for w in caught if "left out of the mean" in str(w.message)]
    assert len(left_out) == 1
    assert "task 'buy'" in str(left_out[0].message)
    assert "all one class" in str(left_out[0].message)
    clicks = [r["validation"]["click"]["auc"] for r in model.history_]
    assert [r["monitor"]["mean.auc"] for r in model.history_] == clicks
    assert model.best_epoch_ == 1 + int(np.argmax(clicks))
    assert model.best_epoch_ > 1  # click's AUC improves past the first epoch


def test_a_binary_task_with_constant_training_labels_is_flagged_before_training() -> None:
    train = _frame(500, 0)
    train["buy"] = 0
    with pytest.warns(UserWarning, match=r"task 'buy': every training label is 0"):
        _model(epochs=1).fit(train)
