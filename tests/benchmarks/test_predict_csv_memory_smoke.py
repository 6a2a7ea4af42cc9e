"""Smoke run of the CSV predict-memory benchmark, so it keeps working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "predict_csv_memory.py"


def test_predict_csv_memory_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_predict_csv_memory", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--rows", "60000"])
    out = capsys.readouterr().out
    assert "outputs byte-identical: True" in out
    assert result["same"] == 1.0 and result["stream_mb"] > 0 and result["whole_mb"] > 0
