"""Out-of-core training (training.stream) from a synthetic Parquet file: samples/s and peak RSS
of streaming at two sizes (flat memory), and streaming vs in-memory throughput on one size.

Each measurement runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. The
file is generated in chunks (flat memory): 4 categorical columns (cardinality 10..10,000), 4
numeric columns, two binary tasks. The model is a small MMoE (4 experts [64], towers [32]),
1 epoch, batch 1024; streaming uses a 262,144-row shuffle buffer.

    PYTHONPATH=src python benchmarks/out_of_core.py --rows 20000000 --compare-rows 2000000
    PYTHONPATH=src python benchmarks/out_of_core.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CARDS = {"c0": 10, "c1": 100, "c2": 1000, "c3": 10000}
NUMERIC = ["n0", "n1", "n2", "n3"]


def generate(path: Path, rows: int, *, chunk: int = 500_000, seed: int = 0) -> Path:
    """Write ``rows`` synthetic rows in row groups of ``chunk`` rows (memory ~ one chunk)."""
    rng = np.random.default_rng(seed)
    weights = {c: rng.normal(size=k) for c, k in CARDS.items()}
    writer = None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols: dict[str, Any] = {c: rng.integers(0, k, n) for c, k in CARDS.items()}
            num = rng.normal(size=(n, len(NUMERIC)))
            cols.update({c: num[:, j] for j, c in enumerate(NUMERIC)})
            z = sum(weights[c][cols[c]] for c in CARDS) * 0.5
            z1 = z + num[:, 0] - 0.5 * num[:, 1]
            z2 = 0.7 * z + num[:, 2] + 0.3 * num[:, 0]
            cols["y1"] = (z1 + rng.logistic(size=n) > 0).astype(np.int8)
            cols["y2"] = (z2 + rng.logistic(size=n) > 0).astype(np.int8)
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path


def _model(stream: bool, buffer_rows: int) -> Any:
    from polytask import MultiTaskModel

    training: dict[str, Any] = {"epochs": 1, "batch_size": 1024, "progress": False}
    if stream:
        training["stream"] = {"buffer_rows": buffer_rows, "chunk_rows": 65_536}
    return MultiTaskModel(
        features={"categorical": list(CARDS), "numeric": NUMERIC, "embedding_dim": 8},
        tasks={"t1": {"type": "binary", "label": "y1"}, "t2": {"type": "binary", "label": "y2"}},
        model={"name": "mmoe", "num_experts": 4, "expert_units": [64], "tower_units": [32]},
        training=training,
    )


def _child(path: str, stream: bool, buffer_rows: int) -> None:
    model = _model(stream, buffer_rows)
    start = time.perf_counter()
    model.fit(path)  # in memory: read_table reads the whole file
    total = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    sps = model.history_[0]["train_samples_per_s"]
    print(json.dumps({"samples_per_s": sps, "fit_s": total, "peak_rss_mib": rss}))


def measure(path: Path, stream: bool, buffer_rows: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, __file__, "--child", str(path), "--buffer-rows", str(buffer_rows)]
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="large streamed file")
    parser.add_argument("--compare-rows", type=int, default=2_000_000, help="both ways")
    parser.add_argument("--buffer-rows", type=int, default=262_144)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="20,000 and 5,000 rows")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.stream, args.buffer_rows)
        return {}
    if args.smoke:
        args.rows, args.compare_rows, args.buffer_rows = 20_000, 5_000, 4096
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results: dict[str, Any] = {}
        small = generate(Path(tmp) / "small.parquet", args.compare_rows)
        for r in range(args.repeats):  # alternate the two ways
            for name, stream in (("in-memory", False), ("streaming", True)):
                results.setdefault(f"{name} {args.compare_rows}", []).append(
                    measure(small, stream, args.buffer_rows)
                )
            _ = r
        big = generate(Path(tmp) / "big.parquet", args.rows)
        results[f"streaming {args.rows}"] = [measure(big, True, args.buffer_rows)]
    print(f"1 epoch, MMoE 4x[64], batch 1024, buffer {args.buffer_rows} rows")
    print("run".ljust(26) + "samples/s".rjust(12) + "fit s".rjust(9) + "peak RSS MiB".rjust(14))
    table: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
        table[name] = med
        print(
            name.ljust(26)
            + f"{med['samples_per_s']:12.0f}{med['fit_s']:9.1f}{med['peak_rss_mib']:14.0f}"
        )
    ratio = (
        table[f"streaming {args.compare_rows}"]["samples_per_s"]
        / table[f"in-memory {args.compare_rows}"]["samples_per_s"]
    )
    print(f"streaming / in-memory throughput at {args.compare_rows} rows: {ratio:.2f}x")
    return {"table": table, "ratio": ratio}


if __name__ == "__main__":
    main()
