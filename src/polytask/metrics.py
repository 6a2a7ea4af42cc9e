"""Per-task metrics over a whole split (never averaged over batches).

binary: ``auc``, ``logloss``; regression: ``rmse``, ``mae``; multiclass: ``accuracy``,
``logloss``; every task also reports ``loss`` (its training loss on the split) and ``count``
(labelled rows). Rows without a label are left out. AUC comes from scikit-learn; log-loss is
computed from the logits exactly as the training loss (BCE with logits, cross-entropy), with no
clipping of probabilities, so ``logloss`` and ``loss`` are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from polytask.config import TaskConfig

HIGHER_IS_BETTER = {"auc": True, "accuracy": True}


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


def task_metrics(task: TaskConfig, output: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Metrics for one task from raw outputs (logits or values) and labels with NaN missing."""
    mask = ~np.isnan(label)
    y = label[mask]
    out = output[mask].astype(np.float64)
    result: dict[str, float] = {"count": float(mask.sum())}
    if y.size == 0:
        return result
    if task.type == "binary":
        # BCE with logits, -y log(sigmoid z) - (1 - y) log(1 - sigmoid z) = log(1 + e^z) - y z,
        # exact for any logit (clipped probabilities would cap a row's loss at -log(1e-7)).
        result["loss"] = result["logloss"] = float(np.mean(np.logaddexp(0.0, out) - y * out))
        p = sigmoid(out)
        if 0 < y.sum() < y.size:
            from sklearn.metrics import roc_auc_score  # imported here: a second at startup

            result["auc"] = float(roc_auc_score(y, p))
        else:
            result["auc"] = math.nan  # AUC is undefined with one class present
    elif task.type == "regression":
        err = out - y
        if task.loss == "huber":
            d = task.huber_delta
            a = np.abs(err)
            result["loss"] = float(np.mean(np.where(a <= d, 0.5 * err**2, d * (a - 0.5 * d))))
        else:
            result["loss"] = float(np.mean(err**2))
        result["rmse"] = float(np.sqrt(np.mean(err**2)))
        result["mae"] = float(np.mean(np.abs(err)))
    else:
        yi = y.astype(np.int64)
        # cross-entropy from the logits, as in training (not from clipped probabilities)
        picked = np.take_along_axis(log_softmax(out), yi[:, None], axis=1)
        result["loss"] = result["logloss"] = float(-np.mean(picked))
        result["accuracy"] = float(np.mean(out.argmax(axis=1) == yi))
    return result


def all_metrics(
    tasks: Mapping[str, TaskConfig],
    outputs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
) -> dict[str, dict[str, float]]:
    return {name: task_metrics(t, outputs[name], labels[name]) for name, t in tasks.items()}


def monitor_value(metrics: Mapping[str, Mapping[str, float]], monitor: str) -> float:
    """Value of a monitor name: ``loss`` (sum of task losses), ``<task>.<metric>``, or
    ``mean.<metric>`` (mean over the tasks that report that metric)."""
    if monitor == "loss":
        return float(sum(m.get("loss", 0.0) for m in metrics.values()))
    head, _, metric = monitor.partition(".")
    if head == "mean":
        values = [m[metric] for m in metrics.values() if metric in m]
        return float(np.mean(values)) if values else math.nan
    return float(metrics[head][metric])


def monitor_mode(monitor: str) -> str:
    """``max`` for AUC/accuracy monitors, ``min`` otherwise."""
    metric = monitor.rpartition(".")[2]
    return "max" if HIGHER_IS_BETTER.get(metric, False) else "min"


def valid_monitors(tasks: Mapping[str, TaskConfig]) -> list[str]:
    per_type = {
        "binary": ["auc", "logloss", "loss"],
        "regression": ["rmse", "mae", "loss"],
        "multiclass": ["accuracy", "logloss", "loss"],
    }
    names = ["loss"]
    metrics: set[str] = set()
    for name, t in tasks.items():
        names += [f"{name}.{m}" for m in per_type[t.type]]
        metrics.update(per_type[t.type])
    names += [f"mean.{m}" for m in sorted(metrics)]
    return names
