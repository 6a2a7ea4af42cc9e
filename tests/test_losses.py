"""Masked task losses against closed forms; tasks of one kind computed together give each
task's own loss."""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from polytask.losses import masked_loss, task_losses
from polytask.tasks import TaskSpec


def test_masked_loss_is_the_mean_over_labelled_rows() -> None:
    task = TaskSpec(type="regression")
    out = torch.tensor([1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([0.0, float("nan"), 1.0, float("nan")])
    # (1-0)^2 and (3-1)^2 over 2 labelled rows, not 4
    assert math.isclose(float(masked_loss(task, out, y)), (1 + 4) / 2)


def test_binary_loss_matches_the_closed_form() -> None:
    task = TaskSpec(type="binary")
    logit = torch.tensor([0.0, 2.0])
    y = torch.tensor([1.0, 0.0])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert math.isclose(float(masked_loss(task, logit, y)), expected, rel_tol=1e-6)


def test_an_all_nan_batch_gives_zero_loss_and_zero_gradient() -> None:
    tasks = {"a": TaskSpec(type="binary"), "b": TaskSpec(type="regression")}
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
    ce = TaskSpec(type="multiclass")
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0.0, float("nan")])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert math.isclose(float(masked_loss(ce, logits, y)), expected, rel_tol=1e-6)
    huber = TaskSpec(type="regression", loss="huber", huber_delta=1.0)
    # |err| = 3 > delta: delta * (|err| - delta / 2) = 2.5
    assert math.isclose(float(masked_loss(huber, torch.tensor([3.0]), torch.tensor([0.0]))), 2.5)


def _one_by_one(tasks, outputs, labels):
    return torch.stack([masked_loss(t, outputs[n], labels[n]) for n, t in tasks.items()])


def test_grouped_losses_equal_per_task_losses_in_task_order() -> None:
    tasks = {
        "a": TaskSpec(type="binary"),
        "r": TaskSpec(type="regression"),
        "m": TaskSpec(type="multiclass"),
        "b": TaskSpec(type="binary"),
        "h": TaskSpec(type="regression", loss="huber", huber_delta=0.5),
        "r2": TaskSpec(type="regression"),
    }
    n = 64
    g = torch.Generator().manual_seed(0)
    outputs = {
        k: torch.randn(n, generator=g, requires_grad=True) for k in ("a", "b", "r", "r2", "h")
    }
    outputs["m"] = torch.randn(n, 3, generator=g, requires_grad=True)
    labels = {
        "a": (torch.rand(n, generator=g) > 0.5).float(),
        "b": torch.full((n,), float("nan")),  # no labelled row: loss and gradient exactly 0
        "r": torch.randn(n, generator=g),
        "r2": torch.randn(n, generator=g),
        "h": 3 * torch.randn(n, generator=g),
        "m": torch.randint(0, 3, (n,), generator=g).float(),
    }
    for name in ("a", "r", "r2", "h", "m"):
        labels[name][torch.rand(n, generator=g) < 0.3] = float("nan")

    grouped = task_losses(tasks, outputs, labels)
    single = _one_by_one(tasks, outputs, labels)
    torch.testing.assert_close(grouped, single)
    assert grouped[3].item() == 0.0

    params = list(outputs.values())
    for k in range(len(tasks)):
        got = torch.autograd.grad(grouped[k], params, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(single[k], params, retain_graph=True, allow_unused=True)
        for a, b in zip(got, want, strict=True):
            a = torch.zeros_like(b) if a is None and b is not None else a
            b = torch.zeros_like(a) if b is None and a is not None else b
            if a is not None:
                torch.testing.assert_close(a, b)


def test_one_task_and_batched_gradients() -> None:
    """A single task gives a [1] vector; rows of the Jacobian (as gradient aggregators take
    it, with batched grad outputs) stay per task."""
    x = torch.randn(10, 2, requires_grad=True)
    labels = {"a": torch.ones(10), "b": torch.zeros(10)}
    one = task_losses({"a": TaskSpec(type="binary")}, {"a": x[:, 0]}, labels)
    assert one.shape == (1,)
    tasks = {"a": TaskSpec(type="binary"), "b": TaskSpec(type="binary")}
    losses = task_losses(tasks, {"a": x[:, 0], "b": x[:, 1]}, labels)
    (jac,) = torch.autograd.grad(losses, [x], torch.eye(2), is_grads_batched=True)
    assert torch.all(jac[0, :, 1] == 0) and torch.all(jac[1, :, 0] == 0)
    assert torch.all(jac[0, :, 0] != 0) and torch.all(jac[1, :, 1] != 0)


class _RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_interleaved_tasks_match_each_task_alone_without_an_index_tensor() -> None:
    """Binary tasks split by a regression task (and with different, unused huber_delta) are
    computed in one group, and put back in task order with no permutation tensor built from
    host data (a host-to-device copy every step on CUDA)."""
    tasks = {
        "a": TaskSpec(type="binary", huber_delta=0.5),
        "r": TaskSpec(type="regression"),
        "b": TaskSpec(type="binary", huber_delta=2.0),
        "h": TaskSpec(type="regression", loss="huber", huber_delta=0.5),
        "c": TaskSpec(type="binary"),
    }
    g = torch.Generator().manual_seed(1)
    outputs = {k: torch.randn(32, generator=g, requires_grad=True) for k in tasks}
    labels = {k: (torch.rand(32, generator=g) > 0.5).float() for k in ("a", "b", "c")}
    labels |= {k: 2 * torch.randn(32, generator=g) for k in ("r", "h")}
    with _RecordOps() as record:
        losses = task_losses(tasks, outputs, labels)
    alone = torch.stack([task_losses({n: t}, outputs, labels)[0] for n, t in tasks.items()])
    torch.testing.assert_close(losses, alone)
    assert record.ops.count("aten.binary_cross_entropy_with_logits.default") == 1
    assert not [op for op in record.ops if "lift_fresh" in op or "sort" in op or "index" in op]
    for k, name in enumerate(tasks):
        (got,) = torch.autograd.grad(losses[k], [outputs[name]], retain_graph=True)
        (want,) = torch.autograd.grad(alone[k], [outputs[name]], retain_graph=True)
        torch.testing.assert_close(got, want)
