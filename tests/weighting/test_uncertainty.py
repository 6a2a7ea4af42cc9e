"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from polytask import MultiTaskModel
from polytask.tasks import TaskSpec
from polytask.weighting import Uncertainty, UncertaintyParams


def test_each_task_gets_its_form() -> None:
    tasks = {"r": TaskSpec(type="regression"), "c": TaskSpec(type="binary")}
    w = Uncertainty(tasks=tasks, params=UncertaintyParams())
    with torch.no_grad():
        w.log_vars[0].fill_(0.4)
        w.log_vars[1].fill_(-0.3)
    losses = torch.tensor([2.0, 0.5])
    expected = (0.5 * math.exp(-0.4) * 2.0 + 0.2) + (math.exp(0.3) * 0.5 - 0.15)
    assert math.isclose(float(w(losses)), expected, rel_tol=1e-6)
    assert math.isclose(w.sigmas()["r"], math.exp(0.2), rel_tol=1e-6)


def test_clamp_bounds_log_variance() -> None:
    tasks = {"r": TaskSpec(type="regression")}
    w = Uncertainty(tasks=tasks, params=UncertaintyParams(clamp=(-1.0, 1.0)))
    with torch.no_grad():
        w.log_vars[0].fill_(5.0)
    assert math.isclose(w.sigmas()["r"], math.exp(0.5), rel_tol=1e-6)


def test_learns_the_true_noise_of_two_regressions() -> None:
    """Kendall's toy: two regressions with noise sigma 10 and 1; the learned sigmas must be
    within 20% of the truth."""
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.normal(size=(n, 2))
    df = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1]})
    df["loud"] = 3 * x[:, 0] + rng.normal(scale=10.0, size=n)
    df["quiet"] = 2 * x[:, 1] + rng.normal(scale=1.0, size=n)
    model = MultiTaskModel(
        features={"numeric": ["x0", "x1"]},
        # in the labels' own units (scaled labels would give sigma / std of each label)
        tasks={
            "loud": {"type": "regression", "label_scaling": "none"},
            "quiet": {"type": "regression", "label_scaling": "none"},
        },
        model={"name": "shared_bottom", "shared_units": [16], "tower_units": [8]},
        loss="uncertainty",
        optimizer={"lr": 0.01, "group_lr": {"weighting": 0.05}},
        training={"epochs": 30, "batch_size": 256, "progress": False},
    ).fit(df)
    sigmas = model.weighting_.sigmas()  # type: ignore[attr-defined]
    assert abs(sigmas["loud"] - 10.0) / 10.0 < 0.2, sigmas
    assert abs(sigmas["quiet"] - 1.0) / 1.0 < 0.2, sigmas
    last = model.history_[-1]
    assert math.isclose(last["sigma.loud"], sigmas["loud"], rel_tol=1e-6)
