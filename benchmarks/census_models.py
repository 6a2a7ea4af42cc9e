"""Single-task, shared-bottom, MoE and MMoE on UCI Census-Income (KDD), several seeds.

The MMoE paper's group-1 tasks: income > 50K and marital status == Never married. Only the
official test file is available to this project, so it is split 80/10/10 (train/validation/
test, split seed 0) -- figures are not directly comparable with the paper's. Each model trains
with early stopping on the validation split's mean AUC and is scored once on the test split.

    python benchmarks/census_models.py --data ../shared/data/census-income-kdd/census-income.test.gz
    python benchmarks/census_models.py --data ... --smoke
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

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/census-income-kdd/census-income.test.gz"
)
EXPERTS = {"num_experts": 8, "expert_units": [128, 64], "tower_units": [64]}
MODELS: dict[str, dict[str, Any]] = {
    "single_task": {"name": "shared_bottom", "shared_units": [128, 64], "tower_units": [64]},
    "shared_bottom": {"name": "shared_bottom", "shared_units": [128, 64], "tower_units": [64]},
    "moe": {"name": "moe", **EXPERTS},
    "mmoe": {"name": "mmoe", **EXPERTS},
    # 8 experts as in MMoE: 2 per task and 4 shared (per level for PLE)
    "cgc": {
        "name": "cgc",
        "num_task_experts": 2,
        "num_shared_experts": 4,
        "expert_units": [128, 64],
        "tower_units": [64],
    },
    "ple": {
        "name": "ple",
        "num_levels": 2,
        "num_task_experts": 2,
        "num_shared_experts": 4,
        "expert_units": [128, 64],
        "tower_units": [64],
    },
}
LOG1P = {"wage_per_hour", "capital_gains", "capital_losses", "stock_dividends"}


def features() -> dict[str, Any]:
    return {
        "categorical": list(CENSUS_CATEGORICAL),
        "numeric": [{"name": c, "log1p": c in LOG1P} for c in CENSUS_NUMERIC],
        "embedding_dim": 8,
    }


def fit_eval(
    spec: dict[str, Any], tasks: dict[str, Any], splits: Any, seed: int, args: argparse.Namespace
) -> dict[str, float]:
    train, valid, test = splits
    model = MultiTaskModel(
        features=features(),
        tasks=tasks,
        model=spec,
        optimizer={"lr": 1e-3},
        training={
            "epochs": args.epochs,
            "batch_size": 1024,
            "seed": seed,
            "monitor": "mean.auc",
            "patience": 2,
            "progress": False,
        },
    ).fit(train, validation=valid)
    metrics = model.evaluate(test)
    return {t: metrics[t]["auc"] for t in tasks}


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--smoke", action="store_true", help="2,000 rows, 1 epoch, 1 seed")
    args = parser.parse_args(argv)
    frame = load_census_income(args.data)
    if args.smoke:
        frame = frame.sample(n=2000, random_state=0)
        args.epochs, args.seeds = 1, 1
    splits = split_frame(frame, fractions=(0.8, 0.1, 0.1), seed=0)
    tasks = {name: dict(spec) for name, spec in CENSUS_TASKS.items()}
    models = {name: MODELS[name] for name in args.models}
    results: dict[str, dict[str, list[float]]] = {m: {t: [] for t in tasks} for m in models}
    start = time.perf_counter()
    for seed in range(args.seeds):
        for name, spec in models.items():
            if name == "single_task":
                for task, task_spec in tasks.items():
                    auc = fit_eval(spec, {task: task_spec}, splits, seed, args)
                    results[name][task].append(auc[task])
            else:
                for task, auc_value in fit_eval(spec, tasks, splits, seed, args).items():
                    results[name][task].append(auc_value)
    rows = [len(s) for s in splits]
    print(
        f"census-income test file split 80/10/10 (rows {rows}, split seed 0); "
        f"test AUC, mean ± std over {args.seeds} seed(s), <= {args.epochs} epochs, "
        "early stopping on validation mean AUC"
    )
    print("model".ljust(15) + "".join(t.ljust(20) for t in tasks))
    for name, by_task in results.items():
        cells = []
        for t in tasks:
            v = by_task[t]
            spread = statistics.pstdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.fmean(v):.4f} ± {spread:.4f}".ljust(20))
        print(name.ljust(15) + "".join(cells))
    print(f"({time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
