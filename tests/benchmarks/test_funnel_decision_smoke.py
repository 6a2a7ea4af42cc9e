"""The funnel decision benchmark runs end to end on tiny settings and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_funnel_decision_smoke(tmp_path: Path) -> None:
    front = tmp_path / "front.png"
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "funnel_decision.py"),
            "--seeds",
            "1",
            "--rows",
            "3000",
            "--trials",
            "5",
            "--front",
            str(front),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for ranking in ("pCTR alone", "pCTCVR alone", "expected revenue", "decide (chosen)"):
        assert f"| {ranking} |" in out
    assert front.stat().st_size > 10_000
