"""`MultiTaskModel`: scikit-learn conventions, exact metrics, early stopping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from polytask import MultiTaskModel, NotFittedError

SMALL = {"name": "mmoe", "num_experts": 3, "expert_units": [16], "tower_units": [8]}


def _model(features: Any, tasks: Any, **training: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=SMALL,
        training={"epochs": 2, "batch_size": 256, "progress": False, **training},
    )


def test_fit_returns_self_and_learned_state_ends_in_underscore(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks)
    assert not hasattr(model, "network_")
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(toy_frame)
    assert model.fit(toy_frame) is model
    assert len(model.history_) == 2 and model.preprocessor_.fitted


def test_metrics_are_exact_over_the_whole_split(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, eval_batch_size=37).fit(toy_frame)
    metrics = model.evaluate(toy_frame)
    pred = model.predict(toy_frame)
    auc = roc_auc_score(toy_frame.click, pred.click)
    assert metrics["click"]["auc"] == pytest.approx(auc, abs=1e-6)
    rmse = float(np.sqrt(np.mean((pred.dwell - toy_frame.dwell) ** 2)))
    assert metrics["dwell"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    acc = float(np.mean(pred.kind == toy_frame.kind))
    assert metrics["kind"]["accuracy"] == pytest.approx(acc)
    assert metrics["click"]["count"] == len(toy_frame)


def test_missing_labels_are_left_out_of_metrics(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df = toy_frame.copy()
    df.loc[df.index[:500], "click"] = np.nan
    model = _model(toy_features, toy_tasks).fit(df)
    metrics = model.evaluate(df)
    assert metrics["click"]["count"] == len(df) - 500
    pred = model.predict(df)
    labelled = df.click.notna()
    expected = roc_auc_score(df.click[labelled], pred.click[labelled])
    assert metrics["click"]["auc"] == pytest.approx(expected, abs=1e-6)
    # a table without a task's label column still evaluates the other tasks
    with pytest.warns(UserWarning, match="task 'dwell' has no metrics: its label column 'dwell'"):
        partial = model.evaluate(df.drop(columns=["dwell"]))
    assert partial["dwell"] == {"count": 0.0} and "auc" in partial["click"]


def test_multiclass_predictions_have_a_class_and_probabilities(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    pred = _model(toy_features, toy_tasks).fit(toy_frame).predict(toy_frame.head(5))
    proba = pred[["kind.proba.a", "kind.proba.b", "kind.proba.c"]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert set(pred.kind) <= {"a", "b", "c"}


def test_early_stopping_restores_the_best_epoch(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    train, valid = toy_frame.iloc[:1500], toy_frame.iloc[1500:]
    model = _model(toy_features, toy_tasks, epochs=30, patience=1, monitor="click.auc")
    model.config.optimizer.lr = 0.05  # overfits quickly, so stopping triggers
    model.fit(train, validation=valid)
    values = [r["validation"]["click"]["auc"] for r in model.history_]
    best = int(np.argmax(values)) + 1
    assert model.best_epoch_ == best
    assert len(model.history_) < 30
    assert model.evaluate(valid)["click"]["auc"] == pytest.approx(values[best - 1], abs=1e-9)


def test_unknown_categories_at_predict_time_do_not_crash(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks).fit(toy_frame)
    new = toy_frame.head(3).copy()
    new["color"] = ["purple", None, "red"]
    new["size"] = [99, 1, 2]
    encoded = model.encode(new, labels=False)
    assert encoded.categorical[:, 0].tolist()[:2] == [1, 0]
    assert encoded.categorical[0, 1].item() == 1
    assert np.isfinite(model.predict(new).click).all()


def test_monitor_name_is_validated(toy_features: Any, toy_tasks: Any) -> None:
    from polytask import ConfigError

    with pytest.raises(ConfigError, match=r"did you mean 'click\.auc'"):
        _model(toy_features, toy_tasks, monitor="clik.auc")


def test_fit_overrides_apply_to_that_call_only(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks).fit(toy_frame, epochs=1, batch_size=500)
    assert len(model.history_) == 1
    assert model.config.training.epochs == 2 and model.config.training.batch_size == 256


@pytest.mark.parametrize(("schedule", "stacked"), [("alternate", []), ("joint", [2])])
def test_per_task_training_tables_are_held_once(
    toy_frame: pd.DataFrame,
    toy_features: Any,
    monkeypatch: pytest.MonkeyPatch,
    schedule: str,
    stacked: list[int],
) -> None:
    """Alternate training uses each task's table as it is: no stacked copy of them all."""
    from polytask.data import EncodedData

    calls: list[int] = []
    concat = EncodedData.concat

    def spy(parts: list[EncodedData]) -> EncodedData:
        calls.append(len(parts))
        return concat(parts)

    monkeypatch.setattr(EncodedData, "concat", staticmethod(spy))
    tasks = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}
    train = {"click": toy_frame.iloc[:1200], "dwell": toy_frame.iloc[1200:]}
    model = _model(toy_features, tasks, epochs=1, schedule=schedule).fit(train)
    assert calls == stacked
    assert model.n_train_ == 2000
