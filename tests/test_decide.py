"""Decisions from several KPIs on a fitted model: calibration, grouped metrics, the fused
score and `decide`, through the estimator (the pure pieces have their own tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel
from polytask.config import ScoreConfig
from polytask.datasets import funnel_synthetic
from polytask.decide import decide, write_front
from polytask.errors import ConfigError, DataError
from polytask.ranking import grouped_metrics


def _tables(rows: int = 6000) -> dict[str, pd.DataFrame]:
    out = {}
    for i, split in enumerate(("train", "validation", "test")):
        f = funnel_synthetic(rows if split == "train" else rows // 2, seed=i)
        f.insert(0, "request", np.arange(len(f)) // 10)
        out[split] = f
    return out


@pytest.fixture(scope="module")
def funnel() -> tuple[MultiTaskModel, dict[str, pd.DataFrame]]:
    tables = _tables()
    model = MultiTaskModel(
        features={
            "categorical": ["user_group", "item_cat", "position"],
            "numeric": ["user_activity", "price", "item_quality"],
        },
        tasks={"click": {"type": "binary"}, "purchase": {"type": "binary", "label": "conversion"}},
        model={"name": "shared_bottom", "shared_units": [32], "tower_units": [16]},
        training={"epochs": 3, "batch_size": 256, "seed": 0},
        calibration={"click": "platt"},
        decision={"group": "request", "k": 5},
    ).fit(tables["train"], validation=tables["validation"])
    return model, tables


def test_fit_calibrates_on_validation_and_predict_keeps_the_raw_score(funnel) -> None:
    model, tables = funnel
    assert set(model.calibrators_) == {"click"}
    pred = model.predict(tables["test"])
    assert {"click", "click.raw", "purchase"} <= set(pred.columns)
    assert "purchase.raw" not in pred.columns
    # monotone: the calibrated column ranks the rows as the raw one does
    order = np.argsort(pred["click.raw"].to_numpy(), kind="stable")
    assert np.all(np.diff(pred["click"].to_numpy()[order]) >= 0)
    metrics = model.evaluate(tables["test"])
    assert metrics["click"]["ece"] < metrics["click"]["ece_raw"]


def test_evaluate_reports_grouped_metrics_of_each_task(funnel) -> None:
    model, tables = funnel
    test = tables["test"]
    metrics = model.evaluate(test)
    pred = model.predict(test)
    direct = grouped_metrics("binary", test["request"], pred["purchase"], test["conversion"], 5)
    assert metrics["purchase"]["gauc"] == pytest.approx(direct["gauc"], abs=1e-12)
    assert metrics["purchase"]["ndcg@5"] == pytest.approx(direct["ndcg@5"], abs=1e-12)
    with pytest.raises(DataError, match=r"group column .user. .* not in the table"):
        model.evaluate(test, group="user")


def test_decide_front_and_predicted_score_reproduce_the_chosen_kpis(funnel, tmp_path) -> None:
    model, tables = funnel
    result = decide(
        model,
        tables["validation"],
        maximize="purchase.gauc",
        subject_to=["click.gauc >= 95%"],
        trials=30,
    )
    assert result.table["pareto"].sum() >= 3
    assert result.kpis["click.gauc"] >= 0.95 * result.own["click"]["click.gauc"]
    # the chosen weights are the model's score now: predict's score column ranks each group
    # exactly as the search did
    valid = tables["validation"]
    pred = model.predict(valid)
    for task, label in (("click", "click"), ("purchase", "conversion")):
        found = grouped_metrics("binary", valid["request"], pred["score"], valid[label], 5)
        for m in ("gauc", "ndcg@5", "recall@5"):
            assert found[m] == pytest.approx(result.kpis[f"{task}.{m}"], abs=1e-12)
    # and a saved model serves the same score
    model.save(tmp_path / "model")
    back = MultiTaskModel.load(tmp_path / "model")
    np.testing.assert_array_equal(back.predict(valid)["score"], pred["score"])
    written = write_front(result, tmp_path / "model" / "decision")
    csv = pd.read_csv(written[0])
    assert len(csv) == len(result.table) and csv["chosen"].sum() == 1
    assert written[1].stat().st_size > 10_000  # a real PNG, not an empty file
    import matplotlib.image

    img = matplotlib.image.imread(written[1])
    assert img.shape[0] > 200 and img.std() > 0.05


def test_decide_errors_name_the_problem(funnel) -> None:
    model, tables = funnel
    with pytest.raises(ConfigError, match=r"no candidate satisfies click\.gauc >= 1\.5 .*best"):
        decide(
            model,
            tables["validation"],
            maximize="purchase.gauc",
            subject_to=["click.gauc >= 1.5"],
            trials=5,
        )
    with pytest.raises(ConfigError, match=r"unknown KPI 'purchase\.auc'"):
        decide(model, tables["validation"], maximize="purchase.auc", trials=2)
    with pytest.raises(DataError, match="group column 'session'"):
        decide(model, tables["validation"], maximize="purchase.gauc", group="session")


def test_settings_errors_name_the_problem() -> None:
    base = {"features": {"numeric": ["x"]}, "tasks": {"a": {"type": "binary"}}}
    with pytest.raises(ConfigError, match="unknown task 'b'"):
        MultiTaskModel(**base, decision={"score": {"weights": {"b": 1.0}}})
    with pytest.raises(ConfigError, match="calibration: unknown task 'c'"):
        MultiTaskModel(**base, calibration={"c": "platt"})
    with pytest.raises(ConfigError, match=r"calibration\.r: .*regression task"):
        MultiTaskModel(
            features={"numeric": ["x"]},
            tasks={"r": {"type": "regression"}},
            calibration={"r": "isotonic"},
        )


def test_onnx_backend_serves_the_calibrated_columns_and_the_score(funnel, tmp_path) -> None:
    model, tables = funnel
    model.save(tmp_path / "m")
    copy = MultiTaskModel.load(tmp_path / "m")
    copy.config.decision.score = ScoreConfig(form="product", weights={"click": 0.5, "purchase": 1})
    test = tables["test"].head(500)
    torch_pred = copy.predict(test)
    onnx_pred = copy.predict(test, backend="onnx")
    assert list(onnx_pred.columns) == list(torch_pred.columns)
    for c in ("click", "click.raw", "purchase", "score"):
        np.testing.assert_allclose(onnx_pred[c], torch_pred[c], rtol=1e-5, atol=1e-6)
