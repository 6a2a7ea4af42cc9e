"""Smoke run of the streaming-predict benchmark script, so it keeps working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "predict_stream.py"


@pytest.mark.usefixtures("one_thread")
def test_predict_stream_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_predict_stream", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "rows/s" in out and "peak RSS MB" in out
    assert [(r["mode"], r["rows"]) for r in results] == [
        ("stream", 2_000),
        ("stream", 20_000),
        ("memory", 2_000),
    ]
    for r in results:
        assert r["rows_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert f"{r['rows']:,}" in out
