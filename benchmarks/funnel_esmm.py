"""ESMM and ESCM2 against a naive clicked-only CVR model on the synthetic ads funnel.

Ma et al., "Entire Space Multi-Task Model", SIGIR 2018, train the CVR estimate over every
impression (pCTCVR = pCTR x pCVR) instead of over clicked impressions only. This script
measures, over several seeds of `polytask.datasets.funnel_synthetic`:

- ``esmm``: tasks ``ctr`` (label ``click``) and ``ctcvr`` (label ``conversion``) on every
  impression; its pCVR is the auxiliary ``cvr`` column of ``predict``.
- ``naive``: one binary task on ``conversion`` trained on the clicked impressions only, with
  the same network as ESMM's CVR tower (embeddings, then the same MLP).
- ``ideal``: the same network trained on ``conversion_intent`` over every impression, a label
  that real logs never have: how far selection bias leaves both of the others behind.

Every model uses the same optimizer, batch size and early stopping on its own validation
split (20% of the training draw; clicked rows only for ``naive``), monitored on its own
log-loss. The test set is a separate draw from the same funnel. Reported: CVR AUC against
``conversion_intent`` over all test impressions (the quantity ESMM targets), CVR AUC against
``conversion`` over clicked test impressions, and ESMM's CTR AUC.

    python benchmarks/funnel_esmm.py --rows 50000 --seeds 5
    python benchmarks/funnel_esmm.py --smoke
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from polytask import MultiTaskModel
from polytask.datasets import funnel_synthetic, split_frame
from polytask.run import train_samples_per_s

FEATURES = {
    "categorical": ["user_group", "item_cat", "position"],
    "numeric": ["user_activity", "price", "item_quality"],
}
UNITS = [64, 32]


def _fit(
    tasks: dict[str, Any],
    model: dict[str, Any],
    monitor: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    args: argparse.Namespace,
    seed: int,
) -> MultiTaskModel:
    return MultiTaskModel(
        features=FEATURES,
        tasks=tasks,
        model=model,
        optimizer={"lr": args.lr},
        training={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "patience": args.patience,
            "monitor": monitor,
            "seed": seed,
            "progress": False,
        },
    ).fit(train, validation=valid)


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, dict[str, float]]:
    """Train the three models on one draw; their AUCs on a separate test draw."""
    draw = funnel_synthetic(args.rows, selection_bias=args.selection_bias, seed=seed)
    train, valid = split_frame(draw, fractions=(0.8, 0.2), seed=seed)
    test = funnel_synthetic(args.test_rows, selection_bias=args.selection_bias, seed=10_000 + seed)
    clicked = test["click"] == 1
    tower_only = {"name": "shared_bottom", "shared_units": UNITS, "tower_units": []}

    funnel_tasks = {
        "ctr": {"type": "binary", "label": "click"},
        "ctcvr": {"type": "binary", "label": "conversion"},
    }
    esmm = _fit(
        funnel_tasks,
        {"name": "esmm", "tower_units": UNITS},
        "ctcvr.logloss",
        train,
        valid,
        args,
        seed,
    )
    escm2 = {
        f"escm2_{form}": _fit(
            funnel_tasks,
            {"name": "escm2", "counterfactual": form, "tower_units": UNITS},
            "ctcvr.logloss",
            train,
            valid,
            args,
            seed,
        )
        for form in ("ips", "dr")
    }
    naive = _fit(
        {"cvr": {"type": "binary", "label": "conversion"}},
        tower_only,
        "cvr.logloss",
        train[train["click"] == 1],
        valid[valid["click"] == 1],
        args,
        seed,
    )
    ideal = _fit(
        {"cvr": {"type": "binary", "label": "conversion_intent"}},
        tower_only,
        "cvr.logloss",
        train,
        valid,
        args,
        seed,
    )
    results: dict[str, dict[str, float]] = {}
    models = {"esmm": esmm, **escm2, "naive": naive, "ideal": ideal}
    for name, model in models.items():
        pred = model.predict(test)
        results[name] = {
            "cvr_auc_all": float(roc_auc_score(test["conversion_intent"], pred["cvr"])),
            "cvr_auc_clicked": float(
                roc_auc_score(test.loc[clicked, "conversion"], pred.loc[clicked, "cvr"])
            ),
            "epochs": float(model.best_epoch_ or 0),
            "samples_per_s": train_samples_per_s(model.history_),
        }
        if "ctr" in pred:
            results[name]["ctr_auc"] = float(roc_auc_score(test["click"], pred["ctr"]))
    return results


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def print_table(per_seed: list[dict[str, dict[str, float]]]) -> None:
    header = (
        f"{'model':<9} | {'CVR AUC, all impressions':<24} | {'CVR AUC, clicked':<16} | "
        f"{'CTR AUC':<15} | best epoch | train samples/s"
    )
    print(header)
    print("-" * len(header))
    for name in per_seed[0]:
        rows = [r[name] for r in per_seed]
        ctr = [r["ctr_auc"] for r in rows if "ctr_auc" in r]
        print(
            f"{name:<9} | {_cell([r['cvr_auc_all'] for r in rows]):<24} | "
            f"{_cell([r['cvr_auc_clicked'] for r in rows]):<16} | {_cell(ctr):<15} | "
            f"{np.mean([r['epochs'] for r in rows]):<10.1f} | "
            f"{np.median([r['samples_per_s'] for r in rows]):,.0f}"
        )
    for better, than in (("esmm", "naive"), ("escm2_ips", "esmm"), ("escm2_dr", "esmm")):
        diff = [r[better]["cvr_auc_all"] - r[than]["cvr_auc_all"] for r in per_seed]
        wins = sum(d > 0 for d in diff)
        print(
            f"{better} - {than}, CVR AUC over all impressions, paired by seed: {_cell(diff)} "
            f"({better} ahead on {wins}/{len(diff)} seeds: "
            f"{' '.join(f'{d:+.4f}' for d in diff)})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="impressions per training draw")
    parser.add_argument(
        "--test-rows", type=int, default=100_000, help="impressions in the test draw"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=30, help="most epochs (early stopping)")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--selection-bias", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help="a few seconds: tiny data, 1 seed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.test_rows, args.seeds, args.epochs = 3_000, 3_000, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    per_seed = []
    for seed in range(args.seeds):
        per_seed.append(run_seed(args, seed))
    print(
        f"funnel_synthetic: {args.rows} training impressions (80% train, 20% validation), "
        f"{args.test_rows} test impressions, selection_bias {args.selection_bias}, "
        f"{args.seeds} seed(s)"
    )
    print_table(per_seed)
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
