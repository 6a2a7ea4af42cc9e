"""Per-task best epochs and the loggers of ``training.loggers`` (csv, tensorboard, mlflow)."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from polytask.cli import main
from polytask.tasks import TaskSpec
from polytask.tracking import (
    annotate_history,
    epochs_apart,
    scalars,
    task_best_epochs,
    task_monitor_metrics,
)

TASKS = {
    "ctr": TaskSpec(type="binary"),
    "dwell": TaskSpec(type="regression"),
    "kind": TaskSpec(type="multiclass"),
}


def _history() -> list[dict[str, Any]]:
    """AUC of ctr peaks at epoch 2 (NaN at 4 never counts), RMSE of dwell is lowest at 5,
    accuracy of kind ties at 1 and 3 (the first counts)."""
    auc = [0.70, 0.80, 0.75, math.nan, 0.79]
    rmse = [2.0, 1.5, 1.4, 1.3, 1.2]
    acc = [0.6, 0.5, 0.6, 0.55, 0.4]
    return [
        {
            "epoch": e + 1,
            "train_loss": {"ctr": 0.5, "dwell": 1.0, "kind": 0.9},
            "validation": {
                "ctr": {"auc": auc[e], "logloss": 0.4, "loss": 0.4, "count": 10.0},
                "dwell": {"rmse": rmse[e], "mae": 1.0, "loss": rmse[e] ** 2, "count": 10.0},
                "kind": {"accuracy": acc[e], "logloss": 1.0, "loss": 1.0, "count": 10.0},
            },
            "monitor": {"mean.auc": auc[e]},
        }
        for e in range(5)
    ]


def test_per_task_best_epochs_against_known_maxima() -> None:
    best = task_best_epochs(_history(), TASKS, "mean.auc")
    assert best == {
        "ctr": {"metric": "auc", "epoch": 2, "value": 0.80},
        "dwell": {"metric": "rmse", "epoch": 5, "value": 1.2},
        "kind": {"metric": "accuracy", "epoch": 1, "value": 0.6},
    }
    # the loss monitor judges every task by its own loss (lower is better)
    by_loss = task_best_epochs(_history(), TASKS, "loss")
    assert by_loss["dwell"] == {"metric": "loss", "epoch": 5, "value": pytest.approx(1.44)}
    assert task_monitor_metrics(TASKS, "ctr.logloss") == {
        "ctr": "logloss",
        "dwell": "rmse",
        "kind": "logloss",
    }
    assert task_best_epochs([{"epoch": 1, "train_loss": {}}], TASKS, "loss") == {}


def test_history_records_the_best_so_far_and_the_cli_sentence() -> None:
    history = _history()
    annotate_history(history, TASKS, "mean.auc")
    assert history[0]["task_best"]["ctr"]["epoch"] == 1
    assert history[2]["task_best"]["ctr"]["epoch"] == 2
    assert history[3]["task_best"]["dwell"] == {"metric": "rmse", "epoch": 4, "value": 1.3}
    best = history[-1]["task_best"]
    # monitor best at 2: dwell (5) is 3 epochs away, more than 2
    text = epochs_apart(best, "mean.auc", 2)
    assert text is not None and "dwell at 5" in text and "ctr at 2" in text
    assert epochs_apart(best, "mean.auc", 3) is None  # 2 from 1, 1 from 2, 2 from 5
    assert epochs_apart(best, "mean.auc", 2, gap=3) is None


def test_scalars_flatten_an_epoch_record() -> None:
    record = {
        **_history()[1],
        "lr": {"experts": 0.001, "towers.ctr": 0.003},
        "sigma.ctr": 0.9,
        "weight.dwell": 1.5,
        "gate_entropy": {"ctr": 1.2},
        "train_samples_per_s": 1000.0,
    }
    values = scalars(record)
    assert values["validation/ctr/auc"] == 0.80
    assert "validation/ctr/count" not in values
    assert values["train/loss/dwell"] == 1.0
    assert values["lr/towers.ctr"] == 0.003
    assert values["weighting/sigma/ctr"] == 0.9 and values["weighting/weight/dwell"] == 1.5
    assert values["gates/entropy/ctr"] == 1.2
    assert values["throughput/train_samples_per_s"] == 1000.0
    assert values["monitor/mean.auc"] == 0.80


@pytest.fixture
def run_file(tmp_path: Path, toy_frame: pd.DataFrame) -> Path:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
        "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "loss": "uncertainty",
        "training": {"epochs": 3, "batch_size": 256, "monitor": "mean.auc"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_writes_history_csv_and_task_best_epochs(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out)]) == 0
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for column in (
        "validation/click/auc",
        "validation/dwell/rmse",
        "train/loss/click",
        "weighting/sigma/dwell",
        "lr/experts",
        "gates/entropy/click",
        "throughput/train_samples_per_s",
    ):
        assert all(float(r[column]) == float(r[column]) for r in rows), column
    entropy = [float(r["gates/entropy/click"]) for r in rows]
    assert all(0 < e <= math.log(2) + 1e-6 for e in entropy)  # 2 experts
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "model" / "history.json").read_text())
    aucs = [h["validation"]["click"]["auc"] for h in history]
    assert metrics["task_best_epochs"]["click"]["epoch"] == 1 + aucs.index(max(aucs))
    rmses = [h["validation"]["dwell"]["rmse"] for h in history]
    assert metrics["task_best_epochs"]["dwell"]["epoch"] == 1 + rmses.index(min(rmses))
    assert history[-1]["task_best"] == metrics["task_best_epochs"]


def test_tensorboard_events_hold_one_series_per_task_metric(run_file: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.loggers=[tensorboard]"]) == 0
    assert not (out / "history.csv").exists()  # csv was not asked for
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "validation/click/auc",
        "validation/click/logloss",
        "validation/dwell/rmse",
        "validation/dwell/mae",
        "train/loss/click",
        "train/loss/dwell",
        "weighting/sigma/click",
        "gates/entropy/dwell",
    ):
        assert tag in tags, tag
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3]
    history = json.loads((out / "model" / "history.json").read_text())
    logged = [e.value for e in acc.Scalars("validation/click/auc")]
    expected = [h["validation"]["click"]["auc"] for h in history]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_mlflow_run_has_metrics_and_artifacts(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store, for the test
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.loggers=[mlflow]"]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("polytask")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    history = client.get_metric_history(run_id, "validation/click/auc")
    assert [m.step for m in history] == [1, 2, 3]
    assert runs[0].data.params["model.name"] == "mmoe"
    assert "final/test/click/auc" in runs[0].data.metrics
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"run.yaml", "config.yaml", "metrics.json", "model"} <= top
    model = {a.path for a in client.list_artifacts(run_id, "model")}
    assert "model/weights.safetensors" in model


def test_a_missing_logger_package_names_the_extra(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.loggers=[mlflow]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: training.loggers: mlflow needs the mlflow package: pip install 'polytask[mlflow]'"
    )
    assert "\n" not in err
    assert not out.exists()  # refused before training


def test_an_unknown_logger_is_a_config_error(run_file: Path, capsys: Any) -> None:
    assert main(["train", str(run_file), "training.loggers=[wandb]"]) == 2
    assert "training.loggers.0" in capsys.readouterr().err


def test_step_losses_are_logged_every_50_steps(
    tmp_path: Path, toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    from polytask import MultiTaskModel
    from polytask.tracking import CSVLogger, Tracker

    logger = CSVLogger(tmp_path / "history.csv")
    tracker = Tracker([logger])
    tasks = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}
    model = MultiTaskModel(
        features=toy_features,
        tasks=tasks,
        model={"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        training={"epochs": 2, "batch_size": 16, "progress": False},
    )
    model.fit(toy_frame.iloc[:1500], validation=toy_frame.iloc[1500:], callbacks=[tracker])
    # 1500 rows / 16 = 94 steps per epoch: steps 50, 100, 150 over two epochs
    with open(tmp_path / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["50", "100", "150"]
    assert set(rows[0]) == {"step", "step/loss/click", "step/loss/dwell"}
    assert all(0 < float(r["step/loss/click"]) < 2 for r in rows)
    with open(tmp_path / "history.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
