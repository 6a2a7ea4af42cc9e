"""Smoke run of the precision/compile benchmark script (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_precision_smoke(capsys: pytest.CaptureFixture[str], census_test_file: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_precision", BENCH / "precision.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(
        ["--smoke", "--data", str(census_test_file), "--configs", "eager fp32", "eager bf16"]
    )
    out = capsys.readouterr().out
    assert set(results) == {"eager fp32", "eager bf16"} and "samples/s" in out
