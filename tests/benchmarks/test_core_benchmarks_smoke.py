"""Smoke runs of the model-comparison benchmark scripts, so they keep working."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from polytask.models import MODELS

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mmoe_synthetic_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    results = _load("mmoe_synthetic").main(["--smoke"])
    out = capsys.readouterr().out
    assert set(results) == {"shared_bottom", "moe", "mmoe"}
    for line in ("shared_bottom", "moe", "mmoe", "p=1.0", "p=0.5"):
        assert line in out


def test_census_models_smoke(capsys: pytest.CaptureFixture[str], census_test_file: Path) -> None:
    bench = _load("census_models")
    results = bench.main(["--smoke", "--data", str(census_test_file)])
    out = capsys.readouterr().out
    assert set(results) == set(bench.MODELS)
    # Every architecture is covered but the funnel ones, whose tasks census does not have
    # (and the sequence models, which read sentences: benchmarks/conll2000.py)
    rows = {name for name, entry in MODELS.items() if not entry.sequence}
    assert {spec["name"] for spec in bench.MODELS.values()} == rows - {"esmm", "escm2"}
    assert all(len(v) == 1 for r in results.values() for v in r.values())
    assert "income" in out and "marital" in out
