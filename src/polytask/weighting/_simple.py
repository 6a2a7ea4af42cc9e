"""Fixed combinations: the plain sum and fixed per-task weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor

from polytask.tasks import TaskSpec
from polytask.weighting.base import NoParams, Weighting


class Sum(Weighting):
    """``sum_k L_k``. Simple, but a task with a larger loss scale dominates shared layers."""

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: NoParams) -> None:
        super().__init__(tasks=tasks)

    def forward(self, losses: Tensor) -> Tensor:
        return losses.sum()

    def single(self, k: int, loss: Tensor) -> Tensor:
        return loss


class WeightedParams(NoParams):
    weights: dict[str, float] = Field(
        default_factory=dict, description="task -> weight; tasks left out use their `weight`"
    )


class Weighted(Weighting):
    """``sum_k w_k L_k`` with fixed weights: ``loss.weights`` or each task's ``weight``."""

    weights: Tensor

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: WeightedParams) -> None:
        super().__init__(tasks=tasks)
        unknown = sorted(set(params.weights) - set(tasks))
        if unknown:
            raise ValueError(
                f"loss.weights names unknown task(s) {unknown}; expected some of {list(tasks)}"
            )
        w = [params.weights.get(name, t.weight) for name, t in tasks.items()]
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))

    def forward(self, losses: Tensor) -> Tensor:
        return (self.weights * losses).sum()

    def single(self, k: int, loss: Tensor) -> Tensor:
        return self.weights[k] * loss

    def report(self) -> dict[str, float]:
        weights = self.weights.tolist()
        return {f"weight.{n}": w for n, w in zip(self.task_names, weights, strict=True)}
