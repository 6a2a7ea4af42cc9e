"""Count tasks (watch counts, clicks per session): a non-negative label, a Poisson model on a
log link. The raw output is the log of the expected count; the loss is the Poisson negative
log-likelihood ``exp(z) - y z`` (its ``log y!`` term does not depend on the model); the
prediction is the expected count ``exp(z) >= 0``; metrics are the Poisson deviance (lower is
better), RMSE and MAE of the expected count.

Label scaling (``label_scaling: auto``) divides the counts by their training mean ``m``, which
on the log scale is the shift ``z = log(mu) - log(m)``: the network starts at the mean rate
instead of 1 and the loss is of order 1 whatever the counts' size. It is the right form here
because the Poisson likelihood of ``y / m`` at rate ``mu / m`` is the likelihood of ``y`` at
``mu`` divided by ``m`` (plus a constant): the same optimum, nothing else changes. A shift
and scale as for regression would not be: ``(y - mean) / std`` can be negative, which is no
count.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask._columns import examples, numeric_label
from polytask.errors import DataError
from polytask.tasks.base import TaskType, mean_loss
from polytask.tasks.spec import TaskSpec


class Count(TaskType):
    name: ClassVar[str] = "count"
    losses: ClassVar[tuple[str, ...]] = ("poisson",)
    metrics: ClassVar[tuple[str, ...]] = ("deviance", "rmse", "mae", "loss")
    primary_metric: ClassVar[str] = "deviance"
    # Kendall et al.'s classification form: a Poisson likelihood has no noise scale of its own
    uncertainty_scale: ClassVar[float] = 1.0

    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        arr = numeric_label(series, where, "count")
        with np.errstate(invalid="ignore"):
            negative = arr < 0
        if negative.any():
            raise DataError(
                f"{where} has {int(negative.sum())} negative value(s) such as "
                f"{examples(series, negative, 3)}; a count task needs numbers >= 0"
            )
        return arr.astype(np.float32)

    def fit_scaling(self, mean: float, std: float) -> tuple[float, float] | None:
        return 0.0, mean if mean > 0 and math.isfinite(mean) else 1.0

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return torch.exp(output) - target * output

    def link(self, output: Tensor) -> Tensor:
        """The expected count in units of the training mean (scaled)."""
        return torch.exp(output).unsqueeze(1)

    def _log_mean(self, spec: TaskSpec, output: np.ndarray) -> np.ndarray:
        """``log(expected count)`` in the label's own units."""
        return output.astype(np.float64) + math.log(spec.label_scale)

    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        with np.errstate(over="ignore"):
            return {name: np.exp(self._log_mean(spec, output))}

    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        with np.errstate(over="ignore"):
            per_row = np.exp(output) - y * output  # the training loss, scaled units
            log_mu = self._log_mean(spec, output)
            mu = np.exp(log_mu)
            counts = y.astype(np.float64) * spec.label_scale
            # 2 (y log(y / mu) - (y - mu)), with y log y = 0 at y = 0; log(mu) is never
            # exponentiated for the first term, so no overflow there
            ylogy = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1.0)), 0.0)
            deviance = 2.0 * np.mean(ylogy - counts * log_mu - counts + mu)
        err = mu - counts
        return {
            "loss": mean_loss(per_row, weight),
            "deviance": float(deviance),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
        }
