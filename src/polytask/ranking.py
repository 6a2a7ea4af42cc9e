"""Grouped ranking metrics: GAUC, NDCG@k and recall@k per group (a user or a request).

A feed ranks each user's candidates, so a model is judged within each group, not over the
whole split. Every function here takes flat arrays (one entry per row) and a group id per row,
and is vectorised: one sort of the whole split, then per-group sums with ``np.add.reduceat``;
there is no Python loop over groups, so a 10M-row, 1M-group split takes seconds.

Rows whose label is NaN are left out. Ties in the score are handled as follows:

- GAUC uses average ranks within a group, exactly as ``sklearn.metrics.roc_auc_score``.
- NDCG@k and recall@k rank a group's rows by descending score with ties kept in row order
  (a stable sort), so a tied block is ordered as the rows came.

Definitions (G = groups that count, n_g = labelled rows of group g):

- ``gauc``: sum_g n_g AUC_g / sum_g n_g over the groups holding both classes; the groups with
  a single class are skipped and their number is reported (``gauc_skipped_groups``).
- ``ndcg@k``: mean over groups of DCG@k / IDCG@k with DCG@k = sum_{i<k} gain_i / log2(i + 2),
  gain = the label (0/1 for a binary task; the graded value for a regression or count task,
  which must be >= 0). Groups whose ideal DCG is 0 (no positive gain) are skipped and counted.
- ``recall@k``: mean over groups of (positives in the top k) / (positives in the group), for
  binary labels; groups without a positive are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def group_codes(groups: np.ndarray | Sequence[object] | pd.Series) -> np.ndarray:
    """Integer codes ``0..G-1`` for any group ids (strings, ints, NaN as its own group)."""
    codes, _ = pd.factorize(pd.Series(groups), use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def _labelled(
    codes: np.ndarray, score: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    label = np.asarray(label, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if not (codes.shape == score.shape == label.shape) or codes.ndim != 1:
        raise ValueError(
            f"group, score and label must be 1-d arrays of one length; received shapes "
            f"{codes.shape}, {score.shape}, {label.shape}"
        )
    if np.isnan(score).any():
        raise ValueError("scores contain NaN; a ranking needs a number for every row")
    keep = ~np.isnan(label)
    return codes[keep], score[keep], label[keep]


def _starts(sorted_codes: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array (empty for an empty array)."""
    if sorted_codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])


def _summary(
    name: str, values: np.ndarray, ok: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """``name``: the (weighted) mean of ``values``, one per group that counts (``ok``), NaN
    when none does; ``name_groups`` and ``name_skipped_groups``: how many groups did and did
    not count."""
    value = float(np.average(values, weights=weights)) if ok.any() else float("nan")
    return {
        name: value,
        f"{name}_groups": float(ok.sum()),
        f"{name}_skipped_groups": float((~ok).sum()),
    }


def _gauc(codes_in: np.ndarray, score: np.ndarray, label: np.ndarray) -> dict[str, float]:
    codes, s, y = _labelled(codes_in, score, label)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("GAUC needs 0/1 labels")
    order = np.lexsort((s, codes))  # by group, then score ascending
    g, s, y = codes[order], s[order], y[order]
    n = g.size
    # Average rank (1-based, within the group) of each block of equal (group, score).
    if n == 0:
        return {"gauc": float("nan"), "gauc_groups": 0.0, "gauc_skipped_groups": 0.0}
    tie_start = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])])
    tie_end = np.r_[tie_start[1:], n]  # exclusive
    grp_start = _starts(g)
    first_of_group = np.arange(n) - _positions(g)
    # rows tie_start..tie_end-1 share the average of 1-based ranks (tie_start+1 .. tie_end)
    avg_rank_block = (tie_start + tie_end + 1) / 2.0 - first_of_group[tie_start]
    ranks = np.repeat(avg_rank_block, tie_end - tie_start)
    rows = np.diff(np.r_[grp_start, n]).astype(np.float64)
    pos = np.add.reduceat(y, grp_start)
    neg = rows - pos
    rank_sum = np.add.reduceat(ranks * y, grp_start)
    ok = (pos > 0) & (neg > 0)
    auc = (rank_sum[ok] - pos[ok] * (pos[ok] + 1) / 2.0) / (pos[ok] * neg[ok])
    return _summary("gauc", auc, ok, weights=rows[ok])


