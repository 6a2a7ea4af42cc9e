"""Learned homoscedastic-uncertainty weighting.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018. With ``s_k = log sigma_k^2`` learned per task:

- regression (Gaussian likelihood): ``0.5 * exp(-s) * L + 0.5 * s``
- classification (scaled softmax / Bernoulli): ``exp(-s) * L + 0.5 * s``

The two forms differ, so mixed regression/classification tasks each get the right one (unlike
a single regression form for every task). The total can be negative; that is expected.
``clamp`` bounds ``s`` to keep a task from being switched off.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from polytask.tasks import TaskSpec, task_type
from polytask.weighting.base import NoParams, Weighting


class UncertaintyParams(NoParams):
    init_log_var: float = 0.0
    clamp: tuple[float, float] | None = Field(
        default=None, description="(min, max) bounds for s = log sigma^2"
    )

    @model_validator(mode="after")
    def _order(self) -> UncertaintyParams:
        if self.clamp is not None and self.clamp[0] >= self.clamp[1]:
            raise ValueError(f"clamp: expected min < max, found {list(self.clamp)}")
        return self


class Uncertainty(Weighting):
    """``sum_k c_k exp(-s_k) L_k + s_k / 2``, ``c_k`` the task type's ``uncertainty_scale``
    (1/2 for regression, 1 for classification)."""

    scale: Tensor

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: UncertaintyParams) -> None:
        super().__init__(tasks=tasks)
        # One parameter per task, so a step on one task (alternate training) leaves the other
        # tasks' log-variances and their optimizer state untouched.
        self.log_vars = nn.ParameterList(
            nn.Parameter(torch.tensor(float(params.init_log_var))) for _ in tasks
        )
        scale = [task_type(t).uncertainty_scale for t in tasks.values()]
        self.register_buffer("scale", torch.tensor(scale))
        self.clamp = params.clamp

    def _clamped(self, s: Tensor) -> Tensor:
        return s if self.clamp is None else s.clamp(*self.clamp)

    def _s(self) -> Tensor:
        return self._clamped(torch.stack(list(self.log_vars)))

    def forward(self, losses: Tensor) -> Tensor:
        s = self._s()
        return (self.scale * torch.exp(-s) * losses + 0.5 * s).sum()

    def single(self, k: int, loss: Tensor) -> Tensor:
        s = self._clamped(self.log_vars[k])
        return self.scale[k] * torch.exp(-s) * loss + 0.5 * s

    def sigmas(self) -> dict[str, float]:
        """Learned sigma per task, ``exp(s / 2)``."""
        values = torch.exp(0.5 * self._s().detach()).tolist()
        return dict(zip(self.task_names, values, strict=True))

    def report(self) -> dict[str, float]:
        return {f"sigma.{k}": v for k, v in self.sigmas().items()}
