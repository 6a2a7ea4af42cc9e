"""benchmarks/hashing.py runs end to end on a small table and prints one row per encoding.

No timing or memory figure is asserted: those of a smoke run mean nothing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hashing.py"


def test_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("_bench_hashing", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rows", "5000", "--distinct", "3000", "--buckets", "1000"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 3,000 ")]
    assert [r.split("|")[2].strip() for r in rows] == ["vocabulary", "hash_buckets: 1,000"]
    table_sizes = [r.split("|")[6].strip() for r in rows]
    assert float(table_sizes[1]) == 0.0  # a hashed column stores no vocabulary
