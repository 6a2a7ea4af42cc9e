"""The `count` task type: Poisson NLL on a log link, expected counts out, deviance metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import mean_poisson_deviance

from polytask import ConfigError, DataError, MultiTaskModel
from polytask.cli import main
from polytask.metrics import monitor_mode, task_metrics
from polytask.tasks import TaskSpec, task_type

FEATURES = {"categorical": ["shop"], "numeric": ["x"]}


def poisson_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Counts with a known log-linear rate: ``log mu = 1 + 0.7 x + shop effect``."""
    rng = np.random.default_rng(seed)
    shop = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    log_mu = 1.0 + 0.7 * x + np.select([shop == "a", shop == "b"], [0.5, -0.5], 0.0)
    return pd.DataFrame(
        {
            "shop": shop,
            "x": x,
            "clicks": rng.poisson(np.exp(log_mu)),
            "bought": (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int),
        }
    )


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(2 * np.mean(ylogy - (y - mu)))


def test_loss_and_metrics_match_the_closed_forms() -> None:
    spec = TaskSpec(type="count")
    z = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    y = torch.tensor([0.0, 1.0, 3.0, 5.0])
    # Poisson NLL without the log(y!) term, on the log link: exp(z) - y z
    torch.testing.assert_close(task_type(spec).loss(spec, z, y), torch.exp(z) - y * z)
    m = task_metrics(spec, z.numpy(), y.numpy())
    mu = np.exp(z.numpy().astype(np.float64))
    assert m["deviance"] == pytest.approx(mean_poisson_deviance(y.numpy(), mu), rel=1e-9)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((mu - y.numpy()) ** 2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(mu - y.numpy())))
    assert m["loss"] == pytest.approx(float(torch.mean(torch.exp(z) - y * z)), rel=1e-6)
    assert monitor_mode("clicks.deviance") == "min"  # lower deviance is better


def test_scaled_counts_keep_the_deviance_in_the_labels_units() -> None:
    """With the label divided by its mean m, an output z means exp(z) * m counts."""
    m = 7.0
    scaled = TaskSpec(type="count", label_scale=m)
    z = np.array([0.1, -0.3, 0.8])
    y = np.array([6.0, 0.0, 20.0])
    got = task_metrics(scaled, z, y / m)
    assert got["deviance"] == pytest.approx(mean_poisson_deviance(y, np.exp(z) * m), rel=1e-9)
    cols = task_type(scaled).predict_columns("c", scaled, z)
    np.testing.assert_allclose(cols["c"], np.exp(z) * m)


def test_count_trains_from_the_api_to_the_mean_and_beats_a_constant() -> None:
    train, test = poisson_frame(6000, seed=1), poisson_frame(2000, seed=2)
    model = MultiTaskModel(
        features=FEATURES,
        tasks={"clicks": {"type": "count"}, "bought": {"type": "binary"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [16], "tower_units": [8]},
        optimizer={"lr": 0.003},
        training={"epochs": 12, "batch_size": 256, "progress": False},
    ).fit(train)
    pred = model.predict(test)["clicks"].to_numpy()
    assert (pred >= 0).all() and np.isfinite(pred).all()
    y = test["clicks"].to_numpy(dtype=np.float64)
    assert abs(pred.mean() / y.mean() - 1) < 0.05
    constant = poisson_deviance(y, np.full_like(y, train["clicks"].mean()))
    deviance = model.evaluate(test)["clicks"]["deviance"]
    assert deviance == pytest.approx(poisson_deviance(y, pred), rel=1e-4)
    assert deviance < 0.6 * constant  # the features explain most of the variation
    true_mu = np.exp(
        1.0
        + 0.7 * test["x"].to_numpy()
        + np.select([test.shop == "a", test.shop == "b"], [0.5, -0.5], 0.0)
    )
    # close to the irreducible deviance of the true rates
    assert deviance < 1.1 * poisson_deviance(y, true_mu)


def test_count_trains_from_a_run_file(tmp_path: Path) -> None:
    poisson_frame(3000, seed=3).to_csv(tmp_path / "table.csv", index=False)
    run: dict[str, Any] = {
        "data": {"path": "table.csv", "split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
        "features": FEATURES,
        "tasks": {"clicks": {"type": "count"}, "bought": {"type": "binary"}},
        "model": {"name": "shared_bottom", "shared_units": [16], "tower_units": [8]},
        "training": {"epochs": 3, "batch_size": 256, "monitor": "clicks.deviance"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["test"]["clicks"]
    assert set(metrics) >= {"deviance", "rmse", "mae", "loss", "count"}
    loaded = MultiTaskModel.load(out / "model")
    assert (loaded.predict(poisson_frame(50, seed=4))["clicks"] >= 0).all()


def test_negative_counts_are_refused() -> None:
    df = poisson_frame(100)
    df.loc[[3, 7], "clicks"] = -1
    model = MultiTaskModel(features=FEATURES, tasks={"clicks": {"type": "count"}})
    with pytest.raises(DataError, match=r"label column 'clicks' has 2 negative value\(s\)"):
        model.fit(df)


def test_count_takes_only_the_poisson_loss() -> None:
    with pytest.raises(ConfigError, match=r"loss 'mse' does not fit a count task"):
        MultiTaskModel(features=FEATURES, tasks={"clicks": {"type": "count", "loss": "mse"}})
