"""Binary tasks: a 0/1 label, a logit out, BCE loss, a probability predicted; AUC and
log-loss."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from polytask._columns import category_strings, float_strings, numeric_label
from polytask.errors import DataError
from polytask.tasks.base import TaskType, mean_loss, sigmoid
from polytask.tasks.spec import TaskSpec


class Binary(TaskType):
    name: ClassVar[str] = "binary"
    losses: ClassVar[tuple[str, ...]] = ("bce",)
    metrics: ClassVar[tuple[str, ...]] = ("auc", "logloss", "loss")
    primary_metric: ClassVar[str] = "auc"
    higher_is_better: ClassVar[frozenset[str]] = frozenset({"auc"})
    takes_positive: ClassVar[bool] = True

    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """0/1 from 0/1 numbers or booleans, or 1 where the value equals ``positive``."""
        missing = series.isna().to_numpy()
        if spec.positive is not None:
            values, _ = category_strings(series)
            positive = category_strings(pd.Series([spec.positive]))[0][0]
            hit = values == positive
            return np.where(missing, np.nan, hit.astype(np.float64)).astype(np.float32)
        arr = numeric_label(series, where, "binary", " or a `positive:` value")
        present = arr[~np.isnan(arr)]
        if ((present != 0) & (present != 1)).any():
            distinct = np.unique(present)
            found = ", ".join(float_strings(distinct[:10]))
            more = f", ... ({distinct.size} distinct)" if distinct.size > 10 else ""
            raise DataError(
                f"{where} has values {{{found}{more}}}; a binary task needs 0/1, booleans or "
                "a `positive:` value"
            )
        return arr.astype(np.float32)

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output, target, reduction="none")

    def link(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output).unsqueeze(1)

    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        return {name: sigmoid(output)}

    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        # BCE with logits, -y log(sigmoid z) - (1 - y) log(1 - sigmoid z) = log(1 + e^z) - y z,
        # exact for any logit (clipped probabilities would cap a row's loss at -log(1e-7)).
        per_row = np.logaddexp(0.0, output) - y * output
        logloss = float(np.mean(per_row))
        result = {"loss": mean_loss(per_row, weight), "logloss": logloss}
        if 0 < y.sum() < y.size:
            from sklearn.metrics import roc_auc_score  # imported here: a second at startup

            result["auc"] = float(roc_auc_score(y, sigmoid(output)))
        else:
            result["auc"] = math.nan  # AUC is undefined with one class present
        return result
