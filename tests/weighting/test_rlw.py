"""Random loss weighting (Lin et al., TMLR 2022): weights softmax(N(0, I)), seeded."""

from __future__ import annotations

import json
from typing import Any

import torch

from polytask import MultiTaskModel
from polytask.tasks import TaskSpec
from polytask.weighting import RLW, NoParams
from polytask.weighting._random import own_seed

TASKS = {
    "a": TaskSpec(type="binary"),
    "b": TaskSpec(type="regression"),
    "c": TaskSpec(type="binary"),
}


def _weights(rlw: RLW) -> torch.Tensor:
    """The step's weights: the gradient of the total with respect to the losses."""
    losses = torch.tensor([0.3, 4.0, 1.0], requires_grad=True)
    (grad,) = torch.autograd.grad(rlw(losses), losses)
    return grad


def test_weights_are_a_softmax_of_standard_normal_draws() -> None:
    torch.manual_seed(7)
    rlw = RLW(tasks=TASKS, params=NoParams())
    expected = torch.softmax(torch.randn(3, generator=torch.Generator().manual_seed(own_seed())), 0)
    torch.testing.assert_close(_weights(rlw), expected)


def test_draws_do_not_depend_on_the_global_generator() -> None:
    """Dropout consuming the global generator differently (ranks with shares of different
    sizes) must not change the weights: every process draws the same ones."""
    torch.manual_seed(3)
    first, second = RLW(tasks=TASKS, params=NoParams()), RLW(tasks=TASKS, params=NoParams())
    a = _weights(first)
    torch.rand(1000)  # what a larger share's dropout would draw
    torch.testing.assert_close(_weights(second), a, rtol=0, atol=0)


def test_checkpoint_state_resumes_the_draws() -> None:
    torch.manual_seed(0)
    rlw = RLW(tasks=TASKS, params=NoParams())
    _weights(rlw)
    state = json.loads(json.dumps(rlw.state_for_checkpoint()))  # it goes into checkpoint.json
    expected = [_weights(rlw) for _ in range(3)]
    torch.manual_seed(99)
    resumed = RLW(tasks=TASKS, params=NoParams())
    resumed.load_checkpoint_state(state)
    for want in expected:
        torch.testing.assert_close(_weights(resumed), want, rtol=0, atol=0)


def test_weights_are_redrawn_every_step_and_average_to_uniform() -> None:
    torch.manual_seed(0)
    rlw = RLW(tasks=TASKS, params=NoParams())
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
    assert fit(1) != first
