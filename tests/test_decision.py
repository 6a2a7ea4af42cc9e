"""The fused score, the Pareto front and the weight search, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from polytask.decision import (
    Constraint,
    ScoreSpec,
    fused_score,
    group_rank,
    pareto_front,
    search_weights,
)

TYPES = {"ctr": "binary", "cvr": "binary", "value": "regression"}


def _preds(seed: int = 0, n: int = 500) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ctr": rng.uniform(0.001, 0.3, n),
        "cvr": rng.uniform(0.001, 0.2, n),
        "value": rng.lognormal(3.0, 0.7, n),
    }


def test_product_with_one_weight_ranks_exactly_as_that_task() -> None:
    p = _preds()
    s = fused_score(p, ScoreSpec("product", {"ctr": 1.0, "cvr": 0.0}), TYPES)
    np.testing.assert_array_equal(np.argsort(s, kind="stable"), np.argsort(p["ctr"], kind="stable"))
    np.testing.assert_allclose(s, p["ctr"], rtol=1e-12)


def test_product_and_sum_closed_forms() -> None:
    p = _preds(1)
    w = {"ctr": 1.0, "cvr": 1.0, "value": 0.5}
    prod = fused_score(p, ScoreSpec("product", w), TYPES)
    np.testing.assert_allclose(prod, p["ctr"] * p["cvr"] * p["value"] ** 0.5, rtol=1e-10)
    total = fused_score(p, ScoreSpec("sum", w, {"value": "log"}), TYPES)
    np.testing.assert_allclose(total, p["ctr"] + p["cvr"] + 0.5 * np.log(p["value"]), rtol=1e-12)


def test_rank_transform_is_within_group() -> None:
    v = np.array([3.0, 1.0, 2.0, 10.0, 20.0])
    g = np.array(["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(group_rank(v, g), [1.0, 1 / 3, 2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(group_rank(v, None), [3 / 5, 1 / 5, 2 / 5, 4 / 5, 1.0])


def test_pareto_flags_on_hand_made_points() -> None:
    pts = np.array(
        [
            [1.0, 0.0],  # front (best first column)
            [0.0, 1.0],  # front (best second column)
            [0.6, 0.6],  # front
            [0.5, 0.5],  # dominated by [0.6, 0.6]
            [0.6, 0.6],  # a duplicate of a front point stays on the front
            [np.nan, 2.0],  # undefined: never on the front
            [0.2, 0.9],  # front
            [0.1, 0.9],  # dominated by [0.2, 0.9]
        ]
    )
    assert pareto_front(pts).tolist() == [True, True, True, False, True, False, True, False]


def test_bad_spec_and_constraints_are_named() -> None:
    with pytest.raises(ValueError, match="unknown task 'ctx'"):
        fused_score(_preds(), ScoreSpec("product", {"ctx": 1.0}), TYPES)
    with pytest.raises(ValueError, match="'prob' is for binary tasks"):
        ScoreSpec("sum", {"value": 1.0}, {"value": "prob"}).check(TYPES)
    with pytest.raises(ValueError, match="expected one of"):
        ScoreSpec("max", {"ctr": 1.0}).check(TYPES)
    with pytest.raises(ValueError, match=r"expected .<task>\.<metric> >= <value>."):
        Constraint.parse("ctr.gauc > 0.5")
    c = Constraint.parse("cvr.gauc >= 95%")
    assert c.relative and c.bound({"cvr.gauc": 0.8}) == pytest.approx(0.76)


def _toy_evaluate(weights: dict[str, float]) -> dict[str, float]:
    # two KPIs in direct conflict: a's KPI grows with its weight, b's with b's
    return {"a.kpi": weights["a"], "b.kpi": 1.0 - weights["a"] ** 2}


def test_search_marks_the_front_and_picks_the_best_feasible() -> None:
    own = {"a.kpi": 1.0, "b.kpi": 1.0}
    table, chosen = search_weights(
        _toy_evaluate,
        ["a", "b"],
        maximize="a.kpi",
        constraints=[Constraint.parse("b.kpi >= 75%")],
        front_kpis=["a.kpi", "b.kpi"],
        own=own,
        trials=50,
        seed=0,
    )
    assert table["pareto"].sum() >= 3
    assert table.loc[chosen, "b.kpi"] >= 0.75
    feasible = table[table["b.kpi"] >= 0.75]
    assert table.loc[chosen, "a.kpi"] == feasible["a.kpi"].max()
    assert table["chosen"].sum() == 1


def test_search_names_the_binding_constraint() -> None:
    with pytest.raises(ValueError, match=r"no candidate satisfies b.kpi >= 2 .*best b.kpi found"):
        search_weights(
            _toy_evaluate,
            ["a", "b"],
            maximize="a.kpi",
            constraints=[Constraint.parse("b.kpi >= 2")],
            front_kpis=["a.kpi", "b.kpi"],
            own={},
            trials=5,
        )
    with pytest.raises(ValueError, match=r"unknown KPI .c\.kpi."):
        search_weights(
            _toy_evaluate, ["a", "b"], maximize="c.kpi", front_kpis=["a.kpi"], own={}, trials=1
        )
