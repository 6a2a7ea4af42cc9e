"""Regression (and count) labels are scaled for training and mapped back at predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel, TrainingError
from polytask.data import Preprocessor


def _frame(scale: float, n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "x": x,
            "c": rng.choice(["p", "q"], n),
            "big": scale * (3.0 + x + 0.1 * rng.normal(size=n)),
            "click": (x + rng.normal(size=n) > 0).astype(int),
        }
    )


def _model(scaling: str, **training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features={"categorical": ["c"], "numeric": ["x"]},
        tasks={
            "big": {"type": "regression", "label_scaling": scaling},
            "click": {"type": "binary"},
        },
        model={"name": "shared_bottom", "shared_units": [16], "tower_units": [8]},
        optimizer={"lr": 0.01},
        training={"epochs": 5, "batch_size": 128, "progress": False, **training},
    )


def test_a_1e12_label_trains_below_the_mean_predictors_rmse() -> None:
    train, test = _frame(1e12, seed=1), _frame(1e12, seed=2)
    model = _model("auto").fit(train)
    rmse = model.evaluate(test)["big"]["rmse"]
    baseline = float(np.sqrt(np.mean((test.big - train.big.mean()) ** 2)))
    assert rmse < 0.3 * baseline
    pred = model.predict(test)["big"].to_numpy()
    assert abs(pred.mean() / test.big.mean() - 1) < 0.05  # mapped back to the label's units


def test_the_scaling_is_saved_and_folders_without_it_are_read_unscaled(tmp_path: Path) -> None:
    train = _frame(1e3)
    scaled = _model("auto", epochs=1).fit(train)
    scaled.save(tmp_path / "scaled")
    state = json.loads((tmp_path / "scaled" / "preprocessor.json").read_text())
    assert set(state["label_scaling"]) == {"big"}
    assert state["label_scaling"]["big"]["shift"] == pytest.approx(train.big.mean())
    again = MultiTaskModel.load(tmp_path / "scaled")
    pd.testing.assert_frame_equal(again.predict(train.head(20)), scaled.predict(train.head(20)))

    # a folder written before label scaling existed has no "label_scaling": read unscaled
    del state["label_scaling"]
    old = Preprocessor(features=scaled.config.features, tasks=scaled.config.tasks)
    old.load_state_dict(state)
    assert (old.tasks["big"].label_shift, old.tasks["big"].label_scale) == (0.0, 1.0)
    raw = old.transform(train.head(3)).labels["big"].numpy()
    np.testing.assert_array_equal(raw, train.big.head(3).to_numpy(dtype=np.float32))


def test_a_loss_that_blows_up_names_the_label_scale() -> None:
    with pytest.raises(TrainingError) as err:
        _model("none", epochs=1).fit(_frame(1e20))
    message = str(err.value)
    assert "label column 'big' reaches" in message and "label_scaling" in message
