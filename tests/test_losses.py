from __future__ import annotations

import math

import torch

from polytask.config import TaskConfig
from polytask.losses import masked_loss, task_losses


def test_masked_loss_is_the_mean_over_labelled_rows() -> None:
    task = TaskConfig(type="regression")
    out = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([0.0, float("nan"), 1.0, float("nan")])
    # (1-0)^2 and (3-1)^2 over 2 labelled rows, not 4
    assert math.isclose(float(masked_loss(task, out, y)), (1 + 4) / 2)


def test_binary_loss_matches_the_closed_form() -> None:
    task = TaskConfig(type="binary")
    logit = torch.tensor([0.0, 2.0])
    y = torch.tensor([1.0, 0.0])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert math.isclose(float(masked_loss(task, logit, y)), expected, rel_tol=1e-6)


def test_an_all_nan_batch_gives_zero_loss_and_zero_gradient() -> None:
    tasks = {"a": TaskConfig(type="binary"), "b": TaskConfig(type="regression")}
    w = torch.ones(3, requires_grad=True)
    x = torch.randn(5, 3)
    outputs = {"a": x @ w, "b": x @ w * 2}
    labels = {"a": torch.full((5,), float("nan")), "b": torch.randn(5)}
    losses = task_losses(tasks, outputs, labels)
    assert float(losses[0]) == 0.0
    (grad_a,) = torch.autograd.grad(losses[0], w, retain_graph=True)
    assert torch.count_nonzero(grad_a) == 0
    (grad_b,) = torch.autograd.grad(losses[1], w)
    assert torch.count_nonzero(grad_b) > 0


def test_multiclass_and_huber_losses() -> None:
    ce = TaskConfig(type="multiclass")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0.0, float("nan")])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert math.isclose(float(masked_loss(ce, logits, y)), expected, rel_tol=1e-6)
    huber = TaskConfig(type="regression", loss="huber", huber_delta=1.0)
    # |err| = 3 > delta: delta * (|err| - delta / 2) = 2.5
    assert math.isclose(float(masked_loss(huber, torch.tensor([3.0]), torch.tensor([0.0]))), 2.5)
