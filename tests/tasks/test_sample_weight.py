"""``tasks.<t>.sample_weight``: the task's loss is the weighted mean over labelled rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from polytask import ConfigError, DataError, MultiTaskModel
from polytask.cli import main
from polytask.losses import masked_loss, task_losses
from polytask.tasks import TaskSpec, weight_key


def test_masked_loss_is_the_weighted_mean_over_labelled_rows() -> None:
    spec = TaskSpec(type="regression", sample_weight="w")
    out = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    label = torch.tensor([0.0, float("nan"), 1.0, 6.0])
    w = torch.tensor([2.0, 5.0, 0.0, 1.0])  # the NaN row's weight is ignored
    expected = (2.0 * 1.0**2 + 0.0 * 2.0**2 + 1.0 * 2.0**2) / (2.0 + 0.0 + 1.0)
    loss = masked_loss(spec, out, label, w)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert out.grad is not None and out.grad[1].item() == 0.0 and out.grad[2].item() == 0.0
    # weights summing to 0 give 0, not NaN
    zero = masked_loss(spec, out, label, torch.zeros(4))
    assert zero.item() == 0.0
    # task_losses finds the weights beside the labels; an unweighted task beside it is intact
    tasks = {"r": spec, "b": TaskSpec(type="binary")}
    losses = task_losses(
        tasks,
        {"r": out, "b": torch.zeros(4)},
        {"r": label, weight_key("r"): w, "b": torch.tensor([1.0, 0.0, 1.0, 0.0])},
    )
    assert losses[0].item() == pytest.approx(expected)
    assert losses[1].item() == pytest.approx(np.log(2.0))


def _weighted_frame(n: int = 2000) -> pd.DataFrame:
    """Half the rows have label 0 and weight 1, half label 10 and weight 3; one constant
    feature, so the model can only learn one number: the weighted mean, 7.5 (unweighted 5)."""
    rng = np.random.default_rng(0)
    high = rng.random(n) < 0.5
    return pd.DataFrame(
        {
            "k": np.zeros(n),
            "y": np.where(high, 10.0, 0.0),
            "w": np.where(high, 3.0, 1.0),
        }
    )


def test_training_with_weights_reaches_the_weighted_mean() -> None:
    df = _weighted_frame()
    settings = {
        "features": {"numeric": ["k"]},
        "model": {"name": "shared_bottom", "shared_units": [4], "tower_units": [4]},
        "optimizer": {"lr": 0.05},
        "training": {"epochs": 15, "batch_size": 200, "progress": False},
    }
    weighted = MultiTaskModel(
        tasks={"y": {"type": "regression", "sample_weight": "w"}}, **settings
    ).fit(df)
    plain = MultiTaskModel(tasks={"y": {"type": "regression"}}, **settings).fit(df)
    closed_form = float(np.average(df.y, weights=df.w))
    assert weighted.predict(df.head(5))["y"].to_numpy() == pytest.approx(closed_form, abs=0.1)
    assert plain.predict(df.head(5))["y"].to_numpy() == pytest.approx(df.y.mean(), abs=0.1)


def test_missing_or_negative_weights_name_the_column_and_the_rows() -> None:
    df = _weighted_frame(100)
    df.loc[[1, 2], "w"] = np.nan
    df.loc[5, "w"] = -1.0
    model = MultiTaskModel(
        features={"numeric": ["k"]}, tasks={"y": {"type": "regression", "sample_weight": "w"}}
    )
    with pytest.raises(DataError) as err:
        model.fit(df)
    message = str(err.value)
    assert "\n" not in message
    assert "sample_weight column 'w' has 3 of 100 labelled rows" in message
    assert "missing or negative" in message


def test_a_weight_column_that_is_the_label_or_a_feature_is_refused() -> None:
    with pytest.raises(ConfigError, match="sample_weight column 'k' is a feature"):
        MultiTaskModel(
            features={"numeric": ["k"]},
            tasks={"y": {"type": "regression", "sample_weight": "k"}},
        )
    with pytest.raises(ConfigError, match="sample_weight column 'y' is its label"):
        MultiTaskModel(
            features={"numeric": ["k"]},
            tasks={"y": {"type": "regression", "sample_weight": "y"}},
        )


def test_sample_weight_trains_from_a_run_file(tmp_path: Path) -> None:
    df = _weighted_frame(1000)
    df["x"] = np.random.default_rng(1).normal(size=len(df))
    df["click"] = (df.y > 0).astype(int)
    df.to_csv(tmp_path / "t.csv", index=False)
    run = {
        "data": {"path": "t.csv", "split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
        "features": {"numeric": ["x"]},
        "tasks": {
            "y": {"type": "regression", "sample_weight": "w"},
            "click": {"type": "binary", "sample_weight": "w"},
        },
        "model": {"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        "training": {"epochs": 2, "batch_size": 128},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["y"]["count"] == 100
    # a saved weighted model predicts from features alone (no weight column needed)
    loaded = MultiTaskModel.load(out / "model")
    assert len(loaded.predict(df[["x"]].head(7))) == 7
