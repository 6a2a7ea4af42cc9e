from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from polytask.datasets import funnel_synthetic
from polytask.errors import DataError

CATEGORICAL = ["user_group", "item_cat", "position"]
NUMERIC = ["user_activity", "price", "item_quality"]


@pytest.fixture(scope="module")
def funnel() -> pd.DataFrame:
    return funnel_synthetic(100_000, seed=0)


def _design(df: pd.DataFrame) -> np.ndarray:
    """One-hot categories plus the numeric features on the scale they enter the logits."""
    numeric = np.column_stack([df["user_activity"], np.log(df["price"]), df["item_quality"]])
    return np.column_stack([pd.get_dummies(df[CATEGORICAL]).to_numpy(float), numeric])


def test_columns_and_dtypes() -> None:
    df = funnel_synthetic(50, seed=1)
    assert list(df.columns) == [
        *CATEGORICAL,
        *NUMERIC,
        "click",
        "conversion",
        "conversion_intent",
        "cvr_true",
    ]
    assert all(pd.api.types.is_string_dtype(df[c]) for c in CATEGORICAL)
    assert all(df[c].dtype == np.float64 for c in [*NUMERIC, "cvr_true"])
    assert all(df[c].dtype == np.int64 for c in ["click", "conversion", "conversion_intent"])


def test_feature_ranges(funnel: pd.DataFrame) -> None:
    assert funnel["user_group"].nunique() == 20
    assert funnel["item_cat"].nunique() == 30
    assert sorted(funnel["position"].unique()) == ["1", "2", "3", "4", "5"]
    assert (funnel["price"] > 0).all()
    assert funnel["item_quality"].between(0, 1).all()
    assert funnel["cvr_true"].between(0, 1).all()


def test_conversion_is_observed_only_after_a_click(funnel: pd.DataFrame) -> None:
    expected = funnel["click"] & funnel["conversion_intent"]
    pd.testing.assert_series_equal(funnel["conversion"], expected, check_names=False)
    assert set(funnel["click"].unique()) == {0, 1}
    assert set(funnel["conversion_intent"].unique()) == {0, 1}


def test_rates_are_those_of_an_ads_funnel(funnel: pd.DataFrame) -> None:
    clicked = funnel["click"] == 1
    assert 0.05 <= funnel["click"].mean() <= 0.20
    assert 0.05 <= funnel.loc[clicked, "conversion"].mean() <= 0.30


def test_clicked_rows_are_a_biased_sample(funnel: pd.DataFrame) -> None:
    clicked = funnel["click"] == 1
    assert funnel.loc[clicked, "cvr_true"].mean() > funnel.loc[~clicked, "cvr_true"].mean() + 0.05
    # Within every slot too: the latent intent raises clicks and conversions together.
    by_slot = funnel.groupby(["position", "click"])["cvr_true"].mean().unstack()
    assert (by_slot[1] > by_slot[0]).all()


def test_a_cvr_model_fitted_on_clicks_ranks_all_impressions_worse(funnel: pd.DataFrame) -> None:
    train, test = funnel.iloc[:50_000], funnel.iloc[50_000:]
    x_train, x_test = _design(train), _design(test)
    clicked = train["click"].to_numpy() == 1
    naive = LogisticRegression(max_iter=1000).fit(x_train[clicked], train["conversion"][clicked])
    entire = LogisticRegression(max_iter=1000).fit(x_train, train["conversion_intent"])
    target = test["conversion_intent"]
    naive_scores = naive.predict_proba(x_test)[:, 1]
    auc_naive = roc_auc_score(target, naive_scores)
    auc_entire = roc_auc_score(target, entire.predict_proba(x_test)[:, 1])
    auc_oracle = roc_auc_score(target, test["cvr_true"])
    assert auc_naive < auc_entire - 0.01 < auc_oracle - 0.05
    assert naive_scores.mean() > 1.5 * target.mean()  # and it overestimates CVR


def test_without_selection_bias_the_conversion_logit_is_linear_in_the_features() -> None:
    fits = []
    for seed in (0, 1):
        df = funnel_synthetic(5_000, selection_bias=0.0, seed=seed)
        logit = np.log(df["cvr_true"] / (1 - df["cvr_true"]))
        design = _design(df)
        coef, *_ = np.linalg.lstsq(design, logit, rcond=None)
        assert np.abs(logit - design @ coef).max() < 1e-3  # nothing outside the features
        # conversion logit: -0.9 * z_price + 2.5 * item_quality, z_price = log(price / 30) / 0.7
        np.testing.assert_allclose(coef[-3:], [0.0, -0.9 / 0.7, 2.5], atol=1e-3)
        fits.append(coef)
    # Every seed samples the same funnel: both fits give the same logits on the same rows.
    design = _design(funnel_synthetic(1_000, seed=2))
    np.testing.assert_allclose(design @ fits[0], design @ fits[1], atol=1e-3)


def test_same_seed_same_frame_and_different_seed_different_frame() -> None:
    a = funnel_synthetic(100, seed=3)
    pd.testing.assert_frame_equal(a, funnel_synthetic(100, seed=3))
    assert not a.equals(funnel_synthetic(100, seed=4))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": "10"}, "n_samples"),
        ({"selection_bias": -1.0}, "selection_bias"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs: dict[str, object], argument: str) -> None:
    arguments: dict[str, object] = {"n_samples": 10} | kwargs
    with pytest.raises(DataError, match=rf"'{argument}' expected .*received"):
        funnel_synthetic(**arguments)  # type: ignore[arg-type]
