"""Calibration of a binary task's scores, fitted on a validation split after training.

Three methods, each a monotone map from the model's logit to a probability, so the ranking of
rows within a task never changes (up to ties that isotonic regression may create):

- ``isotonic``: scikit-learn's ``IsotonicRegression`` (increasing, clipped outside the fitted
  range) on the predicted probability; stored as its breakpoints and applied by linear
  interpolation, exactly as scikit-learn predicts.
- ``platt``: Platt scaling, a logistic regression on the logit, p = sigmoid(a z + b)
  (Platt 1999), fitted with scikit-learn's ``LogisticRegression`` without regularisation.
- ``temperature``: p = sigmoid(z / T) with one T > 0 minimising the log-loss (Guo et al. 2017).

A fitted calibrator is a small JSON-able dict (``to_dict`` / ``from_dict``), saved in the
model folder. ``expected_calibration_error`` uses equal-mass bins (each bin holds about the same
number of rows), and ``reliability_curve`` returns the points a reliability diagram plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polytask.tasks import sigmoid

METHODS: tuple[str, ...] = ("isotonic", "platt", "temperature")


@dataclass
class Calibrator:
    """A fitted monotone map from logit to probability; see the module docstring."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, logit: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw logits (any shape)."""
        z = np.asarray(logit, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(z / self.params["temperature"])
        if self.method == "platt":
            return sigmoid(self.params["a"] * z + self.params["b"])
        if self.method == "isotonic":
            x = np.asarray(self.params["x"], dtype=np.float64)
            y = np.asarray(self.params["y"], dtype=np.float64)
            return np.interp(sigmoid(z), x, y)  # clipped to the ends outside [x0, x-1]
        raise ValueError(f"unknown calibration method {self.method!r}; expected one of {METHODS}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        data = dict(data)
        method = data.pop("method", None)
        needed = {"temperature": {"temperature"}, "platt": {"a", "b"}, "isotonic": {"x", "y"}}
        if method not in needed:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        if set(data) != needed[method]:
            raise ValueError(
                f"calibration {method!r} expects keys {sorted(needed[method])}, "
                f"found {sorted(data)}"
            )
        return cls(method, data)


def fit_calibrator(method: str, logit: np.ndarray, label: np.ndarray) -> Calibrator:
    """Fit ``method`` on validation logits and 0/1 labels (NaN labels are left out)."""
    z = np.asarray(logit, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"logits and labels differ in length: {z.size} vs {y.size}")
    keep = ~np.isnan(y)
    z, y = z[keep], y[keep]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("calibration needs 0/1 labels")
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            f"calibration needs both classes among the labelled rows; found {int(y.size)} rows "
            f"with {int(y.sum())} positive"
        )
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        def nll(log_t: float) -> float:
            s = z / math.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        res = minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded")
        return Calibrator("temperature", {"temperature": float(math.exp(res.x))})
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=np.inf, solver="lbfgs").fit(z[:, None], y)
        a = float(lr.coef_[0, 0])
        if a <= 0:  # a non-increasing map would reverse the task's ranking
            raise ValueError(
                "Platt scaling found a non-positive slope: the scores do not rank the labels "
                "on this table; calibrate on a larger validation split"
            )
        return Calibrator("platt", {"a": a, "b": float(lr.intercept_[0])})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(sigmoid(z), y)
        return Calibrator(
            "isotonic",
            {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()},
        )
    raise ValueError(f"unknown calibration method {method!r}; expected one of {list(METHODS)}")


def reliability_curve(
    prob: np.ndarray, label: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-mass bin: mean predicted probability, observed positive rate, row count."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    p, y = p[keep], y[keep]
    if p.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    order = np.argsort(p, kind="stable")
    parts = [b for b in np.array_split(order, min(bins, p.size)) if b.size]
    mean_p = np.array([p[b].mean() for b in parts])
    rate = np.array([y[b].mean() for b in parts])
    count = np.array([b.size for b in parts], dtype=np.float64)
    return mean_p, rate, count


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-mass bins: sum_b (n_b / n) |mean p_b - positive rate_b|."""
    mean_p, rate, count = reliability_curve(prob, label, bins)
    if count.size == 0:
        return float("nan")
    return float(np.sum(count * np.abs(mean_p - rate)) / count.sum())
