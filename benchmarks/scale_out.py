"""Sharded streaming under torchrun: peak RSS per rank and samples/s for 1 and 2 processes
on a synthetic Parquet directory at two sizes, a 2-"node" rehearsal on localhost, and the
scaling model of docs/distributed.md from the reference model's parameters and step time.

    PYTHONPATH=src python benchmarks/scale_out.py                      # 2M and 20M rows
    PYTHONPATH=src python benchmarks/scale_out.py --rows 2000000 --skip-reference
    PYTHONPATH=src python benchmarks/scale_out.py --smoke

Data: a directory of Parquet files written in chunks into a temporary folder (never kept):
4 categorical columns (10 to 10,000 codes), 4 numeric, two binary tasks, files of
``--file-rows`` rows in row groups of ``--group-rows``. Each run is a fresh launch of
``python -m torch.distributed.run --nproc_per_node=P`` whose ranks each stream their row
groups (`training.stream`, 1 epoch, MMoE 4 x [64], towers [32], global batch 1024, 262,144-row
shuffle buffer, one thread per process) and print their own peak RSS (``ru_maxrss``) and the
epoch's samples/s (global rows trained / epoch seconds, the same figure on every rank).
The fit includes the sharded streaming preprocessor fit.

The rehearsal starts two launchers (``--nnodes=2 --nproc_per_node=1``, c10d rendezvous on
127.0.0.1), as two machines would, on the smaller directory.

The scaling model (``--reference``, default examples/bench_census_mmoe.yaml): the reference
model is built from its run file and trained for one epoch in one process to measure its step
time; from its parameter count P (float32 gradients, 4 P bytes) it prints the ring
all-reduce bytes per step and node, ``2 (N-1)/N x 4P``, and per link speed and node count the
compute-to-communication ratio ``t_step / t_comm`` and the per-node batch below which
communication takes longer than compute (no overlap assumed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
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
ROOT = Path(__file__).resolve().parents[1]


def generate(folder: Path, rows: int, *, file_rows: int, group_rows: int, seed: int = 0) -> Path:
    """``rows`` synthetic rows in files of ``file_rows`` rows (memory ~ one row group)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    weights = {c: rng.normal(size=k) for c, k in CARDS.items()}
    for f, start in enumerate(range(0, rows, file_rows)):
        writer = None
        try:
            stop = min(start + file_rows, rows)
            for lo in range(start, stop, group_rows):
                n = min(group_rows, stop - lo)
                cols: dict[str, Any] = {c: rng.integers(0, k, n) for c, k in CARDS.items()}
                num = rng.normal(size=(n, len(NUMERIC)))
                cols.update({c: num[:, j] for j, c in enumerate(NUMERIC)})
                z = sum(weights[c][cols[c]] for c in CARDS) * 0.5
                cols["y1"] = z + num[:, 0] - 0.5 * num[:, 1] + rng.logistic(size=n) > 0
                cols["y2"] = 0.7 * z + num[:, 2] + rng.logistic(size=n) > 0
                cols["y1"], cols["y2"] = cols["y1"].astype(np.int8), cols["y2"].astype(np.int8)
                table = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(folder / f"part-{f:04d}.parquet", table.schema)
                writer.write_table(table, row_group_size=group_rows)
        finally:
            if writer is not None:
                writer.close()
    return folder


def _model(buffer_rows: int, batch_size: int) -> Any:
    from polytask import MultiTaskModel

    return MultiTaskModel(
        features={"categorical": list(CARDS), "numeric": NUMERIC, "embedding_dim": 8},
        tasks={"t1": {"type": "binary", "label": "y1"}, "t2": {"type": "binary", "label": "y2"}},
        model={"name": "mmoe", "num_experts": 4, "expert_units": [64], "tower_units": [32]},
        training={
            "epochs": 1,
            "batch_size": batch_size,
            "progress": False,
            "num_threads": 1,
            "stream": {"buffer_rows": buffer_rows, "chunk_rows": 65_536},
        },
    )


