"""Time and peak memory of the grouped ranking metrics on a large synthetic split.

    python benchmarks/grouped_eval.py --rows 10000000 --groups 1000000

One binary task (GAUC, NDCG@k, recall@k) and one graded task (NDCG@k with ratings as gains),
scored over every row at once. Prints rows, groups, seconds per metric family and the process's
peak RSS (the arrays of the split themselves included: ~8 bytes per row per array).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from polytask.ranking import grouped_metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    groups = rng.integers(0, args.groups, args.rows)
    latent = rng.normal(size=args.rows)
    score = latent + rng.normal(size=args.rows)
    click = (latent > 1.0).astype(np.float64)
    rating = np.clip(np.round(3 + latent), 1, 5)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    binary = grouped_metrics("binary", groups, score, click, args.k)
    t1 = time.perf_counter()
    graded = grouped_metrics("graded", groups, score, rating, args.k)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows {args.rows:,}  groups {args.groups:,}  k {args.k}")
    print(
        f"binary (gauc, ndcg@{args.k}, recall@{args.k}): {t1 - t0:.2f} s  "
        f"gauc {binary['gauc']:.4f} over {binary['gauc_groups']:.0f} groups "
        f"({binary['gauc_skipped_groups']:.0f} single-class skipped)"
    )
    print(f"graded (ndcg@{args.k}): {t2 - t1:.2f} s  ndcg {graded[f'ndcg@{args.k}']:.4f}")
    print(f"peak RSS {peak:,.0f} MiB (inputs built: {base_rss:,.0f} MiB)")


if __name__ == "__main__":
    main()
