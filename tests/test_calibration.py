"""Calibration: lowers the ECE of a miscalibrated model, keeps each task's ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polytask.calibration import (
    METHODS,
    Calibrator,
    expected_calibration_error,
    fit_calibrator,
    reliability_curve,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _miscalibrated(seed: int, shift: float, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(t); the 'model' reports the over-confident 3t + shift."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, 1.0, n)
    y = (rng.random(n) < _sigmoid(t)).astype(np.float64)
    return 3.0 * t + shift, y


@pytest.mark.parametrize("method", METHODS)
def test_calibration_lowers_the_ece_and_keeps_the_ranking(method: str) -> None:
    # a temperature only rescales the logit, so its model is off in scale alone
    shift = 0.0 if method == "temperature" else 1.0
    z_fit, y_fit = _miscalibrated(0, shift)
    z, y = _miscalibrated(1, shift)
    before = expected_calibration_error(_sigmoid(z), y)
    cal = fit_calibrator(method, z_fit, y_fit)
    p = cal(z)
    after = expected_calibration_error(p, y)
    assert before > 0.08
    assert after < 0.03, (method, before, after)
    # monotone: sorting by logit leaves the calibrated probabilities non-decreasing
    order = np.argsort(z)
    assert np.all(np.diff(p[order]) >= -1e-12)
    if method != "isotonic":  # strictly increasing maps keep every pair's order
        assert np.all(np.diff(p[order]) > 0)
    # saved as JSON and read back, the same map
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(back(z), p)


def test_temperature_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(2)
    t = rng.normal(0.0, 2.0, 50_000)
    y = (rng.random(t.size) < _sigmoid(t)).astype(np.float64)
    cal = fit_calibrator("temperature", 2.5 * t, y)  # true temperature 2.5
    assert cal.params["temperature"] == pytest.approx(2.5, rel=0.05)


def test_ece_and_reliability_curve_closed_form() -> None:
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    mean_p, rate, count = reliability_curve(p, y, bins=2)
    np.testing.assert_allclose(mean_p, [0.1, 0.9])
    np.testing.assert_allclose(rate, [0.5, 1.0])
    np.testing.assert_allclose(count, [2, 2])
    assert expected_calibration_error(p, y, bins=2) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator("platt", np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="unknown calibration method 'spline'"):
        fit_calibrator("spline", np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="expects keys"):
        Calibrator.from_dict({"method": "platt", "a": 1.0})
