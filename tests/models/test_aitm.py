"""AITM (Xi et al., KDD 2021): the transfer unit is the only path from task t-1 into task t,
the calibrator term, the chain, and the attention weights as gate statistics."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from polytask import ConfigError, MultiTaskModel
from polytask.models import AITM, AITMParams, Head
from polytask.nn import FeatureInput

HEADS = [Head("click", "binary"), Head("buy", "binary"), Head("dwell", "regression")]


def make_aitm(**params: Any) -> AITM:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[4, 5], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4
    )
    return AITM(inputs=inputs, heads=HEADS, params=AITMParams(encoder_units=[12, 8], **params))


def make_batch(n: int = 32) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        "categorical": torch.stack(
            [torch.randint(0, 4, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)], 1
        ),
        "numeric": torch.randn(n, 2, generator=g),
    }


def _grads(out: Tensor, params: list[nn.Parameter]) -> list[Tensor | None]:
    return list(torch.autograd.grad(out.sum(), params, allow_unused=True, retain_graph=True))


def _nonzero(grads: list[Tensor | None]) -> bool:
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_the_transfer_unit_is_the_only_path_from_the_previous_task() -> None:
    model = make_aitm(chain=["click", "buy"])
    batch = make_batch()
    groups = model.parameter_groups()
    # With the transfer unit live, buy's output depends on click's encoder.
    assert _nonzero(_grads(model(batch)["buy"], groups["encoders.click"]))
    # Hold the transfer unit's output fixed (its linear map zero: p = relu(bias)): then no
    # gradient and no change reach buy from click's encoder.
    info = model.transfer["buy"].info[0]
    assert isinstance(info, nn.Linear)
    with torch.no_grad():
        info.weight.zero_()
    before = model(batch)["buy"].detach()
    grads = _grads(model(batch)["buy"], groups["encoders.click"])
    assert all(g is None or bool((g == 0).all()) for g in grads)
    with torch.no_grad():
        for p in groups["encoders.click"] + groups["towers.click"]:
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(model(batch)["buy"], before, rtol=0, atol=0)
    # Nothing flows backwards: click never reads buy's parameters (zero through the batched
    # encoders when both run, out of the graph when click runs alone).
    later = groups["encoders.buy"] + groups["transfer.buy"] + groups["towers.buy"]
    assert all(g is None or bool((g == 0).all()) for g in _grads(model(batch)["click"], later))
    assert all(g is None for g in _grads(model(batch, ["click"])["click"], later))


def test_tasks_outside_the_chain_read_their_own_encoder_only() -> None:
    model = make_aitm(chain=["click", "buy"])
    groups = model.parameter_groups()
    assert "transfer.dwell" not in groups and "transfer.click" not in groups
    out = model(make_batch(), ["dwell"])["dwell"]
    others = groups["encoders.click"] + groups["encoders.buy"] + groups["transfer.buy"]
    assert all(g is None for g in _grads(out, others))


def test_default_chain_is_the_declared_task_order_and_groups_cover_every_parameter() -> None:
    model = make_aitm()
    assert model.chain == ["click", "buy", "dwell"]
    groups = model.parameter_groups()
    assert list(groups) == [
        "input",
        "encoders.click",
        "encoders.buy",
        "encoders.dwell",
        "transfer.buy",
        "transfer.dwell",
        "towers.click",
        "towers.buy",
        "towers.dwell",
    ]
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_the_calibrator_is_its_closed_form_on_consecutive_binary_tasks() -> None:
    model = make_aitm(calibrator_weight=0.6)
    batch = make_batch()
    outputs, terms = model.training_forward(batch, {})
    p_click, p_buy = torch.sigmoid(outputs["click"]), torch.sigmoid(outputs["buy"])
    expected = 0.6 * torch.clamp(p_buy - p_click, min=0).mean()
    assert set(terms) == {"buy"}  # buy -> dwell: dwell is a regression, no calibrator
    torch.testing.assert_close(terms["buy"], expected)
    hand = torch.tensor([0.1, 0.5, 0.9]).logit()
    got = model.auxiliary_losses({"click": hand, "buy": hand.flip(0)}, {})
    torch.testing.assert_close(got["buy"], torch.tensor(0.6 * (0.8 + 0.0 + 0.0) / 3))
    assert make_aitm(calibrator_weight=0.0).training_forward(batch, {})[1] == {}


def test_a_step_on_one_task_leaves_the_previous_tower_untouched() -> None:
    model = make_aitm(chain=["click", "buy"])
    outputs, terms = model.training_forward(make_batch(), {}, ["buy"])
    assert list(outputs) == ["buy"] and terms == {}
    outputs["buy"].sum().backward()
    groups = model.parameter_groups()
    assert all(p.grad is None for p in groups["towers.click"] + groups["towers.dwell"])
    assert all(p.grad is not None for p in groups["encoders.click"] + groups["transfer.buy"])


def test_the_attention_weights_are_the_gate_weights() -> None:
    model = make_aitm(chain=["click", "buy"])
    gates = model.gate_weights(make_batch(16))
    assert list(gates) == ["buy"]
    assert gates["buy"].shape == (16, 2)
    torch.testing.assert_close(gates["buy"].sum(1), torch.ones(16))


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        (["click", "clik"], r"chain: expected task names, found \['clik'\]"),
        (["click", "click"], r"chain: expected each task at most once, found \['click'\]"),
    ],
)
def test_a_bad_chain_fails_before_any_data_is_read(chain: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"model 'aitm': {message}"):
        MultiTaskModel(
            features={"categorical": ["a"], "numeric": []},
            tasks={"click": {"type": "binary"}, "buy": {"type": "binary"}},
            model={"name": "aitm", "chain": chain},
        )
