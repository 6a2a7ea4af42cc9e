"""The command line: train -> metrics.json and a model folder; evaluate; predict; demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from polytask.cli import main


@pytest.fixture
def run_file(tmp_path: Path, toy_frame: pd.DataFrame) -> Path:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
        "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "training": {"epochs": 2, "batch_size": 256, "monitor": "mean.auc"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_train_writes_model_and_metrics(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.epochs=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"click", "dwell"}
    assert {"auc", "logloss"} <= set(metrics["test"]["click"])
    assert {"rmse", "mae"} <= set(metrics["validation"]["dwell"])
    assert metrics["train_samples_per_s"] > 0
    assert metrics["epochs_run"] == 1  # the override took effect
    assert metrics["rows"] == {"train": 1400, "validation": 300, "test": 300}
    assert (out / "model" / "weights.safetensors").is_file()
    assert "gates" in metrics


def test_evaluate_and_predict_on_raw_rows(
    run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out)]) == 0
    capsys.readouterr()
    table = tmp_path / "table.csv"
    assert main(["evaluate", str(out / "model"), str(table), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["click"]["count"] == 2000
    for suffix in ("csv", "parquet"):
        target = tmp_path / f"pred.{suffix}"
        assert main(["predict", str(out / "model"), str(table), "-o", str(target)]) == 0
        pred = pd.read_csv(target) if suffix == "csv" else pd.read_parquet(target)
        assert list(pred.columns) == ["click", "dwell"] and len(pred) == 2000


def test_config_errors_exit_2_with_the_key_named(
    run_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(run_file), "--out", str(tmp_path / "o"), "training.epcohs=3"]) == 2
    err = capsys.readouterr().err
    assert "training.epcohs" in err and "did you mean 'epochs'" in err


def test_demo_prints_a_comparison_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rows", "2000", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "shared_bottom" in out and "mmoe" in out and "y1" in out and "y2" in out


def test_train_streams_a_parquet_training_file(
    run_file: Path, tmp_path: Path, toy_frame: pd.DataFrame
) -> None:
    toy_frame.iloc[:1400].to_parquet(tmp_path / "train.parquet", index=False)
    toy_frame.iloc[1400:].to_csv(tmp_path / "test.csv", index=False)
    spec = yaml.safe_load(run_file.read_text())
    spec["data"] = {"train": "train.parquet", "test": "test.csv"}
    spec["training"].update(monitor="loss", stream={"buffer_rows": 500, "chunk_rows": 300})
    run_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.epochs=1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == {"train": 1400, "validation": 0, "test": 600}
    assert metrics["test"]["click"]["count"] == 600


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "cannot split data.path: data.train must name a Parquet file"),
        (
            ["data.path=", "data.split=", "data.train=table.csv", "data.loader=csv"],
            "data.loader 'csv' cannot be streamed",
        ),
    ],
)
def test_train_refuses_what_cannot_be_streamed(
    run_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    message: str,
) -> None:
    argv = ["train", str(run_file), "--out", str(tmp_path / "o"), "training.stream={}"]
    assert main([*argv, *overrides]) == 2
    err = capsys.readouterr().err
    # refused when the run file is validated, before any data is read
    assert err.startswith("error: invalid run file") and "\ntraining.stream" in err
    assert message in err
    assert not (tmp_path / "o").exists()


def test_train_encodes_the_test_and_validation_tables_once_after_fitting(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polytask.data import Preprocessor

    encoded: list[str] = []
    transform = Preprocessor.transform

    def spy(self: Preprocessor, df: pd.DataFrame, **kwargs: Any) -> Any:
        encoded.append(kwargs.get("what", "data"))
        return transform(self, df, **kwargs)

    monkeypatch.setattr(Preprocessor, "transform", spy)
    assert main(["train", str(run_file), "--out", str(tmp_path / "out"), "training.epochs=1"]) == 0
    # fit: the validation set (the training set goes through fit_transform); then the
    # reports: test and validation, once each
    assert encoded == ["validation set", "test set", "validation set"]
    assert "gates" in json.loads((tmp_path / "out" / "metrics.json").read_text())
