"""The checkpoint folder: layout, atomic writes, verification on read, safe loading."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from polytask import ConfigError, ModelFileError, MultiTaskModel
from polytask.training.checkpoint import list_checkpoints, load_latest, read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(frame: pd.DataFrame, folder: Path, **kwargs: Any) -> MultiTaskModel:
    """800 rows / 100 = 8 steps per epoch, 2 epochs, a checkpoint every 3 steps."""
    return MultiTaskModel(
        features={"categorical": ["color"], "numeric": ["x"]},
        tasks={"click": {"type": "binary"}},
        model={"name": "shared_bottom", "shared_units": [8], "tower_units": [4]},
        training={"epochs": 2, "batch_size": 100, "progress": False},
    ).fit(frame.iloc[:800], checkpoint_dir=folder, checkpoint_every=3, **kwargs)


@pytest.fixture
def folder(toy_frame: pd.DataFrame, tmp_path: Path) -> Path:
    _fit(toy_frame, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_the_newest_two_checkpoints_are_kept_whole(folder: Path) -> None:
    assert [p.name for p in list_checkpoints(folder)] == ["step-000000015", "step-000000012"]
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000012", "step-000000015"]
    newest = folder / "step-000000015"
    assert sorted(p.name for p in newest.iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
        "optimizer.pt",
        "state.safetensors",
    ]
    meta = json.loads((newest / "checkpoint.json").read_text())
    assert (meta["step"], meta["epoch"], meta["position"]) == (15, 2, 7)
    for name, info in meta["files"].items():
        data = (newest / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (info["bytes"], info["sha256"])
    checkpoint = read_checkpoint(newest)
    assert "rng.torch" in checkpoint.state and "source.epoch_start" in checkpoint.state
    assert len(meta["history"]) == 1 and meta["config"]["training"]["seed"] == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "truncate",
            r"optimizer\.pt: [\d,]+ bytes, checkpoint\.json lists \d+: the file was modified",
        ),
        ("flip", r"state\.safetensors: its SHA-256 does not match checkpoint\.json"),
        ("drop_meta", r"checkpoint\.json: missing"),
    ],
)
def test_a_damaged_checkpoint_is_a_model_file_error_naming_the_file(
    folder: Path, damage: str, message: str
) -> None:
    path = folder / "step-000000015"
    if damage == "truncate":
        data = (path / "optimizer.pt").read_bytes()
        (path / "optimizer.pt").write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray((path / "state.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (path / "state.safetensors").write_bytes(bytes(data))
    else:
        (path / "checkpoint.json").unlink()
    with pytest.raises(ModelFileError, match=message):
        read_checkpoint(path)


def test_every_checkpoint_unreadable_lists_them_all(folder: Path) -> None:
    for path in list_checkpoints(folder):
        (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError) as err:
        load_latest(folder)
    assert "step-000000015/model.safetensors" in str(err.value)
    assert "step-000000012/model.safetensors" in str(err.value)


class _NotATensor:
    pass


def test_optimizer_state_is_never_unpickled_beyond_tensors(folder: Path) -> None:
    # Even a file whose checksum was updated to match cannot make polytask build objects.
    path = folder / "step-000000015"
    buffer = io.BytesIO()
    torch.save({"optimizer": _NotATensor()}, buffer)
    data = buffer.getvalue()
    (path / "optimizer.pt").write_bytes(data)
    meta = json.loads((path / "checkpoint.json").read_text())
    meta["files"]["optimizer.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"optimizer\.pt: .*weights_only=True"):
        read_checkpoint(path)


def test_a_fresh_run_refuses_a_folder_with_checkpoints(
    toy_frame: pd.DataFrame, folder: Path
) -> None:
    with pytest.raises(ConfigError, match=r"already holds checkpoints.*resume=True"):
        _fit(toy_frame, folder)


def test_a_failed_write_leaves_the_previous_checkpoints_intact(
    toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ckpt"
    (folder / ".step-000000003.x1y2.tmp").mkdir(parents=True)  # left by a crash mid-write
    writes = [0]
    original = Path.write_text

    def failing_write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "checkpoint.json":
            writes[0] += 1
            if writes[0] == 3:
                raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(OSError, match="No space left"):
        _fit(toy_frame, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["step-000000003", "step-000000006"]
    for path in list_checkpoints(folder):
        read_checkpoint(path)
