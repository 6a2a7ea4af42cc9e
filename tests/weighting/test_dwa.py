"""DWA (Liu et al., CVPR 2019) on hand-computed loss histories."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torchjd.scalarization import DWA as TorchjdDWA

from polytask import MultiTaskModel
from polytask.tasks import TaskSpec
from polytask.weighting import DWA, DWAParams

TASKS = {"ctr": TaskSpec(type="binary"), "dwell": TaskSpec(type="regression")}
EPOCH_MEANS = [[1.0, 2.0], [0.5, 1.8], [0.4, 0.9]]


def _dwa(temperature: float = 2.0) -> DWA:
    return DWA(tasks=TASKS, params=DWAParams(temperature=temperature))


def _weights(dwa: DWA) -> list[float]:
    return [dwa.report()["weight.ctr"], dwa.report()["weight.dwell"]]


def test_weights_are_one_for_the_first_two_epochs() -> None:
    dwa = _dwa()
    assert _weights(dwa) == [1.0, 1.0]
    dwa.epoch_end(torch.tensor(EPOCH_MEANS[0]))
    assert _weights(dwa) == [1.0, 1.0]
    losses = torch.tensor([0.3, 5.0])
    assert float(dwa(losses)) == pytest.approx(5.3)


def test_weights_follow_the_closed_form() -> None:
    dwa = _dwa()
    dwa.epoch_end(torch.tensor(EPOCH_MEANS[0]))
    dwa.epoch_end(torch.tensor(EPOCH_MEANS[1]))
    # Epoch 3: w = (0.5/1.0, 1.8/2.0) = (0.5, 0.9); lambda = 2 softmax(w / 2).
    third = [2 / (1 + math.exp(0.2)), 2 * math.exp(0.2) / (1 + math.exp(0.2))]
    assert _weights(dwa) == pytest.approx(third, rel=1e-6)
    assert float(dwa(torch.tensor([1.0, 3.0]))) == pytest.approx(third[0] + 3 * third[1], rel=1e-6)
    # Epoch 4: w = (0.4/0.5, 0.9/1.8) = (0.8, 0.5): ctr now fell more slowly and gains weight.
    dwa.epoch_end(torch.tensor(EPOCH_MEANS[2]))
    fourth = [2 / (1 + math.exp(-0.15)), 2 * math.exp(-0.15) / (1 + math.exp(-0.15))]
    assert _weights(dwa) == pytest.approx(fourth, rel=1e-6)
    assert sum(_weights(dwa)) == pytest.approx(2.0)


def test_temperature_flattens_the_weights() -> None:
    sharp, flat = _dwa(0.1), _dwa(100.0)
    for dwa in (sharp, flat):
        for means in EPOCH_MEANS[:2]:
            dwa.epoch_end(torch.tensor(means))
    assert _weights(flat) == pytest.approx([1.0, 1.0], abs=3e-3)
    assert _weights(sharp)[1] > 1.95  # exp(4)/(1+exp(4)) * 2


def test_matches_torchjd_dwa() -> None:
    """Same weights as torchjd's scalarizer fed the same epoch means (read through autograd)."""
    ours, theirs = _dwa(), TorchjdDWA(temperature=2.0)
    for means in EPOCH_MEANS:
        ours.epoch_end(torch.tensor(means))
        theirs(torch.tensor(means))
        theirs.step()
        probe = torch.ones(2, requires_grad=True)
        theirs(probe).backward()
        assert probe.grad is not None
        assert _weights(ours) == pytest.approx(probe.grad.tolist(), rel=1e-6)
        theirs._loss_sum, theirs._n_batches = None, 0  # forget the probe


def test_a_task_with_zero_loss_has_a_steady_rate() -> None:
    dwa = _dwa()
    dwa.epoch_end(torch.tensor([0.0, 2.0]))
    dwa.epoch_end(torch.tensor([0.0, 1.0]))
    # ctr: no rate (treated as 1); dwell: 0.5.
    expected = [2 / (1 + math.exp(-0.25)), 2 * math.exp(-0.25) / (1 + math.exp(-0.25))]
    assert _weights(dwa) == pytest.approx(expected, rel=1e-6)


def test_checkpoint_round_trip_and_bad_state() -> None:
    dwa = _dwa()
    for means in EPOCH_MEANS:
        dwa.epoch_end(torch.tensor(means))
    state = dwa.state_for_checkpoint()
    assert list(state) == ["history"]
    assert state["history"] == [pytest.approx(EPOCH_MEANS[1]), pytest.approx(EPOCH_MEANS[2])]
    resumed = _dwa()
    resumed.load_checkpoint_state(state)
    assert _weights(resumed) == pytest.approx(_weights(dwa))
    with pytest.raises(ValueError, match="expected at most 2 epochs of 2 mean losses"):
        resumed.load_checkpoint_state({"history": [[1.0, 2.0, 3.0]]})


def test_history_reports_the_weights(toy_frame: Any, toy_features: dict[str, list[str]]) -> None:
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "shared_bottom", "shared_units": [16], "tower_units": [8]},
        loss={"weighting": "dwa", "temperature": 1.5},
        training={"epochs": 3, "batch_size": 256, "progress": False},
    ).fit(toy_frame)
    history = model.history_
    # Each record holds the weights DWA will use in the next epoch.
    assert [history[0]["weight.click"], history[0]["weight.dwell"]] == [1.0, 1.0]
    means = [[h["train_loss"]["click"], h["train_loss"]["dwell"]] for h in history]
    rates = torch.tensor(means[1], dtype=torch.float64) / torch.tensor(means[0])
    expected = 2 * torch.softmax(rates / 1.5, dim=0)
    assert [history[1]["weight.click"], history[1]["weight.dwell"]] == pytest.approx(
        expected.tolist(), rel=1e-5
    )
