"""DSelect-k (Hazimeh et al., NeurIPS 2021): the smooth step, binary selection, the entropy
regulariser, and at most k experts per task after training."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
import torch
from torch import Tensor

from polytask import ConfigError, MultiTaskModel
from polytask.models import DSelectK, DSelectKParams, Head
from polytask.models._dselect_k import DSelectGates, smooth_step
from polytask.nn import FeatureInput


def test_smooth_step_is_the_papers_cubic_and_flat_outside() -> None:
    gamma = 2.0
    t = torch.tensor([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0], dtype=torch.float64)
    cubic = -2 / gamma**3 * t**3 + 3 / (2 * gamma) * t + 0.5
    expected = torch.where(t <= -1, 0.0, torch.where(t >= 1, 1.0, cubic))
    torch.testing.assert_close(smooth_step(t, gamma), expected)
    assert smooth_step(t, gamma)[3] == 0.5 and smooth_step(t, gamma)[2] == pytest.approx(0.15625)
    # Continuously differentiable: zero slope at the ends of the cubic.
    ends = torch.tensor([-1.0, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(smooth_step(ends, gamma).sum(), ends)
    torch.testing.assert_close(grad, torch.zeros(2, dtype=torch.float64))


def _gates(num_experts: int, k: int) -> DSelectGates:
    torch.manual_seed(0)
    return DSelectGates(in_dim=3, num_gates=2, num_experts=num_experts, k=k, gamma=1.0)


@pytest.mark.parametrize("expert", [0, 3, 5, 7])
def test_saturated_logits_select_the_expert_whose_binary_code_they_spell(expert: int) -> None:
    gates = _gates(8, 1)
    bits = [(expert >> (2 - j)) & 1 for j in range(3)]
    with torch.no_grad():
        gates.weight[0].zero_()
        gates.bias[0].copy_(torch.tensor([4.0 if b else -4.0 for b in bits] + [0.0]))
    q, selectors = gates(torch.randn(5, 3), [0])
    assert q.shape == (5, 1, 8) and selectors.shape == (5, 1, 1, 8)
    torch.testing.assert_close(q[:, 0], torch.eye(8)[expert].expand(5, 8))


def test_k_selectors_mix_their_experts_with_softmax_weights() -> None:
    gates = _gates(4, 2)  # m = 2 bits; layout: z of selector 1, z of selector 2, w
    with torch.no_grad():
        gates.weight[1].zero_()
        gates.bias[1].copy_(torch.tensor([-3.0, 3.0, 3.0, 3.0, 0.0, math.log(3.0)]))
    q, _ = gates(torch.randn(2, 3), [1])
    torch.testing.assert_close(q[:, 0], torch.tensor([[0.0, 0.25, 0.0, 0.75]]).expand(2, 4))


def test_the_regulariser_is_the_selectors_entropy_plus_the_reachability_term() -> None:
    r = torch.tensor([[[[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]]])  # [B=1, G=1, k=2, n=4]
    entropy = -(0.5 * math.log(0.5 + 1e-6)) * 2 - math.log(1 + 1e-6)
    torch.testing.assert_close(_gates(4, 2).regulariser(r), torch.tensor([entropy]))
    # With 3 experts (not a power of 2) each selector also pays 1 / (its weight on them).
    r3 = torch.tensor([[[[0.5, 0.25, 0.0], [0.2, 0.2, 0.2]]]])
    ent3 = -sum(v * math.log(v + 1e-6) for v in [0.5, 0.25, 0.2, 0.2, 0.2])
    expected = ent3 + 1 / 0.75 + 1 / 0.6
    torch.testing.assert_close(_gates(3, 2).regulariser(r3), torch.tensor([expected]))


def _net(**params: Any) -> DSelectK:
    torch.manual_seed(0)
    inputs = FeatureInput(cardinalities=[4], embedding_dims=[3], numeric_width=2, numeric_dim=3)
    heads = [Head("a", "binary"), Head("b", "regression")]
    spec = DSelectKParams.model_validate({"num_experts": 4, "expert_units": [6], **params})
    return DSelectK(inputs=inputs, heads=heads, params=spec)


def _batch(n: int = 16) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "categorical": torch.randint(0, 4, (n, 1), generator=g),
        "numeric": torch.randn(n, 2, generator=g),
    }


def test_the_regulariser_joins_each_task_loss_in_training_only() -> None:
    net = _net(entropy_weight=0.5)
    batch = _batch()
    _, terms = net.training_forward(batch, {})
    x = net.inputs(batch["categorical"], batch["numeric"])
    _, selectors = net.gates(x, [0, 1])
    expected = 0.5 * net.gates.regulariser(selectors)
    assert list(terms) == ["a", "b"]
    torch.testing.assert_close(torch.stack([terms["a"], terms["b"]]), expected)
    assert net.training_forward(batch, {}, ["b"])[1].keys() == {"b"}
    net.eval()
    assert net.training_forward(batch, {})[1] == {}
    assert _net(entropy_weight=0.0).training_forward(batch, {})[1] == {}


def test_groups_and_gate_weights() -> None:
    net = _net()
    assert list(net.parameter_groups()) == ["input", "experts", "gates", "towers.a", "towers.b"]
    gates = net.gate_weights(_batch(8))
    assert list(gates) == ["a", "b"] and gates["a"].shape == (8, 4)


def test_k_larger_than_the_experts_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"k: expected at most num_experts \(4\), found 5"):
        MultiTaskModel(
            features={"categorical": ["color"], "numeric": ["x"]},
            tasks={"click": {"type": "binary"}},
            model={"name": "dselect_k", "num_experts": 4, "k": 5},
        )


def _trained_gates(toy_frame: pd.DataFrame, toy_features: Any, **params: Any) -> dict[str, Tensor]:
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={
            "name": "dselect_k",
            "num_experts": 8,
            "k": 2,
            "expert_units": [16],
            "tower_units": [8],
            "entropy_weight": 1.0,
            **params,
        },
        optimizer={"lr": 0.01},
        training={"epochs": 8, "batch_size": 128, "progress": False, "seed": 0},
    ).fit(toy_frame)
    batch = model.encode(toy_frame).slice(0, len(toy_frame))
    model.network_.eval()
    with torch.no_grad():
        gates: dict[str, Tensor] = model.network_.gate_weights(batch)
    before = _net(num_experts=8, k=2, per_example=params.get("per_example", True))
    with torch.no_grad():
        untrained = before.gate_weights(_batch(64))
    for q in untrained.values():  # untrained, every smooth step is near 1/2: all 8 in use
        assert int((q > 0).sum(1).min()) == 8
    return gates


@pytest.mark.usefixtures("one_thread")
def test_each_task_selects_at_most_k_experts_after_training(
    toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    """The task-only gate (the paper's static form): one selection per task, at most k."""
    gates = _trained_gates(toy_frame, toy_features, per_example=False)
    for name, q in gates.items():
        assert int((q > 0).sum(1).max()) <= 2, name
        assert torch.equal(q, q[:1].expand_as(q))  # the same for every row
        torch.testing.assert_close(q.sum(1), torch.ones(len(q)))  # 8 experts: codes all valid


@pytest.mark.usefixtures("one_thread")
def test_per_example_gates_select_at_most_k_experts_on_almost_every_row(
    toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    """Per example, a row whose gate logits are inside the smooth step's band mixes more
    (a selection cannot change with x without crossing it). Measured here after 8 epochs:
    0% of rows for click, 19% for dwell, against 100% before training."""
    gates = _trained_gates(toy_frame, toy_features)
    for name, q in gates.items():
        over = float(((q > 0).sum(1) > 2).float().mean())
        assert over <= 0.25, (name, over)
