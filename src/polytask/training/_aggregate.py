"""The training step for weightings that need per-task gradients (`GradientWeighting`).

The step owns every backward pass and the optimizer step; the weighting only maps the losses
and their Jacobian to an update. With ``P`` the parameters the weighting asks about (every
shared parameter for the aggregators, the last shared layer for GradNorm):

1. ``J [K, |P|]``: one row per task loss, the gradient of that loss with respect to ``P``,
   computed from the losses themselves with ``torchjd.autojac.jac`` (a vmapped backward pass).
   Differentiating the losses rather than an intermediate representation (as
   ``torchjd.autojac.mtl_backward(features=...)`` does) follows every path into ``P``: in
   MMoE the gates read the shared input directly, bypassing the experts' output, so a
   ``features`` cut at the experts would miss the input embeddings' gradient through the gates.
2. ``weighting.combine(losses, J)`` returns the direction for ``P`` and a scalar objective.
3. ``P.grad`` = the direction; every other parameter (towers, and the weighting's own learned
   weights) gets the gradient of the objective.
4. The optimizer steps, then ``weighting.after_step()``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchjd.autojac import jac

from polytask.data import Batch
from polytask.losses import add_terms, task_losses
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec
from polytask.training.loops import NonFiniteLossError, batch_labels, nonfinite_update
from polytask.weighting import GradientWeighting, Weighting


def jacobian_parameters(model: MultiTaskNet, weighting: GradientWeighting) -> list[nn.Parameter]:
    """The parameters whose per-task gradients ``weighting`` combines."""
    if weighting.jacobian_on == "last_shared":
        return model.last_shared_layer()
    return model.shared_parameters()


@dataclass(frozen=True)
class ParameterSplit:
    """The parameters of a gradient-weighting step, in a fixed order."""

    jacobian: list[nn.Parameter]
    """`jacobian_parameters`: their ``.grad`` is the weighting's direction."""
    others: list[nn.Parameter]
    """Every other trainable parameter of the model and the weighting: their ``.grad`` is the
    gradient of the objective."""


def parameter_split(model: MultiTaskNet, weighting: GradientWeighting) -> ParameterSplit:
    params = jacobian_parameters(model, weighting)
    in_jacobian = {id(p) for p in params}
    others = [
        p
        for p in (*model.parameters(), *weighting.parameters())
        if p.requires_grad and id(p) not in in_jacobian
    ]
    return ParameterSplit(params, others)


_splits: weakref.WeakKeyDictionary[
    Weighting, tuple[weakref.ReferenceType[nn.Module], ParameterSplit]
] = weakref.WeakKeyDictionary()


def _split_of(model: MultiTaskNet, weighting: GradientWeighting) -> ParameterSplit:
    """`parameter_split`, computed on the first step of a fit (see `forget_split`) and reused
    while the model is the same."""
    cached = _splits.get(weighting)
    if cached is None or cached[0]() is not model:
        cached = (weakref.ref(model), parameter_split(model, weighting))
        _splits[weighting] = cached
    return cached[1]


def forget_split(weighting: Weighting) -> None:
    """Make `aggregate_step` recompute its parameter split: `fit_loop` calls this when it
    starts, so a parameter frozen or unfrozen between two fits is seen."""
    _splits.pop(weighting, None)


def backward_objective(objective: Tensor, others: list[nn.Parameter]) -> None:
    """The gradient of ``objective`` into ``others``' ``.grad``. Parameters it does not reach
    keep ``.grad`` None: the optimizer skips them."""
    if others:
        torch.autograd.backward(objective, inputs=others)


def write_grads(params: list[nn.Parameter], flat: Tensor) -> None:
    """Each parameter's ``.grad`` = its slice of ``flat`` (in order, in its dtype)."""
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p).to(p.dtype)


def task_jacobian(losses: Tensor, params: list[nn.Parameter]) -> Tensor:
    """``[K, n]``: row k is the gradient of ``losses[k]`` with respect to ``params``, flattened
    and concatenated in order (zeros where a loss does not reach a parameter). Keeps the graph."""
    blocks = jac(losses, params, retain_graph=True)
    return torch.cat([b.reshape(len(losses), -1) for b in blocks], dim=1)


def aggregate_step(
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskSpec],
    optimizer: torch.optim.Optimizer,
    batch: Batch,
) -> Tensor:
    """One optimizer step combining per-task gradients; returns the detached task losses
    ``[K]``. As in `joint_step`, a non-finite loss (or update) skips the update and raises
    `NonFiniteLossError` (`NonFiniteUpdateError`)."""
    if not isinstance(weighting, GradientWeighting):
        raise TypeError(
            f"aggregate_step needs a GradientWeighting, received {type(weighting).__name__}; "
            "use joint_step for weightings of the losses alone"
        )
    labels = batch_labels(batch, tasks)
    outputs, terms = model.training_forward(batch, labels)
    losses = add_terms(task_losses(tasks, outputs, labels), list(tasks), terms)
    optimizer.zero_grad(set_to_none=True)
    if not bool(torch.isfinite(losses).all()):  # before the Jacobian, which would be NaN
        raise NonFiniteLossError(losses.detach())

    split = _split_of(model, weighting)
    params = split.jacobian
    update = weighting.combine(losses, task_jacobian(losses, params))
    direction_ok = torch.isfinite(update.direction).all()
    if not bool(direction_ok & torch.isfinite(update.objective)):  # one host read
        if not bool(direction_ok):
            raise nonfinite_update(
                f"the update direction ({type(weighting).__name__})", update.direction, losses
            )
        raise nonfinite_update(
            f"the objective ({type(weighting).__name__})", update.objective, losses
        )

    backward_objective(update.objective, split.others)
    write_grads(params, update.direction)
    optimizer.step()
    weighting.after_step()
    return losses.detach()
