"""A NaN or inf loss stops training with a message that says where and how to go on, or with
``training.on_nan: skip`` costs one skipped batch; non-finite inputs never get that far."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask import MultiTaskModel, TrainingError
from polytask import estimator as estimator_module
from polytask.config import load_run_file
from polytask.run import run_training
from polytask.training import trainer
from polytask.weighting import Weighting

FEATURES = {"categorical": ["color", "size"], "numeric": ["x", "z"]}
# unscaled, so a huge label reaches the loss as it is (label scaling would tame it)
TASKS = {"click": {"type": "binary"}, "dwell": {"type": "regression", "label_scaling": "none"}}
HUGE = 1e30  # fits float32; its square, in the MSE, does not

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(loss: str = "sum", **training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        loss=loss,
        training={"epochs": 2, "batch_size": 128, "progress": False, **training},
    )


@pytest.fixture
def poisoned(toy_frame: pd.DataFrame) -> pd.DataFrame:
    """800 rows, row 100 with a regression label whose squared error is inf."""
    frame = toy_frame.iloc[:800].drop(columns=["kind"]).copy()
    frame.loc[100, "dwell"] = HUGE
    return frame


def test_an_inf_loss_names_task_and_step_and_says_there_is_no_checkpoint(
    poisoned: pd.DataFrame,
) -> None:
    with pytest.raises(TrainingError) as err:
        _model(batch_size=1000).fit(poisoned)  # one batch per epoch: the first step fails
    message = str(err.value)
    assert message.startswith("task 'dwell': loss is inf at step 1 (epoch 1, batch 1 of 1)")
    assert "no checkpoint (set training.checkpoint_every to keep one)" in message
    assert "training.on_nan: skip" in message


def test_a_non_finite_loss_names_the_last_good_checkpoint(
    toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    # Alternate training with round-robin sampling: step 1 trains click, step 2 dwell, whose
    # every label is huge.
    frame = toy_frame.drop(columns=["kind"])
    data = {
        "click": frame.iloc[:600].drop(columns=["dwell"]),
        "dwell": frame.iloc[600:900].drop(columns=["click"]).assign(dwell=HUGE),
    }
    model = _model("uncertainty", schedule="alternate", task_sampling="round_robin")
    with pytest.raises(TrainingError) as err:
        model.fit(data, checkpoint_dir=tmp_path, checkpoint_every=1)
    message = str(err.value)
    assert message.startswith("task 'dwell': loss is inf at step 2 (epoch 1, batch 2 of 8)")
    assert f"last good checkpoint: {tmp_path / 'step-000000001'}" in message


def test_skip_mode_skips_the_bad_batch_of_each_epoch_and_counts_it(
    poisoned: pd.DataFrame,
) -> None:
    model = _model(on_nan="skip", epochs=3).fit(poisoned)
    assert [r.get("skipped_batches") for r in model.history_] == [1, 1, 1]
    assert model.skipped_batches_ == 3
    for name, tensor in model.network_.state_dict().items():
        assert bool(torch.isfinite(tensor).all()), name
    for record in model.history_:
        assert all(np.isfinite(v) for v in record["train_loss"].values())


def test_skipped_batches_reach_metrics_json(poisoned: pd.DataFrame, tmp_path: Path) -> None:
    poisoned.to_csv(tmp_path / "data.csv", index=False)
    run = {
        "data": {"train": "data.csv"},
        "features": FEATURES,
        "tasks": TASKS,
        "model": {"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        "training": {"epochs": 2, "batch_size": 128, "progress": False, "on_nan": "skip"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    cfg, base = load_run_file(tmp_path / "run.yaml")
    run_training(cfg, base, tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["skipped_batches"] == 2


def test_nan_and_inf_inputs_train_with_finite_losses(toy_frame: pd.DataFrame) -> None:
    frame = toy_frame.iloc[:800].drop(columns=["kind"]).copy()
    frame.loc[::7, "x"] = np.nan
    frame.loc[::11, "z"] = np.inf
    frame.loc[::13, "z"] = -np.inf
    frame.loc[::17, "color"] = None
    model = _model().fit(frame)
    assert model.skipped_batches_ == 0
    for record in model.history_:
        assert all(np.isfinite(v) for v in record["train_loss"].values())


class _ExplodesOnce(Weighting):
    """Sum of the task losses, but inf on the second call: a weighting whose total is not
    finite although every task loss is (what a runaway learned weight would give)."""

    def __init__(self, *, tasks: Any) -> None:
        super().__init__(tasks=tasks)
        self.calls = 0

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return losses.sum() + (float("inf") if self.calls == 2 else 0.0)


@pytest.fixture
def exploding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        estimator_module, "build_weighting", lambda cfg: _ExplodesOnce(tasks=cfg.tasks)
    )


def test_a_non_finite_total_from_finite_losses_is_an_error_not_a_silent_skip(
    toy_frame: pd.DataFrame, exploding: None
) -> None:
    frame = toy_frame.iloc[:800].drop(columns=["kind"])
    with pytest.raises(TrainingError) as err:
        _model().fit(frame)
    message = str(err.value)
    assert message.startswith(
        "the weighted total (_ExplodesOnce) is inf although every task loss is finite (["
    )
    assert "the update was not applied at step 2 (epoch 1, batch 2 of 7)" in message
    assert "training.on_nan: skip" in message


def test_skip_mode_counts_a_step_whose_total_was_not_finite(
    toy_frame: pd.DataFrame, exploding: None
) -> None:
    frame = toy_frame.iloc[:800].drop(columns=["kind"])
    model = _model(on_nan="skip").fit(frame)
    assert model.skipped_batches_ == 1
    assert [r.get("skipped_batches") for r in model.history_] == [1, None]
    for record in model.history_:
        assert all(np.isfinite(v) for v in record["train_loss"].values())


def test_a_nan_monitor_value_is_never_the_best_and_never_blocks_a_later_one(
    toy_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. an AUC over a validation split with one class: NaN in epoch 1 (and 3), finite after.
    values = iter([float("nan"), 0.5, float("nan"), 0.4])
    monkeypatch.setattr(trainer, "monitor_value", lambda metrics, monitor: next(values))
    frame = toy_frame.iloc[:800].drop(columns=["kind"])
    model = _model(epochs=4, monitor="loss").fit(frame.iloc[:600], validation=frame.iloc[600:])
    assert [r["monitor"]["loss"] for r in model.history_][1::2] == [0.5, 0.4]
    assert model.best_epoch_ == 4