def _positions(g: np.ndarray) -> np.ndarray:
    """0-based position of each row within its group, for rows sorted by group."""
    starts = _starts(g)
    first = np.zeros(g.size, dtype=np.int64)
    first[starts] = starts
    first = np.maximum.accumulate(first)  # an empty array stays empty
    return np.arange(g.size) - first


def _ranked(codes: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Row order: by group, then key descending, ties in row order (lexsort is stable)."""
    return np.lexsort((-key, codes))


def _ndcg_at_k(
    codes_in: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 10
) -> dict[str, float]:
    if k < 1:
        raise ValueError(f"k must be >= 1, received {k}")
    codes, s, y = _labelled(codes_in, score, label)
    if (y < 0).any():
        raise ValueError("NDCG gains are the labels and must be >= 0; found a negative label")
    discount = 1.0 / np.log2(np.arange(2, y.size + 2, dtype=np.float64))

    def dcg(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = codes[order]
        pos = _positions(g)
        gain = np.where(pos < k, y[order] * discount[pos], 0.0)
        starts = _starts(g)
        return np.add.reduceat(gain, starts), g[starts]

    actual, grp_a = dcg(_ranked(codes, s))
    ideal, grp_i = dcg(_ranked(codes, y))
    assert np.array_equal(grp_a, grp_i)  # both sorted by group code
    ok = ideal > 0
    return _summary(f"ndcg@{k}", actual[ok] / ideal[ok], ok)


def _recall_at_k(
    codes_in: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 10
) -> dict[str, float]:
    if k < 1:
        raise ValueError(f"k must be >= 1, received {k}")
    codes, s, y = _labelled(codes_in, score, label)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("recall@k needs 0/1 labels")
    order = _ranked(codes, s)
    g = codes[order]
    starts = _starts(g)
    hits = np.add.reduceat(np.where(_positions(g) < k, y[order], 0.0), starts)
    positives = np.add.reduceat(y[order], starts)
    ok = positives > 0
    return _summary(f"recall@{k}", hits[ok] / positives[ok], ok)


def grouped_metrics(
    kind: str, groups: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Every grouped metric that fits a task kind: ``binary`` gets GAUC, NDCG@k (0/1 gains)
    and recall@k; ``graded`` (regression, count) gets NDCG@k with the labels as gains."""
    codes = group_codes(groups)
    if kind == "binary":
        return {
            **_gauc(codes, score, label),
            **_ndcg_at_k(codes, score, label, k),
            **_recall_at_k(codes, score, label, k),
        }
    if kind == "graded":
        return _ndcg_at_k(codes, score, label, k)
    raise ValueError(f"unknown grouped-metric kind {kind!r}; expected 'binary' or 'graded'")


def gauc(groups: np.ndarray, score: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Group AUC weighted by each group's labelled rows; NaN when no group has both classes.

    Returns ``{"gauc", "gauc_groups", "gauc_skipped_groups"}`` (the last: single-class groups).
    """
    return _gauc(group_codes(groups), score, label)


def ndcg_at_k(
    groups: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Mean NDCG@k over groups with a positive ideal DCG; gains are the labels (>= 0)."""
    return _ndcg_at_k(group_codes(groups), score, label, k)


def recall_at_k(
    groups: np.ndarray, score: np.ndarray, label: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Mean recall@k (0/1 labels) over groups holding at least one positive."""
    return _recall_at_k(group_codes(groups), score, label, k)
