"""Write the synthetic ad funnel as train/validation/test CSVs for examples/funnel_decision.yaml.

    python examples/make_funnel_tables.py --out runs/funnel_data

Impressions come from `polytask.datasets.funnel_requests`: clicks, then purchases, with
selection bias; every 10 consecutive impressions form one request (`request`, the group that
is ranked), and a purchase has an order value, so the fused score pCTCVR x predicted order
value is the expected revenue of showing the item.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polytask.datasets import funnel_requests


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
        funnel_requests(rows, seed=args.seed * 10 + i).to_csv(out / f"{split}.csv", index=False)
    print(f"wrote {', '.join(f'{s}.csv ({n} rows)' for s, n in sizes.items())} to {out}")


if __name__ == "__main__":
    main()
