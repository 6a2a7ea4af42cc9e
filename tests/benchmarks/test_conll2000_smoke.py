"""Smoke run of benchmarks/conll2000.py, so it keeps working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "conll2000.py"


def test_conll2000_benchmark_smoke(conll2000: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_conll2000", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--smoke", "--data", str(conll2000)])
    out = capsys.readouterr().out
    assert set(results) == {*bench.VARIANTS, "throughput"}
    assert set(results["chunk_alone"]) == {"seconds", "chunk_f1"}
    assert set(results["pos_alone"]) == {"seconds", "pos_accuracy"}
    for name in ("joint_top", "pos_inner", "alternate"):
        f1, _, values = results[name]["chunk_f1"]
        assert 0 <= f1 <= 1 and len(values) == 1
    assert results["throughput"]["hand_tokens_per_s"] > 0
    assert "training tokens/s" in out and "pos_inner" in out
