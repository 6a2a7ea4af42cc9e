"""ESCM2 (Wang et al., SIGIR 2022): the IPS and DR counterfactual risks against their closed
forms on a hand-made batch, where their gradients go, and the model around them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor

from polytask import ConfigError, MultiTaskModel
from polytask.datasets import funnel_synthetic
from polytask.models import ESCM2, ESCM2Params, Head, counterfactual_risk
from polytask.nn import FeatureInput

# Four impressions: three clicked (two of them converted), one not; pCTR 0.04 is floored at
# 1/15 by the default clip.
P_CTR = [0.5, 0.2, 0.04, 0.8]
P_CVR = [0.5, 0.25, 0.9, 0.1]
CLICK = [1.0, 1.0, 1.0, 0.0]
CONVERSION = [1.0, 0.0, 1.0, 0.0]
IMPUTED = [0.3, 0.1, 0.2, 0.4]
# e = BCE(conversion, pCVR) on the clicked rows; 1 / max(pCTR, 1/15).
ERRORS = [math.log(2.0), -math.log(0.75), -math.log(0.9)]
INVERSE = [2.0, 5.0, 15.0]


def _inputs(requires_grad: bool = False) -> dict[str, Tensor]:
    t = {
        "ctr_logit": torch.tensor(P_CTR, dtype=torch.float64).logit(),
        "cvr_logit": torch.tensor(P_CVR, dtype=torch.float64).logit(),
        "click": torch.tensor(CLICK, dtype=torch.float64),
        "conversion": torch.tensor(CONVERSION, dtype=torch.float64),
    }
    for name in ("ctr_logit", "cvr_logit"):
        t[name].requires_grad_(requires_grad)
    return t


def test_ips_is_its_closed_form() -> None:
    expected = sum(e * w for e, w in zip(ERRORS, INVERSE, strict=True)) / 4
    got = counterfactual_risk(**_inputs(), form="ips", max_inverse_propensity=15.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_dr_is_its_closed_form_plus_the_imputation_loss() -> None:
    rows = [
        IMPUTED[i]
        + (ERRORS[i] - IMPUTED[i]) * INVERSE[i]
        + (ERRORS[i] - IMPUTED[i]) ** 2 * INVERSE[i]
        for i in range(3)
    ]
    expected = (sum(rows) + IMPUTED[3]) / 4  # the unclicked row keeps its imputed error
    imputed = torch.tensor(IMPUTED, dtype=torch.float64)
    got = counterfactual_risk(**_inputs(), form="dr", max_inverse_propensity=15.0, imputed=imputed)
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_rows_missing_a_label_are_left_out_of_the_mean() -> None:
    t = _inputs()
    padded = {k: torch.cat([v, v[:1]]) for k, v in t.items()}
    padded["click"][-1] = float("nan")
    full = counterfactual_risk(**t, form="ips", max_inverse_propensity=15.0)
    got = counterfactual_risk(**padded, form="ips", max_inverse_propensity=15.0)
    torch.testing.assert_close(got, full)


def test_the_clip_bounds_the_inverse_propensity() -> None:
    loose = counterfactual_risk(**_inputs(), form="ips", max_inverse_propensity=100.0)
    expected = (ERRORS[0] * 2 + ERRORS[1] * 5 + ERRORS[2] * 25) / 4  # 1 / 0.04 = 25 < 100
    assert float(loose) == pytest.approx(expected, rel=1e-12)


def test_gradients_reach_the_cvr_logits_of_clicked_rows_only_never_the_propensity() -> None:
    t = _inputs(requires_grad=True)
    risk = counterfactual_risk(**t, form="ips", max_inverse_propensity=15.0)
    ctr_grad, cvr_grad = torch.autograd.grad(
        risk, [t["ctr_logit"], t["cvr_logit"]], allow_unused=True
    )
    assert ctr_grad is None or bool((ctr_grad == 0).all())
    # d/db BCE(y, sigmoid(b)) = sigmoid(b) - y, weighted by o / o^ and 1/4.
    expected = [(P_CVR[i] - CONVERSION[i]) * INVERSE[i] / 4 for i in range(3)] + [0.0]
    torch.testing.assert_close(cvr_grad, torch.tensor(expected, dtype=torch.float64))


def test_dr_trains_the_imputation_on_its_own_loss_only() -> None:
    t = _inputs(requires_grad=True)
    imputed = torch.tensor(IMPUTED, dtype=torch.float64, requires_grad=True)
    risk = counterfactual_risk(**t, form="dr", max_inverse_propensity=15.0, imputed=imputed)
    (grad,) = torch.autograd.grad(risk, [imputed])
    # d/de^ of o (e - e^)^2 / o^ over 4 rows; the unclicked row: nothing.
    expected = [-2 * (ERRORS[i] - IMPUTED[i]) * INVERSE[i] / 4 for i in range(3)] + [0.0]
    torch.testing.assert_close(grad, torch.tensor(expected, dtype=torch.float64))


# ------------------------------------------------------------------------------ the model

HEADS = [Head("ctr", "binary"), Head("ctcvr", "binary")]


def make_escm2(**params: Any) -> ESCM2:
    torch.manual_seed(0)
    inputs = FeatureInput(cardinalities=[4], embedding_dims=[3], numeric_width=2, numeric_dim=3)
    return ESCM2(inputs=inputs, heads=HEADS, params=ESCM2Params(tower_units=[6], **params))


def make_batch(n: int = 32) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    g = torch.Generator().manual_seed(4)
    click = torch.randint(0, 2, (n,), generator=g).float()
    batch = {
        "categorical": torch.randint(0, 4, (n, 1), generator=g),
        "numeric": torch.randn(n, 2, generator=g),
    }
    labels = {"ctr": click, "ctcvr": click * torch.randint(0, 2, (n,), generator=g).float()}
    return batch, labels


@pytest.mark.parametrize("form", ["ips", "dr"])
def test_the_risk_joins_the_ctcvr_loss_with_its_weight(form: str) -> None:
    model = make_escm2(counterfactual=form, counterfactual_weight=0.3)
    batch, labels = make_batch()
    outputs, terms = model.training_forward(batch, labels)
    expected = 0.3 * counterfactual_risk(
        outputs["ctr"],
        outputs["cvr"],
        labels["ctr"],
        labels["ctcvr"],
        form=form,
        max_inverse_propensity=15.0,
        imputed=outputs.get("cvr_error"),
    )
    assert list(terms) == ["ctcvr"]
    torch.testing.assert_close(terms["ctcvr"], expected)
    # The CTR tower gets none of it.
    grads = torch.autograd.grad(
        terms["ctcvr"], list(model.towers["ctr"].parameters()), allow_unused=True
    )
    assert all(g is None or bool((g == 0).all()) for g in grads)
    assert model.training_forward(batch, labels, ["ctr"])[1] == {}


def test_groups_and_auxiliary_outputs() -> None:
    dr, ips = make_escm2(), make_escm2(counterfactual="ips")
    assert list(dr.parameter_groups()) == ["input", "towers.ctr", "towers.cvr", "towers.cvr_error"]
    assert dr.auxiliary_outputs == {"cvr": "binary", "cvr_error": "regression"}
    assert list(ips.parameter_groups()) == ["input", "towers.ctr", "towers.cvr"]
    assert ips.auxiliary_outputs == {"cvr": "binary"}


FEATURES = {
    "categorical": ["user_group", "item_cat", "position"],
    "numeric": ["user_activity", "price", "item_quality"],
}
TASKS = {
    "ctr": {"type": "binary", "label": "click"},
    "ctcvr": {"type": "binary", "label": "conversion"},
}


def test_a_clash_of_output_names_fails_before_any_data_is_read() -> None:
    with pytest.raises(ConfigError, match="model 'escm2': imputation_output: expected a name"):
        MultiTaskModel(
            features=FEATURES, tasks=TASKS, model={"name": "escm2", "imputation_output": "cvr"}
        )


@pytest.mark.usefixtures("one_thread")
def test_it_trains_on_the_funnel_and_predicts_every_column() -> None:
    funnel = funnel_synthetic(3000, seed=0)
    model = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model={"name": "escm2", "tower_units": [16]},
        training={"epochs": 2, "batch_size": 256, "progress": False},
    ).fit(funnel)
    pred = model.predict(funnel.head(200))
    assert list(pred.columns) == ["ctr", "ctcvr", "cvr", "cvr_error"]
    np.testing.assert_allclose(pred["ctcvr"], pred["ctr"] * pred["cvr"], rtol=1e-5)
    assert isinstance(pred, pd.DataFrame) and pred.notna().all().all()
