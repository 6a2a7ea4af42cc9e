"""How polytask's training time per epoch grows with rows, experts and tasks.

    PYTHONPATH=src python benchmarks/scaling.py                     # rows up to 1e6, minutes
    PYTHONPATH=src python benchmarks/scaling.py --rows 1e4 3e4 1e5 3e5 1e6 3e6 1e7 \\
        --time-budget 3600                                           # the full sweep, ~1 hour

Data: a generated table already encoded (what polytask's ``Preprocessor`` produces), so
the figures are the training loop's alone: ``--categorical`` columns of ``--cardinality``
codes each, embedded in 8 dimensions, and ``--numeric`` standard normal columns projected to
8, with binary labels from a random logistic model of the numeric columns. The model is
MMoE (``--experts`` of ``--expert-units``, towers [64], softmax gates), trained with
``fit_loop``, the loop ``MultiTaskModel.fit`` runs after encoding, with Adam 1e-3, batch
1024, plain sum of the task losses. Time per epoch is the median over ``--epochs`` epochs of
what the trainer's own history records (the per-epoch shuffle and every step; no
evaluation).

Three sweeps: rows (experts 8, tasks 2), experts (rows ``--sweep-rows``, tasks 2) and tasks
(rows ``--sweep-rows``, experts 8). Each prints a table, with the slope of log(seconds) on
log(size): 1 means cost proportional to size. ``--time-budget`` stops a sweep before a size
that would start after that many seconds in all. With matplotlib, ``--plot`` writes the
three curves to a PNG.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polytask.config import OptimizerConfig, TaskConfig, TrainingConfig
from polytask.data import EncodedData
from polytask.models import MoEParams, mmoe
from polytask.models.base import Head
from polytask.nn import FeatureInput
from polytask.training import build_optimizer, fit_loop
from polytask.weighting import Sum
from polytask.weighting.base import NoParams

SWEEPS = ("rows", "experts", "tasks")
COLUMNS = ("sweep", "size", "rows", "experts", "tasks", "s/epoch", "samples/s")


@dataclass(frozen=True)
class Shape:
    categorical: int
    cardinality: int
    numeric: int
    expert_units: tuple[int, ...]
    batch_size: int
    epochs: int


def synthetic(rows: int, tasks: int, shape: Shape, seed: int = 0) -> EncodedData:
    """An encoded table: codes, standardized numbers and 0/1 labels, one column per task."""
    g = torch.Generator().manual_seed(seed)
    categorical = torch.randint(0, shape.cardinality, (rows, shape.categorical), generator=g)
    numeric = torch.randn(rows, shape.numeric, generator=g)
    weights = torch.randn(shape.numeric, tasks, generator=g) / math.sqrt(shape.numeric)
    p = torch.sigmoid(numeric @ weights)
    labels = (torch.rand(rows, tasks, generator=g) < p).float()
    return EncodedData(
        categorical=categorical,
        numeric=numeric,
        labels={f"task{k}": labels[:, k].contiguous() for k in range(tasks)},
    )


def seconds_per_epoch(data: EncodedData, experts: int, shape: Shape) -> float:
    """Median over epochs of one fresh model's epoch time, from the trainer's history."""
    names = list(data.labels)
    tasks = {name: TaskConfig(type="binary") for name in names}
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[shape.cardinality] * shape.categorical,
        embedding_dims=[8] * shape.categorical,
        numeric_width=shape.numeric,
        numeric_dim=8,
    )
    params = MoEParams(num_experts=experts, expert_units=list(shape.expert_units))
    model = mmoe(inputs=inputs, heads=[Head(name=n, type="binary") for n in names], params=params)
    optimizer = build_optimizer(model.parameter_groups(), OptimizerConfig())
    result = fit_loop(
        model=model,
        weighting=Sum(tasks=tasks, params=NoParams()),
        tasks=tasks,
        optimizer=optimizer,
        scheduler=None,
        train=data,
        validation=None,
        cfg=TrainingConfig(epochs=shape.epochs, batch_size=shape.batch_size, progress=False),
    )
    return statistics.median(len(data) / r["train_samples_per_s"] for r in result.history)


def slope(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) on log(size); nan with fewer than two points."""
    if len(sizes) < 2:
        return math.nan
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def sweep(
    name: str, sizes: Sequence[int], args: argparse.Namespace, shape: Shape, started: float
) -> list[dict[str, float]]:
    points = []
    for size in sizes:
        if time.perf_counter() - started > args.time_budget:
            print(
                f"note: --time-budget {args.time_budget:g} s spent; "
                f"{name} sizes from {size:,} on left out"
            )
            break
        rows = size if name == "rows" else args.sweep_rows
        experts = size if name == "experts" else 8
        tasks = size if name == "tasks" else 2
        data = synthetic(rows, tasks, shape)
        s = seconds_per_epoch(data, experts, shape)
        points.append({"size": size, "rows": rows, "experts": experts, "tasks": tasks, "s": s})
        print(f"  {name}={size:,}: {s:.3f} s/epoch", file=sys.stderr, flush=True)
    return points