def _child(path: str, buffer_rows: int, batch_size: int, result: Path) -> None:
    """One rank (or the one process): stream-train on ``path``, write ``result/rank<r>.json``."""
    model = _model(buffer_rows, batch_size)
    start = time.perf_counter()
    model.fit(path)
    fit_s = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    record = model.history_[0]
    rank = int(os.environ.get("RANK", "0"))
    values = {
        "rank": rank,
        "samples_per_s": record["train_samples_per_s"],
        "epoch_s": record["seconds"],
        "fit_s": fit_s,
        "peak_rss_mib": rss,
    }
    (result / f"rank{rank}.json").write_text(json.dumps(values))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _child_args(path: Path, args: argparse.Namespace, result: Path) -> list[str]:
    result.mkdir()
    return [
        str(Path(__file__).resolve()),
        "--child",
        str(path),
        "--result",
        str(result),
        "--buffer-rows",
        str(args.buffer_rows),
        "--batch-size",
        str(args.batch_size),
    ]


def _results(result: Path) -> list[dict[str, float]]:
    rows = [json.loads(f.read_text()) for f in result.glob("rank*.json")]
    return sorted(rows, key=lambda r: r["rank"])


def launch(
    path: Path, processes: int, args: argparse.Namespace, result: Path
) -> list[dict[str, float]]:
    """One torchrun launch of ``processes`` ranks on one "node"."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *_child_args(path, args, result),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"launch failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return _results(result)


def rehearse(path: Path, args: argparse.Namespace, result: Path) -> list[dict[str, float]]:
    """Two launchers, one process each, joined by a c10d rendezvous on localhost."""
    endpoint = f"127.0.0.1:{_free_port()}"
    child = _child_args(path, args, result)
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint={endpoint}",
                "--rdzv_id=polytask-rehearsal",
                *child,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=3600) for p in launchers]
    for p, (_, err) in zip(launchers, outputs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"rehearsal launcher failed ({p.returncode}):\n{err[-3000:]}")
    return _results(result)


def reference_step(run_file: Path, data: str | None = None, threads: int = 1) -> dict[str, float]:
    """The reference model's parameter count and its measured step time (1 epoch, one
    process, the run file's settings)."""
    import torch

    from polytask import MultiTaskModel
    from polytask.config import load_run_file
    from polytask.run import load_splits

    overrides = ["training.epochs=1", "training.progress=false", f"training.num_threads={threads}"]
    if data is not None:
        overrides.append(f"data.path={Path(data).resolve()}")
    cfg, base = load_run_file(run_file, overrides)
    splits = load_splits(cfg.data, base)
    model = MultiTaskModel.from_config(cfg).fit(splits.train)
    params = sum(p.numel() for p in model.network_.parameters())
    embedding = sum(
        m.weight.numel() for m in model.network_.modules() if isinstance(m, torch.nn.Embedding)
    )
    sps = float(model.history_[0]["train_samples_per_s"])
    batch = cfg.training.batch_size
    return {
        "params": params,
        "embedding_params": embedding,
        "samples_per_s": sps,
        "batch_size": batch,
        "step_s": batch / sps,
        "threads": torch.get_num_threads(),
    }


