"""A model's own loss terms (`MultiTaskNet.training_forward`) join their task's loss in every
kind of step: joint, alternate, and the gradient-weighting step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from polytask.data import LABEL_PREFIX
from polytask.losses import add_terms, task_losses
from polytask.models import Head, SharedBottomParams, SharedMLPNet
from polytask.models.base import Representation
from polytask.nn import FeatureInput
from polytask.tasks import TaskSpec
from polytask.training.step import TrainStep, forward_objective
from polytask.weighting import WEIGHTINGS

TASKS = {"a": TaskSpec(type="binary"), "b": TaskSpec(type="regression")}


class _WithTerms(SharedMLPNet):
    """Task ``b`` gets ``mean(output_b ** 2)`` from the outputs and task ``a`` the body's
    ``3 * mean(h)``."""

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        rep = super().represent(x, active)
        assert rep.shared is not None
        rep.losses = {"a": 3.0 * rep.shared.mean()}
        return rep

    def auxiliary_losses(
        self, outputs: dict[str, Tensor], labels: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        return {"b": outputs["b"].pow(2).mean()} if "b" in outputs else {}


def _net() -> _WithTerms:
    torch.manual_seed(0)
    inputs = FeatureInput(cardinalities=[4], embedding_dims=[3], numeric_width=2, numeric_dim=2)
    heads = [Head("a", "binary"), Head("b", "regression")]
    params = SharedBottomParams(shared_units=[5])
    return _WithTerms(inputs=inputs, heads=heads, params=params, shared_units=[5])


def _batch(n: int = 16) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "categorical": torch.randint(0, 4, (n, 1), generator=g),
        "numeric": torch.randn(n, 2, generator=g),
        LABEL_PREFIX + "a": torch.randint(0, 2, (n,), generator=g).float(),
        LABEL_PREFIX + "b": torch.randn(n, generator=g),
    }


def _expected(net: _WithTerms, batch: dict[str, Tensor]) -> Tensor:
    out = net(batch)
    labels = {t: batch[LABEL_PREFIX + t] for t in TASKS}
    hidden = net.shared(net.inputs(batch["categorical"], batch["numeric"]))
    terms = torch.stack([3.0 * hidden.mean(), out["b"].pow(2).mean()])
    return task_losses(TASKS, out, labels) + terms


def test_add_terms_adds_each_term_to_its_task_and_nothing_without_terms() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert add_terms(losses, ["x", "y", "z"], {}) is losses
    got = add_terms(losses, ["x", "y", "z"], {"z": torch.tensor(0.5)})
    torch.testing.assert_close(got, torch.tensor([1.0, 2.0, 3.5]))


def test_joint_step_losses_include_the_terms() -> None:
    net, batch = _net(), _batch()
    weighting = WEIGHTINGS["sum"].build(tasks=TASKS, params=WEIGHTINGS["sum"].params())
    objective, losses = forward_objective(net, weighting, TASKS, batch)
    expected = _expected(net, batch)
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(objective, expected.sum())


def test_an_alternate_step_adds_only_its_own_task_term() -> None:
    net, batch = _net(), _batch()
    weighting = WEIGHTINGS["sum"].build(tasks=TASKS, params=WEIGHTINGS["sum"].params())
    expected = _expected(net, batch)
    for k, task in enumerate(TASKS):
        _, losses = forward_objective(net, weighting, TASKS, batch, task)
        torch.testing.assert_close(losses[k], expected[k])


def test_the_gradient_weighting_step_sees_the_terms() -> None:
    net, batch = _net(), _batch()
    entry = WEIGHTINGS["pcgrad"]
    weighting = entry.build(tasks=TASKS, params=entry.params())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    done = TrainStep(net, weighting, TASKS, optimizer)(batch)
    assert done.applied
    torch.testing.assert_close(done.losses, _expected(net, batch).detach())
