"""Ctrl-C during training: stop after the step, keep the best model so far, say how to go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from polytask import MultiTaskModel
from polytask.errors import TrainingInterrupted
from polytask.training.checkpoint import read_checkpoint

SMALL = {"name": "shared_bottom", "shared_units": [8], "tower_units": [4]}


def test_fit_stops_after_the_step_and_keeps_the_best_epoch(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, tmp_path: Path
) -> None:
    """A SIGINT sent from the first epoch's callback: the fit stops one step into epoch 2,
    writes a checkpoint there, and the model holds epoch 1's weights."""
    model = MultiTaskModel(
        features=toy_features,
        tasks=toy_tasks,
        model=SMALL,
        training={"epochs": 50, "batch_size": 200, "progress": False, "monitor": "mean.auc"},
    )

    def interrupt(record: dict[str, Any]) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as err:
        model.fit(
            toy_frame.iloc[:1600],
            validation=toy_frame.iloc[1600:],
            callbacks=[interrupt],
            checkpoint_dir=tmp_path / "ck",
            checkpoint_every=1000,
        )
    assert isinstance(err.value, KeyboardInterrupt)
    steps_per_epoch = 8  # 1600 rows in batches of 200
    assert (err.value.epoch, err.value.step) == (2, steps_per_epoch + 1)
    assert err.value.checkpoint == tmp_path / "ck" / f"step-{steps_per_epoch + 1:09d}"
    assert err.value.checkpoint.is_dir()
    assert model.interrupted_ and len(model.history_) == 1 and model.best_epoch_ == 1
    # The checkpoint holds the weights one step into epoch 2, and epoch 1's as the best.
    saved = read_checkpoint(err.value.checkpoint).model
    for key, value in model.network_.state_dict().items():
        assert torch.equal(value, saved[f"best.{key}"]), key
    assert not all(
        torch.equal(v, saved[f"network.{k}"]) for k, v in model.network_.state_dict().items()
    )
    assert len(model.predict(toy_frame.head(5))) == 5  # fitted, usable


def _run_file(tmp_path: Path, toy_frame: pd.DataFrame, training: str) -> Path:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {path: table.csv, split: {train: 0.8, validation: 0.2, test: 0.0}}\n"
        "features: {categorical: [color, size], numeric: [x, z]}\n"
        "tasks: {click: {type: binary}, dwell: {type: regression}}\n"
        "model: {name: shared_bottom, shared_units: [8], tower_units: [4]}\n"
        f"training: {{epochs: 100000, batch_size: 50, monitor: click.auc, {training}}}\n"
    )
    return path


def _interrupt_after_epoch_2(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    command = [sys.executable, "-m", "polytask", "train", "run.yaml", "--out", "out", *extra]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 2/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + out, err


@pytest.mark.parametrize("checkpoints", [False, True])
def test_ctrl_c_in_polytask_train_saves_the_model_and_exits_130(
    tmp_path: Path, toy_frame: pd.DataFrame, checkpoints: bool
) -> None:
    _run_file(tmp_path, toy_frame, "checkpoint_every: 1000" if checkpoints else "seed: 0")
    code, out, err = _interrupt_after_epoch_2(tmp_path)
    assert code == 130, err
    assert out.count("\nepoch ") >= 1 and "epoch 1/100000" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted at epoch 3, step ")
    assert "to out/model" in lines[0]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["epochs_run"] == 2
    assert f"best epoch {metrics['best_epoch']}" in lines[0]
    model = MultiTaskModel.load(tmp_path / "out" / "model")
    assert model.best_epoch_ == metrics["best_epoch"]
    if checkpoints:
        assert "continue with `polytask train run.yaml --resume --out out`" in lines[0]
        assert list((tmp_path / "out" / "checkpoints").iterdir())
        step = int(lines[0].split("step ")[1].split(":")[0])
        again = ["run.yaml", "--out", "out", "--resume", "training.epochs=3"]
        done = subprocess.run(
            [sys.executable, "-m", "polytask", "train", *again],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"at step {step}: epoch 3, {step - 64} of its 32 batches done" in done.stdout
        assert "epoch 3/3" in done.stdout
    else:
        assert "no checkpoint to resume from" in lines[0]
