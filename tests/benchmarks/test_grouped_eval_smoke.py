"""The grouped-evaluation benchmark runs and prints its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_grouped_eval_smoke() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "grouped_eval.py"),
            "--rows",
            "20000",
            "--groups",
            "2000",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rows 20,000  groups 2,000" in out
    assert "peak RSS" in out and "gauc 0." in out
