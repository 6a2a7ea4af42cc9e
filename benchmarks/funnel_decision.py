"""Ranking an ad funnel by one fused score: expected revenue against pCTR alone.

    python benchmarks/funnel_decision.py --seeds 3 --front docs/img/funnel_front.png

For each seed: the tables of examples/funnel_decision.yaml (`funnel_requests`: 60k training
impressions, requests of 10), the example's model (MMoE, isotonic calibration of click and
purchase), then every request of the test split ranked by
- pCTR alone (the click task's calibrated probability),
- pCTCVR alone (the purchase task's),
- expected revenue: pCTCVR x predicted order value (the example's `decision.score`),
- the weights `polytask decide` chooses on the validation split: maximize purchase.ndcg@5
  subject to click.gauc >= 97% of pCTR's own (`--trials`).
Reported per ranking (mean ± std over seeds): click GAUC and NDCG@5, purchase GAUC and NDCG@5,
and revenue NDCG@5 (gains = the realised revenue of each impression). `--front` saves seed 0's
decide front as a PNG.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from polytask import MultiTaskModel
from polytask.config import ScoreConfig
from polytask.datasets import funnel_requests
from polytask.decide import decide, write_front
from polytask.ranking import grouped_metrics

REPO = Path(__file__).resolve().parents[1]
K = 5


def _kpis(test, score) -> dict[str, float]:
    g = test["request"].to_numpy()
    out = {}
    for name, label in (("click", "click"), ("purchase", "conversion")):
        m = grouped_metrics("binary", g, score, test[label].to_numpy(np.float64), K)
        out[f"{name}.gauc"], out[f"{name}.ndcg@{K}"] = m["gauc"], m[f"ndcg@{K}"]
    rev = grouped_metrics("graded", g, score, test["revenue"].to_numpy(np.float64), K)
    out[f"revenue.ndcg@{K}"] = rev[f"ndcg@{K}"]
    return out


def run_seed(seed: int, rows: int, trials: int, front: Path | None) -> dict[str, dict[str, float]]:
    run = yaml.safe_load((REPO / "examples" / "funnel_decision.yaml").read_text())
    run["decision"]["group"] = run.pop("data")["group"]
    run["training"]["seed"] = seed
    train = funnel_requests(rows, seed=100 * seed)
    valid = funnel_requests(rows // 3, seed=100 * seed + 1)
    test = funnel_requests(rows // 3, seed=100 * seed + 2)
    model = MultiTaskModel(**run).fit(train, validation=valid)
    pred = model.predict(test)
    rankings = {
        "pCTR alone": pred["click"].to_numpy(),
        "pCTCVR alone": pred["purchase"].to_numpy(),
        "expected revenue": pred["score"].to_numpy(),
    }
    found = decide(
        model,
        valid,
        maximize=f"purchase.ndcg@{K}",
        subject_to=["click.gauc >= 97%"],
        trials=trials,
        seed=seed,
    )
    if front is not None:
        tmp = Path(tempfile.mkdtemp())
        png = write_front(found, tmp)[1]
        front.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, front)
        shutil.rmtree(tmp)
    model.config.decision.score = ScoreConfig(form="product", weights=found.weights)
    rankings["decide (chosen)"] = model.predict(test)["score"].to_numpy()
    return {name: _kpis(test, s) for name, s in rankings.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--front", type=Path, help="save seed 0's decide front here (PNG)")
    args = ap.parse_args(argv)
    per_seed = [
        run_seed(s, args.rows, args.trials, args.front if s == 0 else None)
        for s in range(args.seeds)
    ]
    names = list(per_seed[0])
    kpis = list(per_seed[0][names[0]])
    print(f"test split, {args.seeds} seed(s), mean ± std; requests of 10, k = {K}")
    print("| ranking by | " + " | ".join(kpis) + " |")
    print("|---|" + "---:|" * len(kpis))
    for name in names:
        cells = []
        for kpi in kpis:
            v = np.array([r[name][kpi] for r in per_seed])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
