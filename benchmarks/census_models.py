"""Single-task, shared-bottom, MoE, MMoE, CGC, PLE and the rest of the zoo on UCI
Census-Income (KDD), several seeds: a thin call of `polytask.compare` with fixed model settings.

The MMoE paper's group-1 tasks: income > 50K and marital status == Never married. Only the
official test file is available to this project, so it is split 80/10/10 (train/validation/
test, split seed 0) -- figures are not directly comparable with the paper's. Each model trains
with early stopping on the validation split's mean AUC and is scored once on the test split.
The same comparison from a run file is ``polytask compare examples/census_mmoe.yaml``.

    python benchmarks/census_models.py --data ../shared/data/census-income-kdd/census-income.test.gz
    python benchmarks/census_models.py --data ... --smoke
    python benchmarks/census_models.py --out runs/census_models   # + compare.csv/.md/.png
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polytask.compare import compare_splits, summarize, write_outputs
from polytask.config import EstimatorConfig, validate
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
    # The rest of the zoo with the defaults docs/models.md gives (model={name: X} alone).
    "adatt": {"name": "adatt"},
    "stem": {"name": "stem"},
    "pepnet": {"name": "pepnet"},
    "home": {"name": "home"},
    "aitm": {"name": "aitm"},
    "cross_stitch": {"name": "cross_stitch"},
    "dselect_k": {"name": "dselect_k"},
}
LOG1P = {"wage_per_hour", "capital_gains", "capital_losses", "stock_dividends"}


def settings(epochs: int) -> EstimatorConfig:
    raw = {
        "features": {
            "categorical": list(CENSUS_CATEGORICAL),
            "numeric": [{"name": c, "log1p": c in LOG1P} for c in CENSUS_NUMERIC],
            "embedding_dim": 8,
        },
        "tasks": {name: dict(spec) for name, spec in CENSUS_TASKS.items()},
        "model": MODELS["mmoe"],
        "optimizer": {"lr": 1e-3},
        "training": {
            "epochs": epochs,
            "batch_size": 1024,
            "monitor": "mean.auc",
            "patience": 2,
            "progress": False,
        },
    }
    config: EstimatorConfig = validate(EstimatorConfig, raw, what="census settings")
    return config


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--smoke", action="store_true", help="2,000 rows, 1 epoch, 1 seed")
    parser.add_argument("--out", type=Path, help="also write compare.csv, .md and .png here")
    args = parser.parse_args(argv)
    frame = load_census_income(args.data)
    if args.smoke:
        frame = frame.sample(n=2000, random_state=0)
        args.epochs, args.seeds = 1, 1
    splits = split_frame(frame, fractions=(0.8, 0.1, 0.1), seed=0)
    start = time.perf_counter()
    result = compare_splits(
        settings(args.epochs), *splits, args.models, seeds=args.seeds, specs=MODELS
    )
    if args.out is not None:
        write_outputs(result, args.out, title="benchmarks/census_models.py")
    for failure in result.failures:
        print(f"FAILED: {failure.model} seed {failure.seed}: {failure.error}")
    results: dict[str, dict[str, list[float]]] = {
        m: {t: [] for t in result.tasks} for m in args.models
    }
    for r in result.rows:
        if r["metric"] == "auc":
            results[r["model"]][r["task"]].append(r["value"])
    summary = summarize(result.rows)
    rows = [len(s) for s in splits]
    print(
        f"census-income test file split 80/10/10 (rows {rows}, split seed 0); "
        f"test AUC, mean ± std (sample) over {args.seeds} seed(s), <= {args.epochs} epochs, "
        "early stopping on validation mean AUC"
    )
    print("model".ljust(15) + "".join(t.ljust(20) for t in result.tasks))
    for name in args.models:
        cells = []
        for t in result.tasks:
            s = summary.get((name, t, "auc"))
            cell = "-" if s is None else f"{s.mean:.4f} ± {s.std:.4f}"
            cells.append(cell.ljust(20))
        print(name.ljust(15) + "".join(cells))
    print(f"({time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
