"""Smoke run of the out-of-core benchmark script (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_out_of_core_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_out_of_core", BENCH / "out_of_core.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke"])
    out = capsys.readouterr().out
    assert "streaming 20000" in out and "in-memory 5000" in out
    assert result["ratio"] > 0
