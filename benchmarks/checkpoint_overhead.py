"""What checkpoints cost: milliseconds per checkpoint, its size, and the share of training
time at a given ``checkpoint_every``.

Trains the same MMoE twice on synthetic rows, without checkpoints and with one every
``--every`` steps, timing each checkpoint write (serialise, hash, fsync, rename, prune).

    python benchmarks/checkpoint_overhead.py               # ~1 minute on 2 cores
    python benchmarks/checkpoint_overhead.py --smoke
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polytask import MultiTaskModel
from polytask.training import checkpoint
from polytask.training.checkpoint import list_checkpoints


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user": rng.integers(0, 20_000, rows).astype(str),
            "item": rng.integers(0, 5_000, rows).astype(str),
            "site": rng.integers(0, 50, rows).astype(str),
            "x1": rng.normal(size=rows),
            "x2": rng.normal(size=rows),
        }
    )
    df["click"] = (df.x1 + rng.logistic(size=rows) > 0).astype(int)
    df["dwell"] = df.x2 + rng.normal(size=rows)
    return df


def fit(data: pd.DataFrame, args: argparse.Namespace, folder: Path | None) -> float:
    model = MultiTaskModel(
        features={"categorical": ["user", "item", "site"], "numeric": ["x1", "x2"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 8, "expert_units": [64], "tower_units": [16]},
        training={"epochs": args.epochs, "batch_size": args.batch_size, "progress": False},
    )
    start = time.perf_counter()
    if folder is None:
        model.fit(data)
    else:
        model.fit(data, checkpoint_dir=folder, checkpoint_every=args.every)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--every", type=int, default=50, help="steps between checkpoints")
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.epochs, args.batch_size, args.every = 2_000, 1, 256, 3
    data = frame(args.rows)

    writes: list[float] = []
    save = checkpoint.Checkpointer.save

    def timed_save(self: checkpoint.Checkpointer, state: Any) -> None:
        start = time.perf_counter()
        save(self, state)
        writes.append(time.perf_counter() - start)

    checkpoint.Checkpointer.save = timed_save  # type: ignore[method-assign]
    folder = Path(tempfile.mkdtemp(prefix="polytask-ckpt-"))
    try:
        fit(data.head(1_000), args, None)  # warm-up
        plain = fit(data, args, None)
        with_checkpoints = fit(data, args, folder / "ckpt")
        newest = list_checkpoints(folder / "ckpt")[0]
        size = sum(f.stat().st_size for f in newest.iterdir())
    finally:
        checkpoint.Checkpointer.save = save  # type: ignore[method-assign]
        shutil.rmtree(folder, ignore_errors=True)

    steps = args.epochs * -(-len(data) // args.batch_size)
    result = {
        "steps": steps,
        "checkpoints": len(writes),
        "ms_per_checkpoint": 1000 * statistics.median(writes),
        "checkpoint_mb": size / 2**20,
        "seconds_without": plain,
        "seconds_with": with_checkpoints,
        "overhead_pct": 100 * sum(writes) / plain,
    }
    print(
        f"MMoE (8 experts of 64), {args.rows:,} rows, {steps} steps of {args.batch_size}, "
        f"a checkpoint every {args.every} steps"
    )
    print(
        f"{result['checkpoints']} checkpoints of {result['checkpoint_mb']:.1f} MB, median "
        f"{result['ms_per_checkpoint']:.1f} ms each; training {plain:.1f} s without, "
        f"{with_checkpoints:.1f} s with; checkpoint writes = {result['overhead_pct']:.1f}% "
        "of the training time"
    )
    return result


if __name__ == "__main__":
    main()