def markdown(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(COLUMNS), sep, *(line(r) for r in rows)])


def plot(results: dict[str, list[dict[str, float]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed, so no plot ({path}); pip install matplotlib")
        return
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.8))
    for ax, (name, points) in zip(np.atleast_1d(axes), results.items(), strict=True):
        sizes = [p["size"] for p in points]
        secs = [p["s"] for p in points]
        ax.loglog(sizes, secs, "o-", label="measured")
        # cost proportional to size, through the first point: the "linear" reference
        ax.loglog(sizes, [secs[0] * x / sizes[0] for x in sizes], "--", alpha=0.5, label="slope 1")
        ax.minorticks_off()
        ax.set_xticks(sizes, [f"{size:,}" for size in sizes], rotation=45 if name == "rows" else 0)
        ticks: list[float] = []  # label the measured values (readable within one decade)
        for v in sorted(secs):
            if not ticks or math.log10(v / ticks[-1]) > 0.08:
                ticks.append(v)
        ax.set_yticks(ticks, [f"{v:.3g}" for v in ticks])
        ax.legend(loc="upper left", fontsize="small")
        ax.set_xlabel(name)
        ax.set_ylabel("seconds per epoch")
        ax.set_title(f"{name}: slope {slope(sizes, [p['s'] for p in points]):.2f}")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"polytask MMoE training time per epoch, {torch.get_num_threads()} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=float, nargs="+", default=[1e4, 3e4, 1e5, 3e5, 1e6])
    p.add_argument("--experts", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    p.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--sweep-rows", type=int, default=100_000, help="rows in the other sweeps")
    p.add_argument("--sweeps", nargs="+", choices=SWEEPS, default=list(SWEEPS))
    p.add_argument("--epochs", type=int, default=1, help="epochs per point (median)")
    p.add_argument("--categorical", type=int, default=16)
    p.add_argument("--cardinality", type=int, default=100)
    p.add_argument("--numeric", type=int, default=8)
    p.add_argument("--expert-units", type=int, nargs="+", default=[128, 64])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--time-budget", type=float, default=math.inf, help="seconds, all sweeps")
    p.add_argument("--plot", type=Path, help="PNG of the three curves (needs matplotlib)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and model: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.experts, args.tasks = [2000, 4000], [2, 4], [2, 3]
        args.sweep_rows, args.expert_units, args.batch_size, args.epochs = 2000, [8], 256, 1
        args.categorical, args.cardinality = 4, 10
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = Shape(
        categorical=args.categorical,
        cardinality=args.cardinality,
        numeric=args.numeric,
        expert_units=tuple(args.expert_units),
        batch_size=args.batch_size,
        epochs=args.epochs,
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; MMoE experts "
        f"{list(shape.expert_units)}, towers [64], batch {shape.batch_size}; "
        f"{shape.categorical} categorical x {shape.cardinality} codes, {shape.numeric} numeric"
    )
    sizes = {"rows": [int(r) for r in args.rows], "experts": args.experts, "tasks": args.tasks}
    # Thread pools, BLAS and allocator caches start on first use: pay for that untimed, or
    # the first point of the first sweep would carry it.
    seconds_per_epoch(synthetic(2 * shape.batch_size, 2, shape), 2, shape)
    started = time.perf_counter()
    results = {name: sweep(name, sizes[name], args, shape, started) for name in args.sweeps}
    rows: list[list[str]] = []
    for name, points in results.items():
        for p in points:
            rows.append(
                [
                    name,
                    f"{p['size']:,}",
                    f"{p['rows']:,}",
                    str(p["experts"]),
                    str(p["tasks"]),
                    f"{p['s']:.3f}",
                    f"{p['rows'] / p['s']:,.0f}",
                ]
            )
    print(markdown(rows))
    for name, points in results.items():
        b = slope([p["size"] for p in points], [p["s"] for p in points])
        verdict = ""
        if name == "rows" and not math.isnan(b):
            verdict = " (linear in rows)" if 0.9 <= b <= 1.1 else " (not linear in rows)"
        print(f"slope of log(s/epoch) on log({name}): {b:.2f}{verdict}")
    if args.plot is not None:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
