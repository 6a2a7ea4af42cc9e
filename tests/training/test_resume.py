"""Exact resume: a run interrupted mid-epoch and resumed from its last checkpoint ends with
weights bit-identical to an uninterrupted run with the same seed (on the same machine, CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

import polytask.training.step as step_module
from polytask import ConfigError, DataError, MultiTaskModel
from polytask.config import load_run_file
from polytask.run import run_training
from polytask.training import TrainStep
from polytask.training.checkpoint import CheckpointWarning, list_checkpoints

REPO = Path(__file__).resolve().parents[2]
TASKS = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(Exception):
    """Stands in for SIGKILL in the in-process tests."""


def _model(loss: str = "uncertainty", **training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks=TASKS,
        model={
            "name": "mmoe",
            "num_experts": 3,
            "expert_units": [16],
            "tower_units": [8],
            "dropout": 0.3,  # draws from torch's global RNG every step
        },
        loss=loss,
        optimizer={"lr": 5e-3},
        training={"epochs": 3, "batch_size": 128, "progress": False, **training},
    )


def _kill_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the ``step``-th training step raise `Killed` before it changes anything."""
    calls = [0]
    original = TrainStep.__call__

    def step_fn(self: TrainStep, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == step:
            raise Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(step_module.TrainStep, "__call__", step_fn)


def _tensors(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    out = {f"network.{k}": v for k, v in model.network_.state_dict().items()}
    out.update({f"weighting.{k}": v for k, v in model.weighting_.state_dict().items()})
    return out


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def _without_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    timing = ("train_samples_per_s", "seconds")
    return [{k: v for k, v in r.items() if k not in timing} for r in history]


def _interrupted_then_resumed(
    make: Any,
    fit_args: tuple[Any, ...],
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    kill_at: int,
    every: int,
    **fit_kwargs: Any,
) -> MultiTaskModel:
    with monkeypatch.context() as patch:
        _kill_at(patch, kill_at)
        with pytest.raises(Killed):
            make().fit(*fit_args, checkpoint_dir=folder, checkpoint_every=every, **fit_kwargs)
    steps = [int(p.name.removeprefix("step-")) for p in list_checkpoints(folder)]
    assert steps and max(steps) < kill_at - 1, "the kill must come after steps not checkpointed"
    resumed: MultiTaskModel = make().fit(
        *fit_args, checkpoint_dir=folder, checkpoint_every=every, resume=True, **fit_kwargs
    )
    assert resumed.resumed_from_ == folder / f"step-{max(steps):09d}"
    return resumed


@pytest.mark.parametrize("loss", ["uncertainty", "dwa", "gradnorm", "rlw"])
def test_joint_resume_mid_epoch_is_bit_identical(
    toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    # 1,000 rows / 128 = 8 steps per epoch: killed at step 15 of 24 (epoch 2, batch 7),
    # newest checkpoint at step 12 (epoch 2, batch 4); validation, early stopping and
    # restore_best all run, and DWA's weights depend on the epoch-mean losses.
    train, valid = toy_frame.iloc[:1000], toy_frame.iloc[1600:]

    def make() -> MultiTaskModel:
        return _model(loss, patience=5, restore_best=True)

    reference = make().fit(train, validation=valid)
    resumed = _interrupted_then_resumed(
        make, (train,), tmp_path, monkeypatch, kill_at=15, every=4, validation=valid
    )
    assert_identical(_tensors(reference), _tensors(resumed))
    assert _without_timing(resumed.history_) == _without_timing(reference.history_)
    assert resumed.best_epoch_ == reference.best_epoch_


def test_alternate_resume_mid_epoch_is_bit_identical(
    toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Task sequence and per-task streams draw from one generator at different times; the
    # click stream (1,000 rows, 8 batches) starts a second pass within the run.
    data = {
        "click": toy_frame.iloc[:1000].drop(columns=["dwell"]),
        "dwell": toy_frame.iloc[1000:1600].drop(columns=["click"]),
    }

    def make() -> MultiTaskModel:
        return _model("uncertainty", schedule="alternate", task_sampling="proportional")

    reference = make().fit(data)
    resumed = _interrupted_then_resumed(make, (data,), tmp_path, monkeypatch, kill_at=19, every=4)
    assert_identical(_tensors(reference), _tensors(resumed))
    assert _without_timing(resumed.history_) == _without_timing(reference.history_)


def test_streamed_training_resumes_mid_epoch_bit_identically(
    toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Out of core (training.stream): the epoch's row-group order and shuffle-buffer
    # permutations are replayed from the saved generator state.
    path = tmp_path / "train.parquet"
    toy_frame.iloc[:1600].drop(columns=["kind"]).to_parquet(path, row_group_size=300)
    stream = {"buffer_rows": 500, "chunk_rows": 200}

    def make() -> MultiTaskModel:
        return _model(stream=stream)

    reference = make().fit(str(path))
    resumed = _interrupted_then_resumed(
        make, (str(path),), tmp_path / "ckpt", monkeypatch, kill_at=22, every=6
    )
    assert_identical(_tensors(reference), _tensors(resumed))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = toy_frame.iloc[:1600]
    reference = _model().fit(train)
    with monkeypatch.context() as patch:
        _kill_at(patch, 24)
        with pytest.raises(Killed):
            _model().fit(train, checkpoint_dir=tmp_path, checkpoint_every=5)
    newest, previous = list_checkpoints(tmp_path)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with pytest.warns(
        CheckpointWarning, match=r"model\.safetensors: 100 bytes, checkpoint\.json lists"
    ):
        resumed = _model().fit(train, checkpoint_dir=tmp_path, checkpoint_every=5, resume=True)
    assert resumed.resumed_from_ == previous
    assert_identical(_tensors(reference), _tensors(resumed))
    assert (tmp_path / f"{newest.name}.corrupt").is_dir()  # kept for inspection, out of the way


def test_more_epochs_extend_a_finished_run(toy_frame: pd.DataFrame, tmp_path: Path) -> None:
    train = toy_frame.iloc[:1600]
    _model(epochs=2).fit(train, checkpoint_dir=tmp_path)  # a checkpoint at the end of each epoch
    extended = _model(epochs=3).fit(train, checkpoint_dir=tmp_path, resume=True)
    assert_identical(_tensors(_model(epochs=3).fit(train)), _tensors(extended))
    assert len(extended.history_) == 3


def test_resume_without_checkpoints_starts_from_the_beginning(
    toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    train = toy_frame.iloc[:1600]
    with pytest.warns(CheckpointWarning, match="no checkpoint to resume from"):
        model = _model(epochs=1).fit(train, checkpoint_dir=tmp_path, resume=True)
    assert model.resumed_from_ is None
    assert_identical(_tensors(_model(epochs=1).fit(train)), _tensors(model))


def test_resume_refuses_a_changed_config_naming_the_keys(
    toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    train = toy_frame.iloc[:1600]
    _model(epochs=1).fit(train, checkpoint_dir=tmp_path)
    changed = MultiTaskModel.from_config(_model(epochs=1).config)
    changed.config.optimizer.lr = 0.1
    changed.config.training.seed = 7
    with pytest.raises(ConfigError) as err:
        changed.fit(train, checkpoint_dir=tmp_path, resume=True)
    message = str(err.value)
    assert "['optimizer.lr', 'training.seed']" in message
    assert "optimizer.lr: checkpoint 0.005, now 0.1" in message


def test_resume_refuses_different_training_data(toy_frame: pd.DataFrame, tmp_path: Path) -> None:
    _model(epochs=1).fit(toy_frame.iloc[:1600], checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match="data differ"):
        _model(epochs=1).fit(toy_frame.iloc[:1500], checkpoint_dir=tmp_path, resume=True)


# --------------------------------------------------------------------------- real SIGKILL
RUN = {
    "data": {"path": "data.csv", "split": {"train": 0.8, "validation": 0.2, "test": 0.0}},
    "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
    "tasks": TASKS,
    "model": {
        "name": "mmoe",
        "num_experts": 3,
        "expert_units": [16],
        "tower_units": [8],
        "dropout": 0.3,
    },
    "loss": "dwa",
    "optimizer": {"lr": 0.005, "scheduler": {"name": "cosine"}},
    "training": {
        "epochs": 6,
        "batch_size": 64,
        "checkpoint_every": 7,
        "patience": 20,
        "progress": False,
        "num_threads": 1,
    },
}
STEPS_PER_EPOCH = 25  # 1,600 training rows / 64


def _train(run_file: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-m", "polytask", "train", str(run_file), "--out", str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _mid_epoch_checkpoint(folder: Path) -> bool:
    for path in list_checkpoints(folder):
        step = int(path.name.removeprefix("step-"))
        if (
            step > STEPS_PER_EPOCH
            and step % STEPS_PER_EPOCH
            and (path / "checkpoint.json").exists()
        ):
            return True
    return False


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    toy_frame.drop(columns=["kind"]).to_csv(tmp_path / "data.csv", index=False)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(RUN))
    victim = _train(run_file, tmp_path / "killed")
    # The uninterrupted run, in this process (the run file pins one thread, as in the child)
    # while the child starts.
    cfg, base = load_run_file(run_file)
    run_training(cfg, base, tmp_path / "reference")
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not _mid_epoch_checkpoint(checkpoints):
        assert victim.poll() is None, victim.communicate()[0].decode()
        assert time.monotonic() < deadline, "no mid-epoch checkpoint within 120 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model").exists()

    resumed = _train(run_file, tmp_path / "killed", "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out.decode()
    assert_identical(
        load_file(tmp_path / "reference" / "model" / "weights.safetensors"),
        load_file(tmp_path / "killed" / "model" / "weights.safetensors"),
    )
