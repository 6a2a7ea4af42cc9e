"""Smoke run of the scale-out benchmark: a 2-process launch and the 2-launcher c10d
rehearsal on a tiny Parquet directory, and the scaling model's arithmetic (no timing
assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_scale_out_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_scale_out", BENCH / "scale_out.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--rows", "12000", "--processes", "2", "--file-rows", "6000", "--group-rows", "1500"]
    argv += ["--buffer-rows", "2048", "--batch-size", "256", "--skip-reference"]
    result = module.main([*argv, "--dir", str(tmp_path)])
    assert [r["rank"] for r in result["runs"]["12000 rows, 2 process(es)"]] == [0, 1]
    assert [r["rank"] for r in result["rehearsal"]] == [0, 1]
    assert "rehearsal: 2 launchers, c10d" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())  # the data went with the temporary folder
    # ring all-reduce: 2 (N-1)/N x 4 bytes per parameter, plus 2 (N-1) hops of latency
    rows = module.scaling_model(1_000_000, 0.01, 1000, latency_s=0.0)
    eight = next(r for r in rows if r["nodes"] == 8 and r["gbit"] == 10)
    assert eight["bytes"] == pytest.approx(2 * 7 / 8 * 4e6)
    assert eight["comm_ms"] == pytest.approx(7e6 * 8 / 10e9 * 1e3)
    assert eight["ratio"] == pytest.approx(10 / eight["comm_ms"])
    assert eight["batch_dominated"] == pytest.approx(eight["comm_ms"] / 10 * 1000)
