"""Regression tasks: a real label, the raw output is the value; MSE or Huber loss; RMSE and
MAE."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from polytask._columns import numeric_label
from polytask.tasks.base import TaskType
from polytask.tasks.spec import TaskSpec


class Regression(TaskType):
    name: ClassVar[str] = "regression"
    losses: ClassVar[tuple[str, ...]] = ("mse", "huber")
    metrics: ClassVar[tuple[str, ...]] = ("rmse", "mae", "loss")
    primary_metric: ClassVar[str] = "rmse"
    uncertainty_scale: ClassVar[float] = 0.5

    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        return numeric_label(series, where, "regression").astype(np.float32)

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        if self.loss_name(spec) == "huber":
            return F.huber_loss(output, target, reduction="none", delta=spec.huber_delta)
        return (output - target) ** 2

    def loss_key(self, spec: TaskSpec, index: int) -> tuple[object, ...]:
        key = super().loss_key(spec, index)
        return (*key, spec.huber_delta) if self.loss_name(spec) == "huber" else key

    def link(self, output: Tensor) -> Tensor:
        return output.unsqueeze(1)

    def predict_columns(
        self, name: str, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        return {name: output.astype(np.float64)}

    def evaluate(self, spec: TaskSpec, output: np.ndarray, y: np.ndarray) -> dict[str, float]:
        err = output - y
        if self.loss_name(spec) == "huber":
            d = spec.huber_delta
            a = np.abs(err)
            loss = float(np.mean(np.where(a <= d, 0.5 * err**2, d * (a - 0.5 * d))))
        else:
            loss = float(np.mean(err**2))
        return {
            "loss": loss,
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
        }