def scaling_model(
    params: int, step_s: float, batch: int, latency_s: float = 20e-6
) -> list[dict[str, float]]:
    """Ring all-reduce of float32 gradients, no overlap with compute: per link speed and node
    count, bytes each node sends per step ``2 (N-1)/N x 4P``, communication time (that over
    the link, plus ``2 (N-1)`` hops of ``latency_s``), the compute-to-communication ratio at
    the measured step, and the per-node batch below which communication takes longer than
    compute (compute time taken as proportional to the batch)."""
    rows = []
    for gbit in (10, 25, 100):
        for nodes in (1, 8, 64):
            sent = 2 * (nodes - 1) / nodes * 4 * params
            comm_s = sent * 8 / (gbit * 1e9) + 2 * (nodes - 1) * latency_s
            rows.append(
                {
                    "gbit": gbit,
                    "nodes": nodes,
                    "bytes": sent,
                    "comm_ms": comm_s * 1e3,
                    "ratio": step_s / comm_s if comm_s else float("inf"),
                    "batch_dominated": comm_s / step_s * batch if comm_s else 0.0,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 20_000_000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--file-rows", type=int, default=2_000_000)
    parser.add_argument("--group-rows", type=int, default=250_000)
    parser.add_argument("--buffer-rows", type=int, default=262_144)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--reference", type=Path, default=ROOT / "examples/bench_census_mmoe.yaml")
    parser.add_argument(
        "--reference-data", default=None, help="the reference run file's data.path, if moved"
    )
    parser.add_argument("--reference-threads", type=int, default=1)
    parser.add_argument(
        "--step-ms", type=float, default=None, help="model this step time instead of measured"
    )
    parser.add_argument("--latency-us", type=float, default=20.0, help="per ring hop")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-rehearsal", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary data goes")
    parser.add_argument("--smoke", action="store_true", help="20,000 and 40,000 rows")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.buffer_rows, args.batch_size, args.result)
        return {}
    if args.smoke:
        args.rows, args.file_rows, args.group_rows = [20_000, 40_000], 10_000, 2_500
        args.buffer_rows, args.batch_size = 4096, 256
        args.skip_reference = True
    out: dict[str, Any] = {"runs": {}, "rehearsal": None, "reference": None, "model": None}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folders = {}
        for rows in args.rows:
            folders[rows] = generate(
                Path(tmp) / f"rows-{rows}",
                rows,
                file_rows=args.file_rows,
                group_rows=args.group_rows,
            )
            for p in args.processes:
                result = Path(tmp) / f"result-{rows}-{p}"
                out["runs"][f"{rows} rows, {p} process(es)"] = launch(
                    folders[rows], p, args, result
                )
        if not args.skip_rehearsal:
            out["rehearsal"] = rehearse(folders[min(args.rows)], args, Path(tmp) / "rehearsal")
    print(f"1 epoch, MMoE 4x[64], global batch {args.batch_size}, buffer {args.buffer_rows}")
    print("run".ljust(34) + "samples/s".rjust(11) + "epoch s".rjust(9) + "  peak RSS MiB per rank")
    for name, ranks in out["runs"].items():
        r0 = ranks[0]
        rss = ", ".join(f"{r['peak_rss_mib']:.0f}" for r in ranks)
        print(f"{name.ljust(34)}{r0['samples_per_s']:11.0f}{r0['epoch_s']:9.1f}  {rss}")
    if out["rehearsal"] is not None:
        ranks = out["rehearsal"]
        rss = ", ".join(f"{r['peak_rss_mib']:.0f}" for r in ranks)
        print(
            f"{'rehearsal: 2 launchers, c10d'.ljust(34)}{ranks[0]['samples_per_s']:11.0f}"
            f"{ranks[0]['epoch_s']:9.1f}  {rss}  ({min(args.rows)} rows)"
        )
    if not args.skip_reference:
        ref = reference_step(args.reference, args.reference_data, args.reference_threads)
        out["reference"] = ref
        step_s = ref["step_s"] if args.step_ms is None else args.step_ms / 1e3
        out["model"] = scaling_model(
            int(ref["params"]), step_s, int(ref["batch_size"]), args.latency_us * 1e-6
        )
        print(
            f"reference {args.reference.name}: {ref['params']:,.0f} parameters "
            f"({ref['embedding_params']:,.0f} in embeddings), {ref['samples_per_s']:,.0f} "
            f"samples/s at batch {ref['batch_size']:.0f} on {ref['threads']:.0f} thread(s): "
            f"step {ref['step_s'] * 1e3:.1f} ms; the model below uses a step of "
            f"{step_s * 1e3:.1f} ms and {args.latency_us:g} us per ring hop"
        )
        print(
            "Gbit/s  nodes  all-reduce MB/step/node  comm ms  compute/comm  "
            "comm > compute below batch/node"
        )
        for r in out["model"]:
            print(
                f"{r['gbit']:6d} {r['nodes']:6d} {r['bytes'] / 1e6:24.2f} {r['comm_ms']:8.2f}"
                f" {r['ratio']:13.1f} {r['batch_dominated']:20.0f}"
            )
    return out


if __name__ == "__main__":
    main()
