"""Training throughput and test AUC of eager/compiled x float32/bfloat16 (training.compile,
training.precision) on Census-Income (KDD): the throughput reference configuration of
examples/bench_census_mmoe.yaml (MMoE 8 experts [128, 64], towers [64], embeddings 8, the 7
numeric columns projected to 7, Adam 1e-3, batch 1024, 80/20 split (seed 0) of the census test
file).

Each configuration is run ``--repeats`` times, the configurations alternating so the machine's
load hits them alike; the table reports the median training samples/s (over epochs 2.. when
there are several, so compilation time is left out of the steady-state figure) and the median
test AUC per task.

    PYTHONPATH=src python benchmarks/precision.py --epochs 2 --repeats 3
    PYTHONPATH=src python benchmarks/precision.py --smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polytask import MultiTaskModel
from polytask.datasets import (
    CENSUS_CATEGORICAL,
    CENSUS_NUMERIC,
    CENSUS_TASKS,
    load_census_income,
    split_frame,
)
from polytask.errors import TrainingError

_HERE = Path(__file__).resolve()
DEFAULT_DATA = next(
    (
        p / "shared/data/census-income-kdd/census-income.test.gz"
        for p in _HERE.parents
        if (p / "shared/data/census-income-kdd/census-income.test.gz").exists()
    ),
    Path("/work/shared/data/census-income-kdd/census-income.test.gz"),
)
CONFIGS = {
    "eager fp32": {"compile": False, "precision": "fp32"},
    "compile fp32": {"compile": True, "precision": "fp32"},
    "eager bf16": {"compile": False, "precision": "bf16"},
    "compile bf16": {"compile": True, "precision": "bf16"},
}


def run_one(name: str, splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    train, test = splits
    model = MultiTaskModel(
        features={
            "categorical": list(CENSUS_CATEGORICAL),
            "numeric": list(CENSUS_NUMERIC),
            "embedding_dim": 8,
            "numeric_dim": 7,  # as examples/bench_census_mmoe.yaml: expert input 32 x 8 + 7
        },
        tasks={k: dict(v) for k, v in CENSUS_TASKS.items()},
        model={"name": "mmoe", "num_experts": 8, "expert_units": [128, 64], "tower_units": [64]},
        optimizer={"lr": 1e-3},
        training={
            "epochs": args.epochs,
            "batch_size": 1024,
            "seed": 0,
            "progress": False,
            **CONFIGS[name],
        },
    )
    start = time.perf_counter()
    try:
        model.fit(train)
    except TrainingError as err:
        return {"error": str(err)}
    wall = time.perf_counter() - start
    rates = [r["train_samples_per_s"] for r in model.history_]
    steady = rates[1:] if len(rates) > 1 else rates
    metrics = model.evaluate(test)
    return {
        "samples_per_s": statistics.median(steady),
        "first_epoch_samples_per_s": rates[0],
        "wall_s": wall,
        "auc": {t: metrics[t]["auc"] for t in CENSUS_TASKS},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--smoke", action="store_true", help="2,000 rows, 1 epoch, 1 repeat")
    args = parser.parse_args(argv)
    frame = load_census_income(args.data)
    if args.smoke:
        frame = frame.sample(n=2000, random_state=0)
        args.epochs, args.repeats = 1, 1
    splits = split_frame(frame, fractions=(0.8, 0.2), seed=0)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
    for _ in range(args.repeats):
        for name in args.configs:  # alternate configurations within each repeat
            runs[name].append(run_one(name, splits, args))
    results: dict[str, dict[str, Any]] = {}
    base = None
    print(
        f"census-income, MMoE 8x[128,64], batch 1024, train rows {len(splits[0])}, "
        f"{args.epochs} epoch(s), median of {args.repeats}"
    )
    print(
        "config".ljust(14)
        + "samples/s".rjust(11)
        + "x fp32".rjust(8)
        + "1st ep/s".rjust(10)
        + "".join(f"AUC {t}".rjust(14) for t in CENSUS_TASKS)
    )
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            results[name] = {"error": rs[0]["error"]}
            print(name.ljust(14) + f"  FAILED: {rs[0]['error']}")
            continue
        sps = statistics.median(r["samples_per_s"] for r in ok)
        first = statistics.median(r["first_epoch_samples_per_s"] for r in ok)
        auc = {t: statistics.median(r["auc"][t] for r in ok) for t in CENSUS_TASKS}
        base = sps if name == "eager fp32" else base
        ratio = sps / base if base else float("nan")
        results[name] = {"samples_per_s": sps, "ratio": ratio, "auc": auc, "first": first}
        print(
            name.ljust(14)
            + f"{sps:11.0f}{ratio:8.2f}{first:10.0f}"
            + "".join(f"{auc[t]:14.4f}" for t in CENSUS_TASKS)
        )
    return results


if __name__ == "__main__":
    main()
