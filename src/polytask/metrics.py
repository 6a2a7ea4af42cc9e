"""Per-task metrics over a whole split (never averaged over batches).

Each task type (`polytask.tasks`) computes its own metrics: binary ``auc`` and ``logloss``;
regression ``rmse`` and ``mae``; multiclass ``accuracy`` and ``logloss``. Every task also
reports ``loss`` (its training loss on the split) and ``count`` (labelled rows). Rows without
a label are left out. AUC comes from scikit-learn; log-loss is computed from the logits
exactly as the training loss (BCE with logits, cross-entropy), with no clipping of
probabilities, so ``logloss`` and ``loss`` are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from polytask.tasks import (
    TASK_TYPES,
    TaskSpec,
    log_softmax,
    sigmoid,
    softmax,
    task_type,
    weight_key,
)

HIGHER_IS_BETTER: dict[str, bool] = {
    m: True for kind in TASK_TYPES.values() for m in sorted(kind.higher_is_better)
}
"""The metrics that improve upwards, as the task types declare them; the others improve
downwards."""

__all__ = [
    "HIGHER_IS_BETTER",
    "all_metrics",
    "log_softmax",
    "monitor_mode",
    "monitor_value",
    "sigmoid",
    "softmax",
    "task_metrics",
    "valid_monitors",
]


def task_metrics(
    task: TaskSpec, output: np.ndarray, label: np.ndarray, weight: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics for one task from raw outputs (logits or values) and encoded labels with NaN
    missing; ``weight`` (its sample weights) weighs the ``loss``."""
    mask = ~np.isnan(label)
    count = float(mask.sum())
    if not count:
        return {"count": 0.0}
    kind = task_type(task)
    if kind.per_token:  # whole sentences: chunks need their boundaries
        return {"count": count, **kind.evaluate(task, output, label)}
    w = None if weight is None else weight[mask].astype(np.float64)
    return {"count": count, **kind.evaluate(task, output[mask].astype(np.float64), label[mask], w)}


def all_metrics(
    tasks: Mapping[str, TaskSpec],
    outputs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    """Metrics per task; ``labels`` may hold a weighted task's weights under `weight_key`."""
    return {
        name: task_metrics(t, outputs[name], labels[name], labels.get(weight_key(name)))
        for name, t in tasks.items()
    }


def monitor_value(metrics: Mapping[str, Mapping[str, float]], monitor: str) -> float:
    """Value of a monitor name: ``loss`` (sum of task losses), ``<task>.<metric>``, or
    ``mean.<metric>`` (mean over the tasks where that metric is defined: a task whose value
    is NaN, e.g. the AUC of one class, is left out; see `undefined_in_mean`)."""
    if monitor == "loss":
        return float(sum(m.get("loss", 0.0) for m in metrics.values()))
    head, _, metric = monitor.partition(".")
    if head == "mean":
        values = [m[metric] for m in metrics.values() if metric in m and not math.isnan(m[metric])]
        return float(np.mean(values)) if values else math.nan
    return float(metrics[head][metric])


_UNDEFINED = {
    "auc": "its labels there are all one class",
    "f1": "its tags are not IOB chunk tags",
    "precision": "its tags are not IOB chunk tags",
    "recall": "its tags are not IOB chunk tags",
}


def undefined_in_mean(metrics: Mapping[str, Mapping[str, float]], monitor: str) -> dict[str, str]:
    """``{task: why}`` for the tasks a ``mean.<metric>`` monitor leaves out because their
    metric is NaN; empty for any other monitor."""
    head, _, metric = monitor.partition(".")
    if head != "mean":
        return {}
    why = _UNDEFINED.get(metric, "it is not a number")
    return {t: why for t, m in metrics.items() if metric in m and math.isnan(m[metric])}


def monitor_mode(monitor: str) -> str:
    """``max`` for metrics a task type says improve upwards (AUC, accuracy), else ``min``."""
    metric = monitor.rpartition(".")[2]
    return "max" if HIGHER_IS_BETTER.get(metric, False) else "min"


def valid_monitors(tasks: Mapping[str, TaskSpec]) -> list[str]:
    names = ["loss"]
    metrics: set[str] = set()
    for name, t in tasks.items():
        names += [f"{name}.{m}" for m in task_type(t).metrics]
        metrics.update(task_type(t).metrics)
    names += [f"mean.{m}" for m in sorted(metrics)]
    return names
