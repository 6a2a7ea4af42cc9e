"""Write the synthetic ad funnel as train/validation/test CSVs for examples/funnel_decision.yaml.

    python examples/make_funnel_tables.py --out runs/funnel_data

Impressions come from `polytask.datasets.funnel_synthetic` (clicks, then purchases, with
selection bias). Every 10 consecutive impressions form one request (the `request` column, the
group a feed or an auction ranks), and a purchase has an order value (the item's price times a
log-normal basket factor; empty where there was no purchase), so the fused score
pCTCVR x predicted order value is the expected revenue of showing the item.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from polytask.datasets import funnel_synthetic


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/funnel_data", help="folder (default runs/funnel_data)")
    ap.add_argument("--rows", type=int, default=60_000, help="training impressions (default 60000)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": args.rows, "validation": args.rows // 3, "test": args.rows // 3}
    for i, (split, rows) in enumerate(sizes.items()):
        frame = funnel_synthetic(rows, seed=args.seed * 10 + i)
        rng = np.random.default_rng(args.seed * 10 + i + 1000)
        frame.insert(0, "request", [f"{split[0]}{r:06d}" for r in np.arange(rows) // 10])
        basket = rng.lognormal(0.0, 0.25, rows)
        frame["order_value"] = np.where(frame["conversion"] == 1, frame["price"] * basket, np.nan)
        frame.to_csv(out / f"{split}.csv", index=False)
    print(f"wrote {', '.join(f'{s}.csv ({n} rows)' for s, n in sizes.items())} to {out}")


if __name__ == "__main__":
    main()
