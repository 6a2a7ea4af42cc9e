"""benchmarks/scaling.py runs its three sweeps on tiny sizes and prints its table.

No timing is asserted: the figures of a smoke run mean nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


def test_smoke_prints_every_sweep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("_bench_scaling", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while being built
    spec.loader.exec_module(bench)

    png = tmp_path / "scaling.png"
    assert bench.main(["--smoke", "--threads", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("|") and "---" not in ln]
    header, *rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert tuple(header) == bench.COLUMNS
    assert [(r[0], r[1]) for r in rows] == [
        ("rows", "2,000"),
        ("rows", "4,000"),
        ("experts", "2"),
        ("experts", "4"),
        ("tasks", "2"),
        ("tasks", "3"),
    ]
    for r in rows:
        assert float(r[5]) > 0 and float(r[6].replace(",", "")) > 0
    for sweep in ("rows", "experts", "tasks"):
        assert f"slope of log(s/epoch) on log({sweep}):" in out
    assert png.exists() and png.stat().st_size > 0  # matplotlib is a dev dependency
