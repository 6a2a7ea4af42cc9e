"""The pieces of the training step for weightings that need per-task gradients
(`GradientWeighting`; the step itself is `polytask.training.step.TrainStep`).

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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polytask.models import MultiTaskNet
from polytask.weighting import GradientWeighting


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
    from torchjd.autojac import jac  # here: torchjd is slow to import, aggregators only

    blocks = jac(losses, params, retain_graph=True)
    return torch.cat([b.reshape(len(losses), -1) for b in blocks], dim=1)
