"""Every registered model through the estimator: fit, save, load and predict on raw rows (the
network-level contract is tests/models/test_contract.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel
from polytask.models import MODELS

# Models whose architecture fixes the tasks they serve declare them here.
FUNNEL_TASKS: dict[str, Any] = {
    "ctr": {"type": "binary", "label": "click"},
    "ctcvr": {"type": "binary", "label": "buy"},
}
SPECIAL_TASKS = {"esmm": FUNNEL_TASKS, "escm2": FUNNEL_TASKS}
SMALL: dict[str, dict[str, Any]] = {
    "shared_bottom": {"shared_units": [16]},
    "moe": {"num_experts": 3, "expert_units": [16]},
    "mmoe": {"num_experts": 3, "expert_units": [16]},
    "adatt": {"expert_units": [16]},
    "stem": {"expert_units": [16]},
    "pepnet": {"gate_units": 8},
    "home": {"expert_units": [16]},
    "aitm": {"encoder_units": [16]},
    "cross_stitch": {"column_units": [16]},
    "dselect_k": {"num_experts": 3, "expert_units": [16]},
}


# The sequence models read sentences: tests/tasks/test_tag.py fits, saves, loads and
# predicts them.
@pytest.fixture(params=sorted(n for n, e in MODELS.items() if not e.sequence))
def model_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fitted(name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any) -> Any:
    df = toy_frame.copy()
    df["buy"] = ((df.click == 1) & (df.z > 1)).astype(int)
    tasks = SPECIAL_TASKS.get(name, toy_tasks)
    model = MultiTaskModel(
        features=toy_features,
        tasks=tasks,
        model={"name": name, "tower_units": [8], **SMALL.get(name, {})},
        training={"epochs": 1, "batch_size": 256, "progress": False},
    ).fit(df)
    return model, df, tasks


def test_save_load_gives_identical_predictions(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, tmp_path: Any
) -> None:
    model, df, _ = _fitted(model_name, toy_frame, toy_features, toy_tasks)
    before = model.predict(df)
    model.save(tmp_path / "m")
    after = MultiTaskModel.load(tmp_path / "m").predict(df)
    pd.testing.assert_frame_equal(before, after)


def test_predictions_keep_input_order_and_index(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model, df, tasks = _fitted(model_name, toy_frame, toy_features, toy_tasks)
    shuffled = df.sample(frac=1.0, random_state=1)
    whole = model.predict(df)
    part = model.predict(shuffled)
    assert list(part.index) == list(shuffled.index)
    pd.testing.assert_frame_equal(part.loc[df.index], whole, check_exact=False, atol=1e-6)
    for name, spec in tasks.items():
        if spec["type"] == "binary":
            assert np.all((part[name] >= 0) & (part[name] <= 1))
