"""Smoke run of the checkpoint-overhead benchmark script, so it keeps working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoint_overhead.py"


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_overhead_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_checkpoint_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke"])
    out = capsys.readouterr().out
    assert result["checkpoints"] == 2  # 8 steps, one every 3
    assert "ms each" in out and "of the training time" in out
