"""benchmarks/throughput.py runs end to end on a few thousand rows and prints its table.

No timing is asserted: the figures of a smoke run mean nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def table(text: str) -> list[list[str]]:
    """The cells of the markdown table in ``text`` (header first, separator dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if "---" not in ln]


def test_smoke_prints_one_row_per_config_and_system(
    capsys: pytest.CaptureFixture[str], census_test_file: Path
) -> None:
    bench = load_script(SCRIPT)
    assert bench.main(["--smoke", "--threads", "1", "--data", str(census_test_file)]) == 0
    out = capsys.readouterr().out
    header, *rows = table(out)
    assert tuple(header) == bench.COLUMNS
    systems = list(bench.SYSTEMS)  # DeepCTR-Torch included: it is a dev dependency
    assert bench.deepctr_available() is None and "not importable" not in out
    assert [(r[0], r[1]) for r in rows] == [(c, s) for c in bench.CONFIGS for s in systems]
    col = {name: k for k, name in enumerate(header)}
    for r in rows:
        assert float(r[col["train samples/s"]].replace(",", "")) > 0
        assert float(r[col["infer samples/s"]].replace(",", "")) > 0
        assert r[col["peak RSS MiB"]] == "-"  # --smoke skips the RSS subprocesses
        for task in ("AUC income", "AUC marital"):
            assert 0.0 <= float(r[col[task]]) <= 1.0
        if r[1] == "hand-written":
            assert r[col["train x hand"]] == r[col["infer x hand"]] == "1.00"


def test_peak_rss_is_read_from_the_child() -> None:
    bench = load_script(SCRIPT)
    child = (
        "b = bytearray(96 << 20)\n"
        "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))"
    )
    assert bench.peak_rss_mib([sys.executable, "-c", child]) > 96
