"""`polytask.training.TrainStep` for weightings that need per-task gradients.

(Kept beside the weighting tests, whose fixtures it shares.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torchjd import aggregation as agg

from polytask.data import LABEL_PREFIX
from polytask.losses import task_losses
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec
from polytask.training import StepResult, TrainStep
from polytask.training import _aggregate as aggregate_module
from polytask.training import step as step_module
from polytask.training._aggregate import jacobian_parameters, task_jacobian
from polytask.weighting import Aggregation, GradNorm, GradNormParams, Weighting

MODELS = ["shared_bottom", "moe", "mmoe"]


def aggregate_step(
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskSpec],
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
) -> StepResult:
    return TrainStep(model, weighting, tasks, optimizer)(batch)


def _losses(model: MultiTaskNet, tasks: dict[str, TaskSpec], batch: dict[str, Any]) -> Any:
    labels = {n: batch[LABEL_PREFIX + n] for n in tasks}
    return task_losses(tasks, model(batch), labels)


def _grads(model: MultiTaskNet) -> dict[str, torch.Tensor]:
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


def _is_tower(name: str) -> bool:
    return name.startswith("towers.")


@pytest.mark.parametrize("model_name", MODELS)
def test_jacobian_rows_are_the_task_loss_gradients(
    model_name: str,
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    model = make_model(model_name)
    batch = two_task_data.slice(0, 64)
    losses = _losses(model, two_tasks, batch)
    params = model.shared_parameters()
    jac = task_jacobian(losses, params)
    assert jac.shape == (2, sum(p.numel() for p in params))
    for k in range(2):
        grads = torch.autograd.grad(losses[k], params, retain_graph=True, allow_unused=True)
        row = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, params, strict=True)
            ]
        )
        torch.testing.assert_close(jac[k], row, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_mean_and_sum_aggregators_reproduce_the_joint_backward(
    model_name: str,
    reduce: str,
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    """The Jacobian path is exact: with the Sum aggregator every ``.grad`` is that of
    ``sum_k L_k``; with Mean the shared ones are those of ``mean_k L_k`` and the towers keep
    their plain gradients (those of ``sum_k L_k``). Gated models included: the gates read the
    shared input, bypassing the experts, and no gradient path may be lost."""
    model = make_model(model_name)
    reference = copy.deepcopy(model)
    batch = two_task_data.slice(0, 64)

    aggregator = agg.Sum() if reduce == "sum" else agg.Mean()
    weighting = Aggregation(tasks=two_tasks, aggregator=aggregator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # keeps the .grad it was given
    aggregate_step(model, weighting, two_tasks, optimizer, batch)

    losses = _losses(reference, two_tasks, batch)
    shared_total = losses.sum() if reduce == "sum" else losses.mean()
    shared_names = {id(p) for p in reference.shared_parameters()}
    shared = [p for p in reference.parameters() if id(p) in shared_names]
    towers = [p for p in reference.parameters() if id(p) not in shared_names]
    torch.autograd.backward(shared_total, inputs=shared, retain_graph=True)
    torch.autograd.backward(losses.sum(), inputs=towers)

    got, want = _grads(model), _grads(reference)
    assert any(_is_tower(n) for n in got) and any(not _is_tower(n) for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)
    gates = [n for n in got if n.startswith("gates.")]
    assert all(float(got[n].abs().sum()) > 0 for n in gates)


def test_shared_update_is_the_aggregation_of_the_jacobian(
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    model = make_model("mmoe")
    batch = two_task_data.slice(0, 64)
    reference = copy.deepcopy(model)
    weighting = Aggregation(tasks=two_tasks, aggregator=agg.MGDA())
    aggregate_step(model, weighting, two_tasks, torch.optim.SGD(model.parameters(), lr=0.0), batch)

    losses = _losses(reference, two_tasks, batch)
    jac = task_jacobian(losses, reference.shared_parameters())
    expected = agg.MGDA()(jac)
    got = torch.cat([p.grad.flatten() for p in model.shared_parameters()])  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gradnorm_step_gradients(
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    """Model: the gradient of ``sum_k w_k L_k`` everywhere (the last shared layer included);
    ``w``: the gradient of ``sum_k |w_k n_k - mean(w n) r_k^alpha|``, target held fixed."""
    model = make_model("shared_bottom")
    reference = copy.deepcopy(model)
    weighting = GradNorm(tasks=two_tasks, params=GradNormParams(alpha=1.5))
    with torch.no_grad():
        weighting.task_weights.copy_(torch.tensor([1.4, 0.6]))
    weighting.initial_losses.copy_(torch.tensor([2.0, 40.0]))
    params = [*model.parameters(), *weighting.parameters()]
    batch = two_task_data.slice(0, 64)
    aggregate_step(model, weighting, two_tasks, torch.optim.SGD(params, lr=0.0), batch)

    w = torch.tensor([1.4, 0.6])
    losses = _losses(reference, two_tasks, batch)
    last = reference.last_shared_layer()
    norms = torch.stack(
        [
            torch.cat(
                [g.flatten() for g in torch.autograd.grad(losses[k], last, retain_graph=True)]
            ).norm()
            for k in range(2)
        ]
    )
    (w * losses).sum().backward()
    for (name, p), (_, q) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)

    ratio = losses.detach() / torch.tensor([2.0, 40.0])
    r = ratio / ratio.mean()
    g = w * norms
    target = g.mean() * r**1.5
    expected_w_grad = torch.sign(g - target) * norms
    torch.testing.assert_close(weighting.task_weights.grad, expected_w_grad, rtol=1e-5, atol=1e-6)
    assert jacobian_parameters(model, weighting) == model.last_shared_layer()


def test_non_finite_loss_skips_the_update(
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    model = make_model("mmoe")
    before = copy.deepcopy(model.state_dict())
    batch = dict(two_task_data.slice(0, 64))
    batch[LABEL_PREFIX + "dwell"] = batch[LABEL_PREFIX + "dwell"].clone()
    batch[LABEL_PREFIX + "dwell"][0] = float("inf")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    weighting = Aggregation(tasks=two_tasks, aggregator=agg.UPGrad())
    done = aggregate_step(model, weighting, two_tasks, optimizer, batch)
    assert not done.applied
    assert torch.isfinite(done.losses).tolist() == [True, False]
    assert done.problem(list(two_tasks)) == "task 'dwell': loss is inf"
    assert not optimizer.state
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class _NaNAggregator(agg.Aggregator):
    def forward(self, matrix: torch.Tensor, /) -> torch.Tensor:
        return torch.full_like(matrix[0], float("nan"))


def test_non_finite_update_skips_the_update(
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
) -> None:
    model = make_model("shared_bottom")
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    weighting = Aggregation(tasks=two_tasks, aggregator=_NaNAggregator())
    done = aggregate_step(model, weighting, two_tasks, optimizer, two_task_data.slice(0, 64))
    assert not done.applied
    assert done.problem(list(two_tasks)).startswith("the update direction (_NaNAggregator) is nan")
    assert not optimizer.state
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    ("name", "expected"), [("sum", 0), ("dwa", 0), ("upgrad", 4), ("gradnorm", 4)]
)
def test_the_step_combines_gradients_when_the_weighting_needs_them(
    name: str,
    expected: int,
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
    build_weighting: Callable[..., Weighting],
    train_briefly: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = TrainStep._combine_gradients

    def spy(self: TrainStep, batch: Any) -> StepResult:
        calls.append(1)
        return original(self, batch)

    monkeypatch.setattr(step_module.TrainStep, "_combine_gradients", spy)
    train_briefly(
        make_model("shared_bottom"), build_weighting(name, two_tasks), two_task_data, epochs=1
    )
    assert len(calls) == expected  # 256 rows in batches of 64


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``bool``, ``float``, ``int``, ``.item()`` and ``.tolist()`` of a tensor from now
    on: the reads that wait for the device."""
    reads: list[str] = []
    for name in ("__bool__", "__float__", "__int__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return reads


@pytest.mark.parametrize(
    ("name", "per_step"), [("sum", 1), ("uncertainty", 1), ("upgrad", 2), ("gradnorm", 2)]
)
def test_each_step_reads_the_device_once_or_twice_for_gradient_weightings(
    name: str,
    per_step: int,
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
    build_weighting: Callable[..., Weighting],
    train_briefly: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step reads whether its losses and update are finite once (gradient weightings: once
    more, before the Jacobian); the loop reads the losses once per epoch (two epochs here)."""
    model, weighting = make_model("shared_bottom"), build_weighting(name, two_tasks)
    reads = _count_host_reads(monkeypatch)
    train_briefly(model, weighting, two_task_data, epochs=2)
    steps = [r for r in reads if r == "__bool__"]
    assert len(steps) == per_step * 2 * 4, reads  # 2 epochs of 4 batches
    assert len(reads) - len(steps) <= 2 * 2, reads  # per epoch: history and report


def test_the_parameter_split_is_computed_once_per_fit(
    make_model: Callable[..., MultiTaskNet],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
    build_weighting: Callable[..., Weighting],
    train_briefly: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def spy(*args: Any) -> list[torch.nn.Parameter]:
        calls.append(1)
        return jacobian_parameters(*args)

    monkeypatch.setattr(aggregate_module, "jacobian_parameters", spy)
    model, weighting = make_model("shared_bottom"), build_weighting("gradnorm", two_tasks)
    train_briefly(model, weighting, two_task_data, epochs=2)  # 8 steps
    assert len(calls) == 1
    model.towers["click"].requires_grad_(False)  # a second fit sees what changed since
    before = {k: v.clone() for k, v in model.towers["click"].state_dict().items()}
    train_briefly(model, weighting, two_task_data, epochs=1)
    assert len(calls) == 2
    for k, v in model.towers["click"].state_dict().items():
        assert torch.equal(v, before[k]), k
