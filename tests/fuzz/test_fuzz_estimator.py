"""Fuzzed tables through `MultiTaskModel.fit` (one epoch, tiny models) and `predict`: valid
tables must work and give sane predictions; broken ones must raise a `PolytaskError`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import torch
from fuzz_tables import FEATURES, Case, prediction_tables, valid_tables, wild_tables
from hypothesis import event, given, settings
from hypothesis import strategies as st

from polytask import MultiTaskModel, PolytaskError

# Each example trains a model: a quarter of the profile's examples keeps the suite fast.
BUDGET = max(5, settings.default.max_examples // 4)

TINY: dict[str, dict[str, Any]] = {
    "mmoe": {"name": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [4]},
    "moe": {"name": "moe", "num_experts": 2, "expert_units": [4], "tower_units": [4]},
    "shared_bottom": {"name": "shared_bottom", "shared_units": [4], "tower_units": [4]},
}


def tiny_model(tasks: dict[str, Any], name: str, weighting: str = "sum") -> MultiTaskModel:
    return MultiTaskModel(
        features={**FEATURES, "embedding_dim": 2},
        tasks=tasks,
        model=TINY[name],
        loss=weighting,
        training={"epochs": 1, "batch_size": 8, "progress": False},
    )


def check_predictions(model: MultiTaskModel, rows: pd.DataFrame, out: pd.DataFrame) -> None:
    """Rows in input order with the input's index, finite values, probabilities in [0, 1],
    embedding indices within their tables."""
    pdt.assert_index_equal(out.index, rows.index)
    encoded = model.encode(rows, labels=False)
    assert bool((encoded.categorical < torch.tensor(model.preprocessor_.cardinalities)).all())
    for name, task in model.config.tasks.items():
        if task.type == "multiclass":
            known = model.preprocessor_.classes_[name]
            assert set(out[name]) <= set(known)
            proba = out[[f"{name}.proba.{c}" for c in known]].to_numpy()
            assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
        else:
            values = out[name].to_numpy(dtype=np.float64)
            assert np.isfinite(values).all()
            if task.type == "binary":
                assert ((values >= 0) & (values <= 1)).all()


@settings(max_examples=BUDGET)
@given(
    valid_tables(),
    prediction_tables(),
    st.sampled_from(sorted(TINY)),
    st.sampled_from(["sum", "uncertainty"]),
    st.booleans(),
)
def test_valid_tables_fit_and_predict(
    case: Case, new: pd.DataFrame, name: str, weighting: str, validate: bool
):
    model = tiny_model(case.tasks, name, weighting)
    validation = case.frame.iloc[::2] if validate else None
    model.fit(case.frame, validation=validation)
    for rows in (case.frame, new, new.iloc[::-1]):
        check_predictions(model, rows, model.predict(rows))
    metrics = model.evaluate(case.frame)
    assert set(metrics) == set(case.tasks)


@given(wild_tables())
def test_broken_tables_are_refused_before_training(case: Case):
    with pytest.raises(PolytaskError) as err:
        tiny_model(case.tasks, "shared_bottom").fit(case.frame, epochs=1)
    event(f"refused: {type(err.value).__name__}")
    assert str(err.value) and "\n" not in str(err.value)


@settings(max_examples=BUDGET)
@given(valid_tables(), wild_tables(), st.sampled_from(sorted(TINY)))
def test_predict_on_broken_rows_works_or_raises_a_polytask_error(case: Case, new: Case, name: str):
    model = tiny_model(case.tasks, name).fit(case.frame)
    rows = new.frame.drop(columns=[c for c in ("b", "r", "m") if c in new.frame.columns])
    try:
        out = model.predict(rows)
    except PolytaskError as err:
        event(f"predict refused: {type(err).__name__}")
        assert str(err) and "\n" not in str(err)
        return
    event("predicted")
    check_predictions(model, rows, out)
