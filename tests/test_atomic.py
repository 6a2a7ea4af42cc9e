"""Atomic writes (`polytask._atomic`): what they leave behind is what a plain write would."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from polytask import ModelFileError, MultiTaskModel, _atomic
from polytask._atomic import atomic_dir
from polytask.cli import main

RUN = """\
features: {categorical: [color], numeric: [x]}
tasks: {click: {type: binary}}
model: {name: shared_bottom, shared_units: [4], tower_units: [2]}
training: {epochs: 1, progress: false}
data: {train: train.csv, test: train.csv}
"""


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_are_readable_by_others_as_the_umask_allows(
    tmp_path: Path, umask_022: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run.yaml").write_text(RUN)
    frame = pd.DataFrame(
        {"color": ["a", "b", "c", "a"], "x": [1.0, 2, 3, 4], "click": [0, 1, 0, 1]}
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(out)]) == 0
    model = out / "model"
    assert mode(model) == 0o755
    files = sorted(model.iterdir())
    assert files and {f.name: mode(f) for f in files} == {f.name: 0o644 for f in files}
    assert mode(out / "metrics.json") == 0o644
    assert mode(out / "config.yaml") == 0o644
    for name in ("p.csv", "p.parquet"):
        argv = ["predict", str(model), str(tmp_path / "train.csv"), "-o", str(tmp_path / name)]
        assert main(argv) == 0
        assert mode(tmp_path / name) == 0o644


def test_a_write_interrupted_between_its_renames_is_undone_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")

    def crash(src: Path, dst: Path) -> None:
        # The state a crash between the two renames leaves: the old folder aside, no target.
        if Path(dst) == target:
            raise KeyboardInterrupt
        real_replace(src, dst)

    real_replace = os.replace
    monkeypatch.setattr(_atomic, "restore_interrupted", lambda target: False)
    monkeypatch.setattr(_atomic.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
    monkeypatch.undo()
    old = _atomic.set_aside(target)
    assert not target.exists() and (old / "v").read_text() == "1"
    with pytest.raises(ModelFileError, match=r"rename it back, or save again"):
        MultiTaskModel.load(target)

    with pytest.raises(RuntimeError), atomic_dir(target):
        raise RuntimeError("a failed write")
    assert (target / "v").read_text() == "1" and not old.exists()
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("3")
    assert (target / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_swap_puts_the_old_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    real_replace = os.replace

    def fail(src: Path, dst: Path) -> None:
        if Path(dst) == target and Path(src).name.endswith(".tmp"):
            raise OSError("disk trouble")
        real_replace(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk trouble"), atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
