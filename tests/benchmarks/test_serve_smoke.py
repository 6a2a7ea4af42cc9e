"""Smoke run of the serving benchmark script with tiny settings, so it keeps working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"


@pytest.mark.usefixtures("one_thread")
def test_serve_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke", "--dir", str(tmp_path), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "torch 1-row latency ms" in out and "onnx saturation" in out
    assert (tmp_path / "r.json").is_file()
    for backend in ("torch", "onnx"):
        r = results[backend]
        assert r["latency_1_row"]["n"] == 20 and r["latency_100_rows"]["n"] == 5
        assert 0 < r["latency_1_row"]["p50_ms"] <= r["latency_1_row"]["p99_ms"]
        sat = r["saturation_100_rows"]
        assert sat["requests"] > 0 and sat["statuses"] == {"200": sat["requests"]}
        assert sat["rows_per_s"] == pytest.approx(100 * sat["requests_per_s"])
    load = results["torch"]["load"]
    assert load["server_errors"] == 0 and load["requests"] > 0
    assert load["rss_mb_start"] > 0 and load["rss_mb_end"] > 0
    ip = results["in_process"]
    assert ip["torch_network_rows_per_s"] > 0 and ip["onnx_network_rows_per_s"] > 0
