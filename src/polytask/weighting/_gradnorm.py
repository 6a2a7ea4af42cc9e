"""GradNorm: learned task weights that balance gradient norms.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018. On the last shared layer ``W``:

- ``G_k = ||grad_W (w_k L_k)|| = w_k ||grad_W L_k||``, ``Gbar = mean_k G_k``;
- ``r_k = Ltilde_k / mean_j Ltilde_j`` with ``Ltilde_k = L_k(t) / L_k(0)`` (inverse training
  rate: a task that has learned less has a larger ``r_k``);
- ``L_grad = sum_k |G_k - Gbar r_k^alpha|`` with the target ``Gbar r_k^alpha`` held constant,
  minimised over ``w`` only; the network minimises ``sum_k w_k L_k``;
- after each step ``w`` is renormalised to sum to K.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.tasks import TaskSpec
from polytask.weighting.base import GradientUpdate, GradientWeighting, NoParams

_MIN_WEIGHT = 1e-4
"""Floor applied before renormalising: a weight pushed to or below zero would switch its task
off or reverse its loss (the paper relies on small steps to avoid this)."""


class GradNormParams(NoParams):
    alpha: float = Field(
        default=1.5, ge=0, description="strength of the pull toward equal training rates"
    )


class GradNorm(GradientWeighting):
    """Learned weights ``w`` (Chen et al., ICML 2018) whose gradient norms on the last shared
    layer are pulled toward ``mean_k G_k * r_k^alpha``.

    Needs per-task gradients of the last shared layer only (one Jacobian ``[K, |W|]``), not of
    every shared parameter. ``w`` are parameters of the ``weighting`` optimizer group; their
    learning rate is ``optimizer.group_lr.weighting``. ``L_k(0)`` is task k's loss at the first
    step where it is positive (a batch with no label for a task has loss 0).
    """

    jacobian_on = "last_shared"
    initial_losses: Tensor

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: GradNormParams) -> None:
        super().__init__(tasks=tasks)
        self.alpha = params.alpha
        self.task_weights = nn.Parameter(torch.ones(len(tasks)))
        # Not persistent: part of the resume state (`state_for_checkpoint`), not of the model.
        self.register_buffer(
            "initial_losses", torch.full((len(tasks),), float("nan")), persistent=False
        )

    def combine(self, losses: Tensor, jacobian: Tensor) -> GradientUpdate:
        detached = losses.detach()
        unset = torch.isnan(self.initial_losses) & (detached > 0)
        self.initial_losses.copy_(torch.where(unset, detached, self.initial_losses))
        known = ~torch.isnan(self.initial_losses)
        ratio = torch.where(known, detached / self.initial_losses.clamp_min(1e-30), 1.0)
        inverse_rate = ratio / ratio.mean().clamp_min(1e-30)

        w = self.task_weights
        norms = torch.linalg.vector_norm(jacobian, dim=1)
        grad_norms = w * norms
        target = (grad_norms.mean() * inverse_rate**self.alpha).detach()
        gradnorm_loss = (grad_norms - target).abs().sum()

        weights = w.detach()
        # gradnorm_loss depends on w only (the Jacobian is detached): its gradient reaches w and
        # nothing else; the model's gradient is that of sum_k w_k L_k with w held fixed.
        return GradientUpdate(
            direction=weights @ jacobian,
            objective=(weights * losses).sum() + gradnorm_loss,
        )

    @torch.no_grad()
    def after_step(self) -> None:
        w = self.task_weights.clamp_(min=_MIN_WEIGHT)
        w.mul_(len(self.task_names) / w.sum())

    def weights(self) -> dict[str, float]:
        """Current task weights (summing to K)."""
        return dict(zip(self.task_names, self.task_weights.detach().tolist(), strict=True))

    def report(self) -> dict[str, float]:
        return {f"weight.{k}": v for k, v in self.weights().items()}

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {"initial_losses": self.initial_losses.tolist()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        values = [float(v) for v in state.get("initial_losses", [])]
        if values and len(values) != len(self.task_names):
            raise ValueError(
                f"GradNorm checkpoint: expected {len(self.task_names)} initial losses, "
                f"found {values}"
            )
        if values:
            self.initial_losses.copy_(torch.tensor(values))
