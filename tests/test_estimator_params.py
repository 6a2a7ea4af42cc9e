"""scikit-learn conventions: get_params / set_params, and sklearn.base.clone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from polytask import ConfigError, MultiTaskModel, NotFittedError


def _model(toy_features: Any, toy_tasks: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=toy_features,
        tasks=toy_tasks,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        training={"epochs": 1, "batch_size": 256, "progress": False},
    )


@pytest.mark.parametrize("fitted", [False, True])
def test_clone_is_an_unfitted_copy_with_the_same_settings(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, fitted: bool
) -> None:
    model = _model(toy_features, toy_tasks)
    if fitted:
        model.fit(toy_frame)
    copy = clone(model)
    assert copy is not model
    assert copy.config == model.config
    assert copy.get_params().keys() == model.get_params().keys()
    with pytest.raises(NotFittedError):
        copy.predict(toy_frame.head(3))
    # same settings, same seed: the copy trains to the same model
    copy.fit(toy_frame)
    reference = _model(toy_features, toy_tasks).fit(toy_frame)
    pd.testing.assert_frame_equal(copy.predict(toy_frame), reference.predict(toy_frame))


def test_set_params_validates_and_changes_the_settings(toy_features: Any, toy_tasks: Any) -> None:
    model = _model(toy_features, toy_tasks)
    assert model.set_params(training={"epochs": 3, "progress": False}) is model
    assert model.config.training.epochs == 3
    assert model.get_params()["training"] == {"epochs": 3, "progress": False}
    assert clone(model).config.training.epochs == 3
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        model.set_params(training={"epochs": 0})
    assert model.config.training.epochs == 3  # a refused change leaves the model as it was
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['epochs'\]"):
        model.set_params(epochs=3)
    assert np.isfinite(model.config.optimizer.lr)
