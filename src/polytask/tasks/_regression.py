"""Regression tasks: a real label; MSE or Huber loss; RMSE and MAE.

The network learns the standardized label ``(y - mean) / std`` (training mean and standard
deviation; ``label_scaling: none`` keeps ``y``), and its output is mapped back for
predictions and metrics. A label in the 1e12 range thus trains as well as one near 1: with raw
targets the first steps' gradients are of the label's size and the shared layers never
settle. ``huber_delta`` stays in the label's own units.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch.nn.functional as F
from torch import Tensor

from polytask._columns import numeric_label
from polytask.tasks.base import TaskType, mean_loss
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

    def fit_scaling(self, mean: float, std: float) -> tuple[float, float] | None:
        return mean, std if std > 0 and math.isfinite(std) else 1.0

    def _delta(self, spec: TaskSpec) -> float:
        return spec.huber_delta / spec.label_scale  # in the units the network learns

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        if self.loss_name(spec) == "huber":
            return F.huber_loss(output, target, reduction="none", delta=self._delta(spec))
        return (output - target) ** 2

    def loss_key(self, spec: TaskSpec, index: int) -> tuple[object, ...]:
        key = super().loss_key(spec, index)
        return (*key, self._delta(spec)) if self.loss_name(spec) == "huber" else key

    def link(self, output: Tensor) -> Tensor:
        return output.unsqueeze(1)

    def _value(self, spec: TaskSpec, output: np.ndarray) -> np.ndarray:
        out = output.astype(np.float64)
        if spec.label_shift == 0.0 and spec.label_scale == 1.0:
            return out
        return out * spec.label_scale + spec.label_shift

    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        return {name: self._value(spec, output)}

    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        err = output - y  # in the units the network learns: the training loss
        if self.loss_name(spec) == "huber":
            d = self._delta(spec)
            a = np.abs(err)
            per_row = np.where(a <= d, 0.5 * err**2, d * (a - 0.5 * d))
        else:
            per_row = err**2
        err = self._value(spec, output) - self._value(spec, y)  # in the label's units
        return {
            "loss": mean_loss(per_row, weight),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
        }
