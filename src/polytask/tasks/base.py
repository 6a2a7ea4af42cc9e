"""The interface every task type implements, and the numeric links they share.

A task type owns everything that depends on what a task predicts: how its label column is
encoded, its loss, its link from the network's raw output to an estimate, its prediction
columns, its metrics and which way each one improves, and its form in uncertainty weighting.
The layers above (data, losses, metrics, models, weighting, the estimator) ask the type and
never test ``spec.type`` themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from polytask.errors import DataError
from polytask.tasks.spec import TaskSpec


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float64, without overflow for large negative logits."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``[N, C]``, shifted by the row maximum."""
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax ``[N, C]`` in float64: ``x - logsumexp(x)``, shifted by the row
    maximum, so no logit overflows or underflows to ``log(0)``."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mean_loss(per_row: np.ndarray, weight: np.ndarray | None) -> float:
    """The mean of a per-row loss, or its weighted mean (0 when the weights sum to 0)."""
    if weight is None:
        return float(np.mean(per_row))
    total = float(np.sum(weight))
    return float(np.sum(per_row * weight) / total) if total > 0 else 0.0


class TaskType(ABC):
    """One kind of task. Instances are stateless; what a fitted model learns about a label
    (a multiclass task's classes) is passed in by the caller that stores it."""

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]
    """Loss names the type accepts; the first is the default."""
    metrics: ClassVar[tuple[str, ...]]
    """Metric names `evaluate` reports (besides ``count``), each usable as a monitor."""
    primary_metric: ClassVar[str]
    """The metric a task of this type is judged on by default (``polytask compare``)."""
    higher_is_better: ClassVar[frozenset[str]] = frozenset()
    """The metrics among `metrics` that improve upwards (the others improve downwards)."""
    has_classes: ClassVar[bool] = False
    """Whether the label's classes are learned from the training set (`fit_classes`)."""
    class_noun: ClassVar[str] = "class(es)"
    """What messages call the classes (a tag task's are tags)."""
    takes_positive: ClassVar[bool] = False
    """Whether the spec's ``positive`` (the label value meaning 1) applies."""
    per_token: ClassVar[bool] = False
    """Whether a label is a sequence, one per token (``[N, T]``, NaN at padding): the loss is
    the mean over real tokens and `evaluate` gets whole sentences (``tag``)."""
    uncertainty_scale: ClassVar[float] = 1.0
    """``c`` in uncertainty weighting's ``c exp(-s) L + s / 2`` (Kendall et al. 2018): 1/2
    for a Gaussian likelihood, 1 for a classification likelihood."""

    # ---------------------------------------------------------------------- config
    def loss_name(self, spec: TaskSpec) -> str:
        return spec.loss or self.losses[0]

    def check(self, spec: TaskSpec) -> None:
        """Raise ValueError when the spec's settings do not fit the type."""
        if spec.loss is not None and spec.loss not in self.losses:
            raise ValueError(
                f"loss {spec.loss!r} does not fit a {self.name} task; expected one of "
                f"{list(self.losses)}"
            )
        if spec.positive is not None and not self.takes_positive:
            raise ValueError(f"'positive' is only for binary tasks, found type {self.name!r}")

    # ---------------------------------------------------------------------- labels
    @abstractmethod
    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """A label column as float32, NaN where missing. ``where`` opens every error
        message (``"<split>: task 'x': label column 'y'"``); ``classes`` are the fitted
        classes of a type that has them; ``strings`` the column's canonical strings when the
        caller has them already."""

    def fit_classes(self, task: str, column: str, found: list[str]) -> list[str]:
        """The sorted classes of a label found in training (types with classes); fewer than
        2 is a `DataError`."""
        if not self.has_classes:
            raise NotImplementedError(f"{self.name} tasks have no classes")
        classes = sorted(set(found))
        if len(classes) < 2:
            raise DataError(
                f"task {task!r}: label column {column!r} has {len(classes)} {self.class_noun} "
                f"{classes}; a {self.name} task needs at least 2"
            )
        return classes

    def fit_scaling(self, mean: float, std: float) -> tuple[float, float] | None:
        """``(shift, scale)`` for the spec's ``label_shift``/``label_scale`` from the training
        labels' mean and standard deviation, or None when the type keeps labels as they are
        (the default)."""
        return None

    def scale_label(self, y: np.ndarray, spec: TaskSpec) -> np.ndarray:
        """Encoded labels in the units the network learns (float32, NaN kept)."""
        if spec.label_shift == 0.0 and spec.label_scale == 1.0:
            return y
        return ((y.astype(np.float64) - spec.label_shift) / spec.label_scale).astype(np.float32)

    def out_dim(self, classes: list[str] | None) -> int:
        """Width of the network's raw output for the task: one logit per class for types
        with classes, else 1."""
        if self.has_classes:
            assert classes is not None
            return len(classes)
        return 1

    # ---------------------------------------------------------------------- training
    @abstractmethod
    def loss(self, spec: TaskSpec, output: Tensor, target: Tensor) -> Tensor:
        """Unreduced loss ``[B]`` (or ``[B, k]`` for ``k`` stacked tasks of the same kind)
        for targets with NaN already replaced."""

    def loss_key(self, spec: TaskSpec, index: int) -> tuple[object, ...]:
        """Tasks with equal keys compute their loss on one ``[B, k]`` stack: the key holds
        what the loss depends on, so e.g. a setting the loss does not use does not split
        tasks apart."""
        return (self.name, self.loss_name(spec))

    # ---------------------------------------------------------------------- outputs
    @abstractmethod
    def link(self, output: Tensor) -> Tensor:
        """The task's estimate from its raw output, always 2-D ``[B, estimate_dim]``: what
        another task's tower receives through ``inputs_from``."""

    def estimate_dim(self, out_dim: int) -> int:
        return 1

    @abstractmethod
    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        """Prediction columns for raw outputs ``output`` (rows in order)."""

    @abstractmethod
    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        """Metrics over labelled rows only (at least one) from raw outputs and encoded
        labels, ``loss`` included: the training loss on the split, computed as in training
        (the ``weight``-ed mean for a task with ``sample_weight``); the other metrics in the
        label's own units, unweighted."""
