"""What training shows: one line per epoch through the ``polytask`` logger, epoch callbacks."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from polytask import MultiTaskModel
from polytask.training.progress import epoch_line, wrap

SMALL = {"name": "shared_bottom", "shared_units": [8], "tower_units": [4]}


def _model(features: Any, tasks: Any, **training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=SMALL,
        training={"epochs": 3, "batch_size": 512, **training},
    )


def test_one_line_per_epoch_to_the_polytask_logger(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="polytask")
    model = _model(toy_features, toy_tasks, monitor="mean.auc")
    model.fit(toy_frame.iloc[:1500], validation=toy_frame.iloc[1500:])
    lines = [r.getMessage() for r in caplog.records if r.name == "polytask"]
    assert len(lines) == 3
    for epoch, (line, record) in enumerate(zip(lines, model.history_, strict=True), start=1):
        assert line.startswith(f"epoch {epoch}/3")
        assert "samples/s" in line
        assert f"click={record['train_loss']['click']:.4f}" in line
        assert f"val mean.auc={record['monitor']['mean.auc']:.4f}" in line
        assert all(len(part) <= 80 for part in line.splitlines())


def test_progress_false_is_silent(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _model(toy_features, toy_tasks, epochs=1, progress=False).fit(toy_frame)
    assert [r for r in caplog.records if r.name == "polytask"] == []


def test_callbacks_receive_each_epoch_record_after_validation(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    seen: list[dict[str, Any]] = []
    model = _model(toy_features, toy_tasks, progress=False)
    model.fit(toy_frame.iloc[:1500], validation=toy_frame.iloc[1500:], callbacks=[seen.append])
    assert seen == model.history_
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert all("validation" in r and r["seconds"] > 0 for r in seen)


def test_the_line_wraps_between_fields_and_never_cuts_a_number() -> None:
    tasks = {f"task_with_a_long_name_{i}": 0.123456 + i for i in range(6)}
    record = {
        "epoch": 12,
        "seconds": 3.25,
        "train_samples_per_s": 123456.7,
        "train_loss": tasks,
        "monitor": {"mean.auc": 0.87654321},
    }
    text = epoch_line(record, 100)
    lines = text.splitlines()
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("epoch 12/100  3.2s  123,457 samples/s")
    words = text.split()
    for i, value in enumerate(tasks.values()):
        assert f"task_with_a_long_name_{i}={value:.4f}" in words
    assert words[-1] == "mean.auc=0.8765"
    # a field wider than the line stands alone, whole
    assert wrap(["a", "x" * 90, "b"]) == "a\n  " + "x" * 90 + "\n  b"


def test_a_script_without_logging_configured_prints_epoch_lines(tmp_path: Path) -> None:
    """No handler configured anywhere: the lines still reach stderr, plain (no terminal)."""
    script = tmp_path / "fit.py"
    script.write_text(
        "import numpy as np, pandas as pd\n"
        "from polytask import MultiTaskModel\n"
        "rng = np.random.default_rng(0)\n"
        "df = pd.DataFrame({'x': rng.normal(size=300), 'y': rng.integers(0, 2, 300)})\n"
        "MultiTaskModel(features={'numeric': ['x']}, tasks={'y': {'type': 'binary'}},\n"
        "    model={'name': 'shared_bottom', 'shared_units': [4], 'tower_units': [2]},\n"
        "    training={'epochs': 2, 'batch_size': 100}).fit(df)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], done.stderr
    assert "\x1b[" not in done.stderr  # no terminal control codes in a log


def test_polytask_train_into_a_log_file_shows_a_line_per_epoch(
    tmp_path: Path, toy_frame: pd.DataFrame
) -> None:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "run.yaml").write_text(
        "data: {path: table.csv, split: {train: 0.8, validation: 0.2, test: 0.0}}\n"
        "features: {numeric: [x, z]}\n"
        "tasks: {click: {type: binary}}\n"
        "model: {name: shared_bottom, shared_units: [4], tower_units: [2]}\n"
        "training: {epochs: 2, batch_size: 400, monitor: click.auc}\n"
    )
    log = tmp_path / "log"
    with log.open("w") as out:
        subprocess.run(
            [sys.executable, "-m", "polytask", "train", "run.yaml", "--out", "out"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=True,
        )
    lines = [line for line in log.read_text().splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], log.read_text()
    assert all("val click.auc=" in line for line in lines)
    assert "best epoch " in log.read_text() and "training.monitor click.auc" in log.read_text()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["processes"] == 1


def test_without_validation_polytask_train_says_there_is_no_best_epoch(
    tmp_path: Path, toy_frame: pd.DataFrame
) -> None:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "run.yaml").write_text(
        "data: {path: table.csv, split: {train: 0.9, validation: 0.0, test: 0.1}}\n"
        "features: {numeric: [x, z]}\n"
        "tasks: {click: {type: binary}}\n"
        "model: {name: shared_bottom, shared_units: [4], tower_units: [2]}\n"
        "training: {epochs: 1, batch_size: 400, progress: false}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "polytask", "train", "run.yaml", "--out", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "no validation split, so no best epoch" in done.stdout
    assert "best epoch None" not in done.stdout
