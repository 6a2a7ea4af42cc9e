"""Grouped ranking metrics against direct, group-by-group computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from polytask.ranking import gauc, grouped_metrics, ndcg_at_k, recall_at_k


def _table(seed: int, n: int = 400, groups: int = 37, ties: bool = True):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n).astype(str)
    s = rng.normal(size=n)
    if ties:
        s = np.round(s, 1)  # many tied scores inside groups
    y = (rng.random(n) < 0.3).astype(np.float64)
    y[rng.random(n) < 0.1] = np.nan
    return g, s, y


def _direct_gauc(g, s, y):
    num = den = 0.0
    skipped = 0
    for key in np.unique(g):
        m = (g == key) & ~np.isnan(y)
        if not m.any():
            continue
        if len(np.unique(y[m])) < 2:
            skipped += 1
            continue
        num += m.sum() * roc_auc_score(y[m], s[m])
        den += m.sum()
    return num / den, skipped


def _direct_dcg(gains_in_order, k):
    return sum(gain / math.log2(i + 2) for i, gain in enumerate(gains_in_order[:k]))


def _direct_ndcg_recall(g, s, y, k):
    ndcgs, recalls = [], []
    for key in np.unique(g):
        m = (g == key) & ~np.isnan(y)
        if not m.any():
            continue
        ys, ss = y[m], s[m]
        order = sorted(range(len(ys)), key=lambda i: (-ss[i], i))  # stable, descending
        ideal = _direct_dcg(sorted(ys, reverse=True), k)
        if ideal > 0:
            ndcgs.append(_direct_dcg([ys[i] for i in order], k) / ideal)
        if (ys == 1).any():
            recalls.append(sum(ys[i] for i in order[:k]) / (ys == 1).sum())
    return float(np.mean(ndcgs)), float(np.mean(recalls))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_equals_sklearn_auc_group_by_group(seed: int) -> None:
    g, s, y = _table(seed)
    expected, skipped = _direct_gauc(g, s, y)
    got = gauc(g, s, y)
    assert got["gauc"] == pytest.approx(expected, abs=1e-12)
    assert got["gauc_skipped_groups"] == skipped


@pytest.mark.parametrize("k", [1, 3, 10])
def test_ndcg_and_recall_equal_a_direct_computation(k: int) -> None:
    g, s, y = _table(5)
    ndcg, recall = _direct_ndcg_recall(g, s, y, k)
    assert ndcg_at_k(g, s, y, k)[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
    assert recall_at_k(g, s, y, k)[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)


def test_graded_ndcg_uses_the_labels_as_gains() -> None:
    rng = np.random.default_rng(3)
    g = rng.integers(0, 20, 300)
    s = rng.normal(size=300)
    y = rng.integers(1, 6, 300).astype(np.float64)  # ratings 1..5
    ndcg, _ = _direct_ndcg_recall(g, s, np.where(y > 0, y, 0.0), 10)
    assert grouped_metrics("graded", g, s, y)["ndcg@10"] == pytest.approx(ndcg, abs=1e-12)


def test_hand_made_groups() -> None:
    # group a: perfect order; group b: reversed; group c: one class only (skipped)
    g = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    s = np.array([0.9, 0.5, 0.1, 0.1, 0.5, 0.9, 0.3, 0.2])
    y = np.array([1, 0, 0, 1, 0, 0, 1, 1], dtype=np.float64)
    got = gauc(g, s, y)
    assert got["gauc"] == pytest.approx((3 * 1.0 + 3 * 0.0) / 6)
    assert got["gauc_skipped_groups"] == 1
    assert recall_at_k(g, s, y, 1)["recall@1"] == pytest.approx((1 + 0 + 0.5) / 3)
    # group b: the positive is third: DCG = 1/log2(4) = 0.5, IDCG = 1
    assert ndcg_at_k(g, s, y, 3)["ndcg@3"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="0/1 labels"):
        gauc(np.zeros(3), np.zeros(3), np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="k must be >= 1"):
        ndcg_at_k(np.zeros(3), np.zeros(3), np.zeros(3), k=0)
    with pytest.raises(ValueError, match="negative label"):
        ndcg_at_k(np.zeros(2), np.zeros(2), np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="shapes"):
        gauc(np.zeros(3), np.zeros(2), np.zeros(3))
