"""GradNorm (Chen et al., ICML 2018): closed-form steps and the direction the weights move."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from polytask import MultiTaskModel
from polytask.tasks import TaskSpec
from polytask.weighting import GradNorm, GradNormParams

TASKS = {"ctr": TaskSpec(type="binary"), "dwell": TaskSpec(type="regression")}


def _gradnorm(alpha: float = 1.5) -> GradNorm:
    return GradNorm(tasks=TASKS, params=GradNormParams(alpha=alpha))


def _weight_grad(gradnorm: GradNorm, losses: list[float], jac: torch.Tensor) -> torch.Tensor:
    """Gradient of the objective with respect to w (no model: losses are leaves)."""
    leaf = torch.tensor(losses, requires_grad=True)
    update = gradnorm.combine(leaf, jac)
    (grad,) = torch.autograd.grad(update.objective, gradnorm.task_weights)
    return grad


def test_one_step_in_closed_form() -> None:
    """Unit task gradients, L(0) = (1, 1), L(t) = (0.5, 0.9): r = (5/7, 9/7), G = (1, 1),
    target = r^alpha, so dL_grad/dw = sign(G - target) * ||g|| = (+1, -1): the slower task
    (dwell) gains weight."""
    gradnorm = _gradnorm()
    jac = torch.eye(2)
    _weight_grad(gradnorm, [1.0, 1.0], jac)  # sets L(0)
    assert gradnorm.initial_losses.tolist() == [1.0, 1.0]
    assert (5 / 7) ** 1.5 < 1 < (9 / 7) ** 1.5
    grad = _weight_grad(gradnorm, [0.5, 0.9], jac)
    assert grad.tolist() == [1.0, -1.0]

    optimizer = torch.optim.SGD(gradnorm.parameters(), lr=0.1)
    gradnorm.task_weights.grad = grad
    optimizer.step()
    gradnorm.after_step()
    assert gradnorm.weights() == pytest.approx({"ctr": 0.9, "dwell": 1.1})
    assert gradnorm.report() == pytest.approx({"weight.ctr": 0.9, "weight.dwell": 1.1})


def test_gradient_norms_are_of_the_weighted_losses() -> None:
    """With w = (2, 0.5) and ||g|| = (1, 4), G = w ||g|| = (2, 2): equal norms, equal rates,
    no pull; the direction for the last shared layer is w @ J."""
    gradnorm = _gradnorm()
    with torch.no_grad():
        gradnorm.task_weights.copy_(torch.tensor([2.0, 0.5]))
    jac = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert _weight_grad(gradnorm, [1.0, 1.0], jac).tolist() == [0.0, 0.0]
    update = gradnorm.combine(torch.tensor([1.0, 1.0]), jac)
    assert update.direction.tolist() == [2.0, 2.0]
    # The objective's value: sum_k w_k L_k (+ L_grad = 0).
    assert float(update.objective.detach()) == pytest.approx(2.5)


def test_alpha_zero_pulls_toward_equal_norms() -> None:
    gradnorm = _gradnorm(alpha=0.0)
    jac = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    _weight_grad(gradnorm, [1.0, 1.0], jac)
    # G = (3, 1), target = mean = 2 whatever the rates: shrink ctr, grow dwell.
    assert _weight_grad(gradnorm, [0.1, 0.9], jac).tolist() == [3.0, -1.0]


def test_weights_renormalize_to_the_number_of_tasks() -> None:
    gradnorm = _gradnorm()
    with torch.no_grad():
        gradnorm.task_weights.copy_(torch.tensor([3.0, 1.0]))
    gradnorm.after_step()
    assert gradnorm.task_weights.tolist() == [1.5, 0.5]
    with torch.no_grad():
        gradnorm.task_weights.copy_(torch.tensor([-1.0, 2.0]))
    gradnorm.after_step()  # a weight at or below zero is floored, never negative
    w = gradnorm.task_weights.tolist()
    assert w[0] > 0 and sum(w) == pytest.approx(2.0)


def test_initial_loss_waits_for_a_labelled_batch() -> None:
    gradnorm = _gradnorm()
    jac = torch.eye(2)
    _weight_grad(gradnorm, [0.0, 2.0], jac)  # no ctr label in the first batch
    assert math.isnan(gradnorm.initial_losses[0]) and gradnorm.initial_losses[1] == 2.0
    _weight_grad(gradnorm, [0.7, 1.0], jac)
    assert gradnorm.initial_losses.tolist() == pytest.approx([0.7, 2.0])
    state = gradnorm.state_for_checkpoint()
    resumed = _gradnorm()
    resumed.load_checkpoint_state(state)
    assert resumed.initial_losses.tolist() == pytest.approx([0.7, 2.0])
    with pytest.raises(ValueError, match="expected 2 initial losses"):
        resumed.load_checkpoint_state({"initial_losses": [1.0]})


@pytest.mark.parametrize(
    ("norms", "expected"),
    [((1.0, 1.0), (0.4, 1.6)), ((1.0, 2.0), (2 / 3, 4 / 3))],
)
def test_weights_settle_where_gradient_norms_follow_the_training_rates(
    norms: tuple[float, float], expected: tuple[float, float]
) -> None:
    """With alpha = 1 the targets mean(G) r_k sum to sum(G), so the fixed point has
    G_k = w_k ||g_k|| proportional to r_k exactly. L(t)/L(0) = (0.25, 1): r = (0.4, 1.6).
    Equal norms: w = r = (0.4, 1.6). Norms (1, 2): w_1 / (2 w_2) = 0.4 / 1.6 and
    w_1 + w_2 = 2, so w = (2/3, 4/3). Slow dwell ends with most of the weight either way."""
    gradnorm = _gradnorm(alpha=1.0)
    jac = torch.diag(torch.tensor(norms))
    optimizer = torch.optim.SGD(gradnorm.parameters(), lr=0.01)
    gradnorm.combine(torch.tensor([1.0, 1.0]), jac)  # L(0)
    for _ in range(300):
        update = gradnorm.combine(torch.tensor([0.25, 1.0]), jac)
        optimizer.zero_grad()
        (grad,) = torch.autograd.grad(update.objective, gradnorm.task_weights)
        gradnorm.task_weights.grad = grad
        optimizer.step()
        gradnorm.after_step()
        assert float(gradnorm.task_weights.detach().sum()) == pytest.approx(2.0, rel=1e-6)
    assert gradnorm.task_weights.tolist() == pytest.approx(list(expected), abs=0.02)


def test_estimator_trains_the_weights_in_their_own_group(
    toy_frame: Any, toy_features: dict[str, list[str]]
) -> None:
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [8]},
        loss={"weighting": "gradnorm", "alpha": 1.0},
        optimizer={"lr": 0.01, "group_lr": {"weighting": 0.05}},
        training={"epochs": 2, "batch_size": 256, "progress": False},
    ).fit(toy_frame)
    groups = {g["name"]: g for g in model.optimizer_.param_groups}
    assert groups["weighting"]["lr"] == 0.05
    assert groups["weighting"]["params"] == [model.weighting_.task_weights]
    last = model.history_[-1]
    assert last["weight.click"] + last["weight.dwell"] == pytest.approx(2.0, rel=1e-5)
    assert last["weight.click"] != 1.0
