"""Streaming predict: rows/s and peak memory of `MultiTaskModel.predict_to` on large Parquet
files, against the in-memory `predict` on the smaller one.

Generates (or reuses, under ``--dir``) Parquet files of ``--rows / 10`` and ``--rows`` rows
(4 categorical + 4 numeric feature columns, three labels), trains a tiny MMoE on a 50,000-row
sample, then predicts each file in a fresh process and reports rows/s, the process's peak
RSS, and its RSS just before predicting (imports and model loaded). Flat memory shows as
the same peak RSS for both file sizes.

    python benchmarks/predict_stream.py                  # 1M and 10M rows (minutes)
    python benchmarks/predict_stream.py --rows 2000000
    python benchmarks/predict_stream.py --smoke          # seconds, measured in-process
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
import torch

import polytask
from polytask import MultiTaskModel
from polytask._atomic import atomic_path
from polytask.data import write_table
from polytask.data.chunks import CHUNK_ROWS

CATEGORICAL = {"site": 50, "device": 8, "campaign": 2_000, "user": 200_000}
NUMERIC = ["price", "age", "hour", "history"]
GENERATE_ROWS = 1_000_000  # rows generated (and row groups written) at a time


def _block(rows: int, index: int) -> pa.Table:
    """Rows ``index * GENERATE_ROWS ...`` of the synthetic table (same seed, same rows)."""
    rng = np.random.default_rng([7, index])
    columns: dict[str, Any] = {}
    for name, cardinality in CATEGORICAL.items():
        dictionary = pa.array([f"{name}_{i}" for i in range(cardinality)])
        codes = pa.array(rng.zipf(1.3, rows) % cardinality, type=pa.int32())
        columns[name] = pa.DictionaryArray.from_arrays(codes, dictionary).cast(pa.string())
    price = rng.lognormal(3.0, 1.0, rows)
    age = rng.normal(40, 12, rows)
    age[rng.random(rows) < 0.05] = np.nan
    hour = rng.integers(0, 24, rows).astype(np.float64)
    history = rng.exponential(5.0, rows)
    columns.update(price=price, age=age, hour=hour, history=history)
    logit = 0.3 * np.log(price) - 0.02 * np.nan_to_num(age, nan=40) + 0.1 * (hour > 18)
    columns["click"] = (logit + rng.logistic(size=rows) > 0).astype(np.int8)
    columns["dwell"] = np.log1p(history) + rng.normal(size=rows)
    columns["kind"] = pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, rows)])
    return pa.table(columns)


def generate(path: Path, rows: int) -> Path:
    """Write ``rows`` rows to ``path`` (atomically), unless a file of that size is there."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        for index, start in enumerate(range(0, rows, GENERATE_ROWS)):
            table = _block(min(GENERATE_ROWS, rows - start), index)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=256 * 1024)
        assert writer is not None
        writer.close()
    return path


def train(sample_from: Path, model_dir: Path, sample_rows: int) -> None:
    batch = next(pq.ParquetFile(sample_from).iter_batches(batch_size=sample_rows))
    MultiTaskModel(
        features={"categorical": list(CATEGORICAL), "numeric": NUMERIC},
        tasks={
            "click": {"type": "binary"},
            "dwell": {"type": "regression"},
            "kind": {"type": "multiclass"},
        },
        model={"name": "mmoe", "num_experts": 2, "expert_units": [16], "tower_units": [8]},
        training={"epochs": 1, "batch_size": 1024, "progress": False},
    ).fit(batch.to_pandas()).save(model_dir)


def _status_mb(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Restart the peak-RSS count (Linux >= 4.0), so import-time peaks do not hide ours."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure(
    mode: str, data: Path, model_dir: Path, out: Path, chunk_rows: int, threads: int | None
) -> dict[str, Any]:
    """Predict ``data`` into ``out``: ``stream`` with `predict_to`, ``memory`` with `predict`
    and one write. RSS figures are this process's: run it in a fresh one to compare modes."""
    if threads:
        torch.set_num_threads(threads)
    model = MultiTaskModel.load(model_dir)
    reset = _reset_peak()
    before = _status_mb("VmRSS") or 0.0
    start = time.perf_counter()
    if mode == "stream":
        rows = model.predict_to(data, out, chunk_rows=chunk_rows)
    else:
        predictions = model.predict(data)
        write_table(predictions, out)
        rows = len(predictions)
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": (_status_mb("VmHWM") if reset else None)
        or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: kilobytes
        "rss_before_mb": before,
    }


def _in_child(mode: str, data: str, model_dir: str, out: str, *options: str) -> dict[str, Any]:
    src = str(Path(polytask.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, __file__, *options, "--measure", mode, data, model_dir, out],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--sample-rows", type=int, default=50_000, help="rows to train on")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads while predicting (0: torch's default); the tiny model "
        "gains nothing from more, and on a loaded machine they are slower",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "polytask-predict-stream",
        help="where the generated files are kept (and reused)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script")
    parser.add_argument("--measure", nargs=4, metavar=("MODE", "DATA", "MODEL", "OUT"))
    args = parser.parse_args(argv)
    if args.measure:
        mode, data, model_dir, out = args.measure
        paths = Path(data), Path(model_dir), Path(out)
        result = measure(mode, *paths, args.chunk_rows, args.threads)
        print(json.dumps(result))
        return []
    if args.smoke:
        args.rows, args.chunk_rows, args.sample_rows = 20_000, 4_096, 2_000
    args.dir.mkdir(parents=True, exist_ok=True)
    small = generate(args.dir / f"rows-{args.rows // 10}.parquet", args.rows // 10)
    large = generate(args.dir / f"rows-{args.rows}.parquet", args.rows)
    model_dir = args.dir / "model"
    train(small, model_dir, args.sample_rows)

    runs = [("stream", small), ("stream", large), ("memory", small)]
    results = []
    for mode, data in runs:
        out = args.dir / f"pred-{mode}-{data.stem}.parquet"
        if args.smoke:  # one process: the figures are printed but not comparable
            result = measure(mode, data, model_dir, out, args.chunk_rows, args.threads)
        else:
            result = _in_child(
                mode,
                str(data),
                str(model_dir),
                str(out),
                f"--chunk-rows={args.chunk_rows}",
                f"--threads={args.threads}",
            )
        out.unlink()
        results.append(result)

    print(
        f"predict on Parquet files of synthetic rows ({len(CATEGORICAL)} categorical + "
        f"{len(NUMERIC)} numeric features), tiny MMoE with 3 tasks, chunks of "
        f"{args.chunk_rows:,} rows, {args.threads or 'default'} thread(s); each run in a fresh "
        "process; RSS before = after imports and loading the model; peak = during predict"
        + (" (smoke: all in this process)" if args.smoke else "")
    )
    print(f"{'mode':<10}{'rows':>12}{'rows/s':>12}{'peak RSS MB':>14}{'RSS before MB':>15}")
    for r in results:
        name = "streaming" if r["mode"] == "stream" else "in-memory"
        print(
            f"{name:<10}{r['rows']:>12,}{r['rows_per_s']:>12,.0f}{r['peak_rss_mb']:>14,.0f}"
            f"{r['rss_before_mb']:>15,.0f}"
        )
    return results


if __name__ == "__main__":
    main()
