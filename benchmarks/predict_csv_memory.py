"""Peak memory of ``polytask predict`` on a large CSV: read whole vs streamed.

Writes a CSV of ``--rows`` rows (2 categorical + 2 numeric features, a binary and a
regression label), trains a small MMoE on its first 50,000 rows, then in fresh processes:

- ``whole``: what ``polytask predict`` did for a CSV before it streamed every format
  (``MultiTaskModel.predict`` on the whole table, then ``write_table``);
- ``stream``: ``python -m polytask predict MODEL FILE -o OUT`` as it is now (chunk by chunk).

Prints each process's peak RSS (``getrusage(RUSAGE_CHILDREN)``), wall seconds, and whether
the two outputs are byte-identical.

    python benchmarks/predict_csv_memory.py                # 2M rows (about 2 minutes)
    python benchmarks/predict_csv_memory.py --rows 20000   # seconds
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from polytask import MultiTaskModel

WHOLE = """\
import sys
from polytask import MultiTaskModel
from polytask.data import write_table
model = MultiTaskModel.load(sys.argv[1])
write_table(model.predict(sys.argv[2]), sys.argv[3])
"""


def make(folder: Path, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue", "black"], rows),
            "city": rng.integers(0, 1000, rows).astype(str),
            "x": rng.normal(size=rows),
            "z": rng.exponential(size=rows),
            "click": rng.integers(0, 2, rows),
            "dwell": rng.normal(size=rows),
        }
    )
    table = folder / "big.csv"
    frame.to_csv(table, index=False)
    model = MultiTaskModel(
        features={"categorical": ["color", "city"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 4, "expert_units": [32], "tower_units": [16]},
        training={"epochs": 1, "progress": False, "batch_size": 4096},
    ).fit(frame.iloc[:50_000])
    return table, model.save(folder / "model", overwrite=True)


def run(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest of any child so far: run the larger one last
    return max(peak, before) / 1024, seconds


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table, model = make(folder, args.rows)
        size = table.stat().st_size / 2**20
        # streamed first: RUSAGE_CHILDREN keeps the maximum over all children so far
        stream_rss, stream_s = run(
            [
                sys.executable,
                "-m",
                "polytask",
                "predict",
                str(model),
                str(table),
                "-o",
                str(folder / "stream.csv"),
            ]
        )
        whole_rss, whole_s = run(
            [sys.executable, "-c", WHOLE, str(model), str(table), str(folder / "whole.csv")]
        )
        same = (folder / "stream.csv").read_bytes() == (folder / "whole.csv").read_bytes()
    print(f"{args.rows:,} rows, {size:,.0f} MB CSV")
    print(f"whole:  peak RSS {whole_rss:,.0f} MB, {whole_s:.1f} s")
    print(f"stream: peak RSS {stream_rss:,.0f} MB, {stream_s:.1f} s")
    print(f"outputs byte-identical: {same}")
    return {"whole_mb": whole_rss, "stream_mb": stream_rss, "same": float(same)}


if __name__ == "__main__":
    main()
