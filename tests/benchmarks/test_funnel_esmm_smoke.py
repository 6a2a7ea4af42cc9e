"""The funnel benchmark script runs end to end and prints its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "funnel_esmm.py"


def test_smoke_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("funnel_esmm", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "CVR AUC, all impressions" in out and "CTR AUC" in out
    for model in ("esmm", "escm2_ips", "escm2_dr", "naive", "ideal"):
        assert any(line.startswith(f"{model} ") for line in out.splitlines()), model
    assert "esmm - naive" in out and "escm2_dr - esmm" in out
