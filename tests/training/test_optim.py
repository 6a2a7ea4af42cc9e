"""Per-group learning rates (the practitioners' lesson 2)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch

from polytask import ConfigError, MultiTaskModel


def _model(features: Any, tasks: Any, **optimizer: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model={"name": "mmoe", "num_experts": 3, "expert_units": [16], "tower_units": [8]},
        optimizer=optimizer,
        training={"epochs": 2, "batch_size": 256, "progress": False},
    )


def test_a_group_with_rate_zero_stays_bit_identical(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, lr=1e-2, group_lr={"towers.click": 0.0})
    model.fit(toy_frame)
    # Same seed, every rate 0: the network stays at the very same initial weights.
    start = _model(toy_features, toy_tasks, lr=0.0).fit(toy_frame).network_.state_dict()
    end = model.network_.state_dict()
    tower = [k for k in end if k.startswith("towers.click.")]
    others = [k for k in end if not k.startswith("towers.click.")]
    assert tower and all(torch.equal(start[k], end[k]) for k in tower)
    assert all(not torch.equal(start[k], end[k]) for k in others)


def test_effective_rates_are_in_the_history(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(
        toy_features, toy_tasks, lr=1e-3, group_lr={"towers.*": 3e-3, "gates": 1e-4}
    ).fit(toy_frame)
    lrs = model.history_[-1]["lr"]
    assert lrs["towers.click"] == lrs["towers.dwell"] == 3e-3
    assert lrs["gates"] == 1e-4
    assert lrs["experts"] == lrs["input"] == 1e-3


def test_first_matching_pattern_wins(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, group_lr={"towers.click": 5e-3, "towers.*": 1e-4}).fit(
        toy_frame, epochs=1
    )
    lrs = model.history_[-1]["lr"]
    assert lrs["towers.click"] == 5e-3 and lrs["towers.kind"] == 1e-4


def test_a_pattern_matching_no_group_lists_the_groups(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, group_lr={"tower.click": 1e-2})
    with pytest.raises(
        ConfigError, match=r"'tower.click' matches no parameter group.*towers.click"
    ):
        model.fit(toy_frame, epochs=1)


def test_scheduler_changes_the_rate(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(
        toy_features, toy_tasks, lr=1e-2, scheduler={"name": "step", "step_size": 1, "gamma": 0.5}
    ).fit(toy_frame, epochs=2)
    assert model.history_[0]["lr"]["input"] == 1e-2
    assert model.history_[1]["lr"]["input"] == 5e-3


@pytest.mark.parametrize("validation", [True, False])
def test_plateau_minimises_the_monitor_or_else_the_training_loss(
    toy_frame: pd.DataFrame,
    toy_features: Any,
    toy_tasks: Any,
    validation: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[float] = []
    step = torch.optim.lr_scheduler.ReduceLROnPlateau.step

    def recording(self: Any, metrics: float, *args: Any) -> None:
        seen.append(metrics)
        step(self, metrics, *args)

    monkeypatch.setattr(torch.optim.lr_scheduler.ReduceLROnPlateau, "step", recording)
    model = MultiTaskModel(
        features=toy_features,
        tasks=toy_tasks,
        model={"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        optimizer={"scheduler": {"name": "plateau"}},
        # click.auc is maximised: the scheduler sees -auc.
        training={"epochs": 2, "batch_size": 256, "monitor": "click.auc", "progress": False},
    )
    train, valid = toy_frame.iloc[:1500], toy_frame.iloc[1500:]
    model.fit(train, validation=valid if validation else None)
    if validation:
        assert seen == [-r["monitor"]["click.auc"] for r in model.history_]
    else:
        expected = [sum(r["train_loss"].values()) for r in model.history_]
        assert seen == pytest.approx(expected, rel=1e-6)
