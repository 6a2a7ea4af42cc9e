"""Random loss weighting (Lin et al., TMLR 2022): weights softmax(N(0, I)), seeded."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from polytask import MultiTaskModel
from polytask.config import TaskConfig
from polytask.weighting import RLW, NoParams

TASKS = {
    "a": TaskConfig(type="binary"),
    "b": TaskConfig(type="regression"),
    "c": TaskConfig(type="binary"),
}


def _weights(rlw: RLW) -> torch.Tensor:
    """The step's weights: the gradient of the total with respect to the losses."""
    losses = torch.tensor([0.3, 4.0, 1.0], requires_grad=True)
    (grad,) = torch.autograd.grad(rlw(losses), losses)
    return grad


def test_weights_are_a_softmax_of_standard_normal_draws() -> None:
    rlw = RLW(tasks=TASKS, params=NoParams())
    torch.manual_seed(7)
    expected = torch.softmax(torch.randn(3), dim=0)
    torch.manual_seed(7)
    torch.testing.assert_close(_weights(rlw), expected)


def test_weights_are_redrawn_every_step_and_average_to_uniform() -> None:
    rlw = RLW(tasks=TASKS, params=NoParams())
    torch.manual_seed(0)
    draws = torch.stack([_weights(rlw) for _ in range(2000)])
    assert bool((draws > 0).all())
    torch.testing.assert_close(draws.sum(1), torch.ones(2000))
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), torch.full((3,), 1 / 3), atol=0.02, rtol=0)


def test_same_training_seed_same_model(toy_frame: Any, toy_features: dict[str, list[str]]) -> None:
    def fit(seed: int) -> list[dict[str, Any]]:
        model = MultiTaskModel(
            features=toy_features,
            tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
            model={"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
            loss="rlw",
            training={"epochs": 2, "batch_size": 512, "progress": False, "seed": seed},
        ).fit(toy_frame)
        return [h["train_loss"] for h in model.history_]

    first = fit(0)
    assert fit(0) == first
    assert fit(1) != pytest.approx(first)
