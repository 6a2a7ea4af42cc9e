"""The contract every registered weighting keeps (STYLE rule 7), run against all of them.

- it builds from its defaults, and its params schema rejects an unknown key;
- its outputs are finite, also for a task whose gradient is zero (no label in the batch) and
  for linearly dependent task gradients;
- it never calls backward() or torch.autograd.grad() nor steps an optimizer (STYLE rule 2);
- a short training run on a two-task problem lowers both task losses;
- permuting the tasks permutes what it reports and leaves the update unchanged (exactly for
  deterministic methods, in expectation for the random ones);
- its state survives a save/load and a checkpoint round trip.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
import torch

from polytask.config import LossConfig
from polytask.tasks import TaskSpec
from polytask.training import TrainStep
from polytask.weighting import WEIGHTINGS, GradientWeighting, Weighting

pytestmark = pytest.mark.filterwarnings("ignore:.*not DPP:UserWarning")

NAMES = sorted(WEIGHTINGS)

RANDOM = {"rlw", "rgw", "pcgrad", "gradvac"}
"""Methods whose update draws from torch's generator, so that reordering the tasks reorders
which task gets which draw: their permutation property holds in expectation."""

TASKS3 = {
    "a": TaskSpec(type="binary", weight=0.5),
    "b": TaskSpec(type="regression", weight=2.0),
    "c": TaskSpec(type="multiclass", weight=1.0),
}
PERM = [2, 0, 1]


def _permuted(tasks: dict[str, TaskSpec], perm: list[int]) -> dict[str, TaskSpec]:
    names = list(tasks)
    return {names[i]: tasks[names[i]] for i in perm}


def _jacobian3() -> torch.Tensor:
    """Three task gradients in R^20, the first two conflicting."""
    g = torch.Generator().manual_seed(1)
    jac = torch.randn(3, 20, generator=g)
    jac[1] = -0.8 * jac[0] + 0.3 * jac[1]
    return jac


LOSSES3 = torch.tensor([0.5, 2.0, 0.1])


def _update(weighting: Weighting, losses: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """The weighting's effect on (losses, Jacobian): the total for loss weightings, the shared
    direction for gradient weightings."""
    leaf = losses.clone().requires_grad_()
    if isinstance(weighting, GradientWeighting):
        return weighting.combine(leaf, jac).direction.detach()
    return weighting(leaf).detach()


def test_random_set_names_registered_methods() -> None:
    assert set(WEIGHTINGS) >= RANDOM


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_defaults_and_schema_rejects_unknown_keys(
    name: str, build_weighting: Callable[..., Weighting]
) -> None:
    weighting = build_weighting(name, TASKS3)
    assert weighting.task_names == list(TASKS3)
    LossConfig.model_validate({"weighting": name})
    with pytest.raises(pydantic.ValidationError, match="not_a_param"):
        LossConfig.model_validate({"weighting": name, "not_a_param": 1})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["generic", "zero_row", "dependent", "scales"])
def test_outputs_are_finite(
    name: str, case: str, build_weighting: Callable[..., Weighting]
) -> None:
    jac, losses = _jacobian3(), LOSSES3.clone()
    if case == "zero_row":  # task c has no label in this batch: loss 0, gradient 0
        jac[2], losses[2] = 0.0, 0.0
    elif case == "dependent":
        jac = torch.stack([jac[0], jac[0], 2 * jac[0]])
    elif case == "scales":
        jac = jac * torch.tensor([[1e-3], [1e3], [1.0]])
        losses = torch.tensor([1e-3, 1e3, 1.0])
    weighting = build_weighting(name, TASKS3)
    for _ in range(3):  # stateful methods: a few calls
        leaf = losses.clone().requires_grad_()
        if isinstance(weighting, GradientWeighting):
            update = weighting.combine(leaf, jac)
            assert update.direction.shape == (jac.shape[1],)
            assert update.objective.shape == ()
            assert bool(torch.isfinite(update.direction).all())
            assert bool(torch.isfinite(update.objective))
            weighting.after_step()
        else:
            total = weighting(leaf)
            assert total.shape == ()
            assert bool(torch.isfinite(total))
        weighting.epoch_end(losses)
    assert all(isinstance(v, float) and v == v for v in weighting.report().values())


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_the_traps_catch_each_call() -> None:
    """The traps of `test_never_calls_backward` fire (a trap that cannot fire proves nothing)."""
    mp = pytest.MonkeyPatch()
    try:
        calls: list[str] = []
        mp.setattr(torch.autograd, "grad", lambda *a, **k: calls.append("grad"))
        mp.setattr(torch.optim.SGD, "step", lambda *a, **k: calls.append("step"))
        x = torch.ones(2, requires_grad=True)
        torch.autograd.grad(x.sum(), x)
        torch.optim.SGD([x], lr=0.1).step()
        assert calls == ["grad", "step"]
    finally:
        mp.undo()


@pytest.mark.parametrize("name", NAMES)
def test_never_calls_backward(
    name: str, build_weighting: Callable[..., Weighting], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(what: str) -> Callable[..., None]:
        def trap(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"a weighting called {what}")

        return trap

    monkeypatch.setattr(torch.Tensor, "backward", forbidden("Tensor.backward()"))
    monkeypatch.setattr(torch.autograd, "backward", forbidden("torch.autograd.backward()"))
    monkeypatch.setattr(torch.autograd, "grad", forbidden("torch.autograd.grad()"))
    # every optimizer's step, whatever the class (they all override Optimizer.step)
    optimizers = [torch.optim.Optimizer, *_subclasses(torch.optim.Optimizer)]
    for cls in optimizers:
        if "step" in vars(cls):
            monkeypatch.setattr(cls, "step", forbidden(f"{cls.__name__}.step()"))
    weighting = build_weighting(name, TASKS3)
    _update(weighting, LOSSES3, _jacobian3())
    if isinstance(weighting, GradientWeighting):
        weighting.after_step()
    weighting.epoch_end(LOSSES3)
    weighting.report()


@pytest.mark.parametrize("name", NAMES)
def test_short_training_lowers_both_task_losses(
    name: str,
    make_model: Callable[..., Any],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
    build_weighting: Callable[..., Weighting],
    train_briefly: Callable[..., Any],
    full_losses: Callable[..., torch.Tensor],
) -> None:
    model = make_model("shared_bottom")
    weighting = build_weighting(name, two_tasks)
    before = full_losses(model, two_task_data)
    result = train_briefly(model, weighting, two_task_data)
    after = full_losses(model, two_task_data)
    assert result.skipped_batches == 0
    assert bool(torch.isfinite(after).all())
    assert bool((after < 0.95 * before).all()), f"{before.tolist()} -> {after.tolist()}"
    assert set(result.history[-1]) >= set(weighting.report())


@pytest.mark.parametrize("name", sorted(set(NAMES) - RANDOM))
def test_task_permutation_permutes_weights_and_keeps_update(
    name: str, build_weighting: Callable[..., Weighting]
) -> None:
    jac = _jacobian3()
    original = build_weighting(name, TASKS3)
    permuted = build_weighting(name, _permuted(TASKS3, PERM))
    for step in range(2):  # stateful methods and DWA's epoch history: twice
        torch.manual_seed(step)  # GradDrop draws per coordinate, not per task: same draws
        a = _update(original, LOSSES3, jac)
        torch.manual_seed(step)
        b = _update(permuted, LOSSES3[PERM], jac[PERM])
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        for w in (original, permuted):
            if isinstance(w, GradientWeighting):
                w.after_step()
        original.epoch_end(LOSSES3 * 0.9)
        permuted.epoch_end(LOSSES3[PERM] * 0.9)
    report, report_p = original.report(), permuted.report()
    assert report_p.keys() == report.keys()
    for key, value in report.items():
        assert report_p[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_task_permutation_keeps_update_in_expectation(
    name: str, build_weighting: Callable[..., Weighting]
) -> None:
    jac = _jacobian3()
    draws = 150
    torch.manual_seed(0)
    a = torch.stack([_update(build_weighting(name, TASKS3), LOSSES3, jac) for _ in range(draws)])
    b = torch.stack(
        [
            _update(build_weighting(name, _permuted(TASKS3, PERM)), LOSSES3[PERM], jac[PERM])
            for _ in range(draws)
        ]
    )
    a_mean, b_mean = a.mean(0), b.mean(0)
    assert float((a_mean - b_mean).norm() / a_mean.norm()) < 0.2


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_save_load_and_checkpoint(
    name: str,
    make_model: Callable[..., Any],
    two_tasks: dict[str, TaskSpec],
    two_task_data: Any,
    build_weighting: Callable[..., Weighting],
    train_briefly: Callable[..., Any],
) -> None:
    weighting = build_weighting(name, two_tasks)
    model = make_model("shared_bottom")
    train_briefly(model, weighting, two_task_data, epochs=2)
    # Two steps into the next epoch, where a checkpoint is taken (through JSON, as written).
    params = [*model.parameters(), *weighting.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01)
    step = TrainStep(model, weighting, two_tasks, optimizer)
    for start in (0, 64):
        step(two_task_data.slice(start, start + 64))
    fresh = build_weighting(name, two_tasks)
    fresh.load_state_dict(weighting.state_dict())  # strict: same keys and shapes as a new one
    fresh.load_checkpoint_state(json.loads(json.dumps(weighting.state_for_checkpoint())))
    # The epoch ends the same way for the resumed weighting (e.g. the aggregators' mean
    # weights over the epoch's steps, DWA's loss history).
    mean_losses = torch.tensor([0.6, 2.5])
    weighting.epoch_end(mean_losses)
    fresh.epoch_end(mean_losses)
    assert fresh.report() == pytest.approx(weighting.report())
