"""Multiclass tasks: classes learned from the training labels (sorted), logits ``[B, C]``
out, cross-entropy loss, the predicted class plus one probability column per class;
accuracy and log-loss."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from polytask._columns import category_strings
from polytask.errors import DataError
from polytask.tasks.base import TaskType, log_softmax, mean_loss, softmax
from polytask.tasks.spec import TaskSpec


class Multiclass(TaskType):
    name: ClassVar[str] = "multiclass"
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "logloss", "loss")
    primary_metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[frozenset[str]] = frozenset({"accuracy"})
    has_classes: ClassVar[bool] = True

    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Class indices into the fitted ``classes``; a class not seen in training fails."""
        assert classes is not None
        values, missing = strings if strings is not None else category_strings(series)
        codes = pd.Index(classes, dtype=object).get_indexer(pd.Index(values, dtype=object))
        unseen = (codes < 0) & ~missing
        if unseen.any():
            examples = sorted(set(values[unseen].tolist()))[:5]
            raise DataError(
                f"{where} has class(es) {examples} not seen in training; known classes are "
                f"{classes[:20]}"
            )
        return np.where(missing, np.nan, codes).astype(np.float32)

    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target.long(), reduction="none")

    def loss_key(self, spec: TaskSpec, index: int) -> tuple[object, ...]:
        return (self.name, index)  # a [B, C] output is never stacked with another task's

    def link(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=1)

    def estimate_dim(self, out_dim: int) -> int:
        return out_dim

    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        assert classes is not None
        p = softmax(output.reshape(-1, len(classes)))  # 0 rows: a flat array
        probas = {f"{name}.proba.{cls}": p[:, j] for j, cls in enumerate(classes)}
        return {name: np.asarray(classes, dtype=object)[p.argmax(axis=1)], **probas}

    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        yi = y.astype(np.int64)
        # cross-entropy from the logits, as in training (not from clipped probabilities)
        picked = np.take_along_axis(log_softmax(output), yi[:, None], axis=1)[:, 0]
        logloss = float(-np.mean(picked))
        return {
            "loss": mean_loss(-picked, weight),
            "logloss": logloss,
            "accuracy": float(np.mean(output.argmax(axis=1) == yi)),
        }
