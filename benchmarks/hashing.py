"""Preprocessing a high-cardinality id column: a stored vocabulary against ``hash_buckets``.

    PYTHONPATH=src python benchmarks/hashing.py --rows 10000000 --distinct 5000000 100000

For each number of distinct ids and each encoding, a fresh process builds a table of
``--rows`` rows (an int64 ``user_id`` drawn uniformly from ``--distinct`` values, one numeric
column and a binary label), then times ``Preprocessor.fit_transform`` on it (fit and encode,
the work ``polytask train`` does on its training split). Reported per run: seconds, the
process's peak RSS (``VmHWM``) and the peak above the RSS it had once the table was built
(what the preprocessing itself took), and the size of the saved preprocessor state
(``preprocessor.json``: the vocabulary, or only the bucket count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def child(rows: int, distinct: int, buckets: int | None) -> None:
    """One measurement; prints a JSON line."""
    import time

    import numpy as np
    import pandas as pd

    from polytask.data import Preprocessor
    from polytask.data.features import FeaturesConfig
    from polytask.tasks import TaskSpec

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, distinct, rows),
            "x": rng.normal(size=rows),
            "y": rng.integers(0, 2, rows),
        }
    )
    user = {"name": "user_id", **({"hash_buckets": buckets} if buckets else {})}
    pre = Preprocessor(
        features=FeaturesConfig(categorical=[user], numeric=["x"]),
        tasks={"y": TaskSpec(type="binary")},
    )
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # the ID-column warning of the vocabulary
        data = pre.fit_transform(df)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    state = len(json.dumps(pre.state_dict()))
    assert data.categorical.shape == (rows, 1)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mib": peak / 1024,
                "above_table_mib": (peak - before) / 1024,
                "state_mib": state / 2**20,
                "table_size": pre.cardinalities[0],
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="(default: 10,000,000)")
    parser.add_argument(
        "--distinct", type=int, nargs="+", default=[5_000_000, 100_000], help="(default: 5M 100k)"
    )
    parser.add_argument("--buckets", type=int, default=1_000_000, help="(default: 1,000,000)")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows, distinct, buckets = args.child
        child(rows, distinct, buckets or None)
        return 0
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"Preprocessor.fit_transform of {args.rows:,} rows (int64 user_id, 1 numeric, 1 label)")
    print("| distinct ids | encoding | seconds | peak RSS MiB | above the table MiB | state MiB |")
    print("|---|---|---|---|---|---|")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for distinct in args.distinct:
        for buckets in (0, args.buckets):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(args.rows), str(distinct), str(buckets)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            name = f"hash_buckets: {buckets:,}" if buckets else "vocabulary"
            print(
                f"| {distinct:,} | {name} | {r['seconds']:.1f} | {r['peak_mib']:,.0f} | "
                f"{r['above_table_mib']:,.0f} | {r['state_mib']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
