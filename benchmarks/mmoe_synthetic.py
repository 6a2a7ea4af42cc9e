"""The MMoE paper's synthetic experiment (Ma et al., KDD 2018, sec. 3.2 and fig. 4).

Two regression tasks whose label correlation is controlled by p (0.5, 0.9, 1.0); shared-bottom
(113 units), one-gate MoE and MMoE (8 experts of 16 units), towers of 8, over several seeds.
The paper's finding: MMoE's loss degrades least as the task correlation falls.

    python benchmarks/mmoe_synthetic.py                 # 20 epochs: a few minutes on 2 cores
    python benchmarks/mmoe_synthetic.py --seeds 5 --epochs 100   # trained out: ~10 minutes
    python benchmarks/mmoe_synthetic.py --smoke         # seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

from polytask import MultiTaskModel
from polytask.datasets import mmoe_synthetic, split_frame

MODELS: dict[str, dict[str, Any]] = {
    "shared_bottom": {"name": "shared_bottom", "shared_units": [113], "tower_units": [8]},
    "moe": {"name": "moe", "num_experts": 8, "expert_units": [16], "tower_units": [8]},
    "mmoe": {"name": "mmoe", "num_experts": 8, "expert_units": [16], "tower_units": [8]},
}


def run(model: str, correlation: float, seed: int, args: argparse.Namespace) -> float:
    """Mean test MSE over the two tasks."""
    frame = mmoe_synthetic(args.rows, correlation=correlation, dim=args.dim, seed=seed)
    train, test = split_frame(frame, fractions=(0.9, 0.1), seed=seed)
    numeric = [c for c in frame.columns if c.startswith("x")]
    est = MultiTaskModel(
        features={"numeric": numeric, "numeric_dim": args.dim},
        tasks={"y1": {"type": "regression"}, "y2": {"type": "regression"}},
        model=MODELS[model],
        optimizer={"lr": args.lr},
        training={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": seed,
            "progress": False,
        },
    ).fit(train)
    metrics = est.evaluate(test)
    return statistics.fmean(metrics[t]["rmse"] ** 2 for t in ("y1", "y2"))


def main(argv: Sequence[str] | None = None) -> dict[str, dict[float, list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=22_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--correlations", type=float, nargs="+", default=[1.0, 0.9, 0.5])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.dim, args.epochs, args.seeds = 600, 10, 1, 1
    results: dict[str, dict[float, list[float]]] = {m: {} for m in MODELS}
    start = time.perf_counter()
    for seed in range(args.seeds):
        for p in args.correlations:
            for model in MODELS:
                mse = run(model, p, seed, args)
                results[model].setdefault(p, []).append(mse)
                print(f"  seed {seed} p={p} {model}: {mse:.4f}", flush=True)
    print(
        f"MMoE synthetic data: {args.rows} rows (90/10 train/test), d={args.dim}, "
        f"{args.epochs} epochs, {args.seeds} seed(s); test MSE averaged over both tasks, "
        "mean ± std over seeds"
    )
    header = "model".ljust(15) + "".join(f"p={p:<14}" for p in args.correlations)
    header += f"loss rise p={args.correlations[0]}->{args.correlations[-1]}"
    print(header)
    for model, by_p in results.items():
        cells = []
        for p in args.correlations:
            values = by_p[p]
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} ± {spread:.4f}".ljust(16))
        first = statistics.fmean(by_p[args.correlations[0]])
        last = statistics.fmean(by_p[args.correlations[-1]])
        print(model.ljust(15) + "".join(cells) + f"{last - first:+.4f}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    main()
