"""benchmarks/movielens.py runs end to end on a few thousand rows and prints its tables.

No timing or metric is asserted: the figures of a smoke run mean nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "movielens.py"


def load() -> object:
    spec = importlib.util.spec_from_file_location("_bench_movielens", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|") and "---" not in ln]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_throughput_smoke(capsys: pytest.CaptureFixture[str], movielens_dir: Path) -> None:
    bench = load()
    data = str(movielens_dir.parent)
    args = ["throughput", "--repeats", "1", "--epochs", "1", "--rows", "3000", "--data", data]
    assert bench.main(args) == 0  # type: ignore[attr-defined]
    table = rows(capsys.readouterr().out)
    assert [r[0] for r in table] == ["system", "polytask", "hand-written"]


def test_quality_smoke(capsys: pytest.CaptureFixture[str], movielens_dir: Path) -> None:
    bench = load()
    data = str(movielens_dir.parent)
    args = ["quality", "--seeds", "1", "--epochs", "1", "--rows", "2000", "--data", data]
    assert bench.main([*args, "--models", "single-task", "cgc"]) == 0  # type: ignore[attr-defined]
    table = rows(capsys.readouterr().out)
    assert table[0][:2] == ["features", "model"]
    assert table[0][2:] == ["rating rmse", "like auc", "dislike auc"]
    assert [r[:2] for r in table[1:]] == [
        ["with history", "single-task"],
        ["with history", "cgc"],
        ["without history", "single-task"],
        ["without history", "cgc"],
    ]


def test_quality_ablation_runs_each_half_of_the_history(
    capsys: pytest.CaptureFixture[str], movielens_dir: Path
) -> None:
    bench = load()
    data = str(movielens_dir.parent)
    args = ["quality", "--seeds", "1", "--epochs", "1", "--rows", "2000", "--data", data]
    assert bench.main([*args, "--models", "cgc", "--ablation"]) == 0  # type: ignore[attr-defined]
    table = rows(capsys.readouterr().out)
    assert [r[0] for r in table[1:]] == [
        "with history",
        "without history",
        "history ids only",
        "history ratings only",
    ]
    features = bench.settings(1, 1)["features"]  # type: ignore[attr-defined]
    for keep in bench.VARIANTS.values():  # type: ignore[attr-defined]
        kept = bench.history_variant(features, keep)["categorical"]  # type: ignore[attr-defined]
        names = [c["name"] for c in kept if isinstance(c, dict)]
        assert [n for n in names if n.startswith("history")] == list(keep)
