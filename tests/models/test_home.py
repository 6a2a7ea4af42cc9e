"""HoME: normalised experts, and a hierarchy of gates (shared -> category -> task)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from polytask import ConfigError, MultiTaskModel
from polytask.models import Head, HoME, HoMEParams
from polytask.nn import ExpertBank, FeatureInput

GROUPS = {"watch": ["a", "b"], "inter": ["c"]}


def _net(**params: Any) -> HoME:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[4, 5], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4
    )
    heads = [Head("a", "binary"), Head("b", "regression"), Head("c", "binary")]
    spec: dict[str, Any] = {"expert_units": [6], "task_groups": GROUPS, **params}
    return HoME(inputs=inputs, heads=heads, params=HoMEParams(**spec))


def _batch(n: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in (4, 5)], 1)
    return {"categorical": cat, "numeric": torch.randn(n, 2, generator=g)}


def test_expert_outputs_are_swish_of_the_batch_normalised_layer() -> None:
    net = _net(feature_gate=False)
    net.train()
    x = net.embed(_batch())
    banks = list(net.meta_experts)
    out = ExpertBank.stacked(banks, x)  # what HoME's meta level computes, [E, B, 6]
    e = 0
    for bank in banks:
        for j in range(bank.num_experts):
            pre = x @ bank.weights[0][j] + bank.biases[0][j]  # [B, 6]
            mean, var = pre.mean(0), pre.var(0, unbiased=False)
            normalised = (pre - mean) / torch.sqrt(var + 1e-5)
            torch.testing.assert_close(out[e], F.silu(normalised))  # gamma 1, beta 0 at init
            e += 1
    # So before the activation every expert's every unit has batch mean 0 and variance 1:
    # all experts' outputs are on one scale (the paper's cure for expert collapse).
    # In evaluation the running statistics replace the batch's.
    net.eval()
    bank = banks[0]
    pre0 = x @ bank.weights[0][0] + bank.biases[0][0]
    rm, rv = bank.running_mean0[0, 0], bank.running_var0[0, 0]
    expected = F.silu((pre0 - rm) / torch.sqrt(rv + 1e-5))
    torch.testing.assert_close(ExpertBank.stacked([bank], x)[0], expected)


def test_running_statistics_follow_batch_norm_1d() -> None:
    net = _net(feature_gate=False)
    net.train()
    x = net.embed(_batch())
    bank = net.meta_experts[1]
    ExpertBank.stacked([bank], x)
    reference = torch.nn.BatchNorm1d(6)
    reference(x @ bank.weights[0][1] + bank.biases[0][1])
    torch.testing.assert_close(bank.running_mean0[1, 0], reference.running_mean)
    torch.testing.assert_close(bank.running_var0[1, 0], reference.running_var)


def test_gates_span_the_hierarchy() -> None:
    net = _net()
    gates = net.represent(net.embed(_batch()), [0, 1, 2]).gates
    ns, nc, nt = 2, 2, 2
    assert gates["meta.shared"].shape[1] == ns + 2 * nc  # every meta expert
    assert gates["meta.watch"].shape[1] == gates["meta.inter"].shape[1] == nc + ns
    for task in "abc":
        assert gates[task].shape[1] == nt + nc + ns
        torch.testing.assert_close(gates[task].sum(1), torch.ones(64))


def test_a_task_loss_stays_inside_its_branch_of_the_hierarchy() -> None:
    net = _net()
    net.train()
    out = net(_batch(), ["a"])
    assert set(out) == {"a"}
    out["a"].sum().backward()

    def reached(params: Any) -> bool:
        return any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in params)

    groups = net.parameter_groups()
    for group in ("experts", "experts.a", "experts.category.watch", "gates", "gates.a"):
        assert reached(groups[group]), group
    assert reached(groups["gates.category.watch"])
    for group in ("experts.b", "gates.b", "towers.b", "experts.c", "gates.c", "towers.c"):
        assert not reached(groups[group]), group
    assert not reached(groups["gates.category.inter"])
    inter = net.categories.index("inter")
    assert not reached(net.category_experts[inter].parameters())  # task level: c's branch
    assert reached(net.meta_experts[1 + inter].parameters())  # meta level: via the shared gate


def test_self_gate_adds_the_task_experts_mixture() -> None:
    with_gate, without = _net(), _net(self_gate=False)
    without.load_state_dict(with_gate.state_dict(), strict=False)
    batch = _batch()
    with_gate.eval()
    without.eval()
    a = with_gate.represent(with_gate.embed(batch), [0])
    b = without.represent(without.embed(batch), [0])
    assert a.per_task is not None and b.per_task is not None
    assert not torch.allclose(a.per_task[0], b.per_task[0])
    torch.testing.assert_close(a.gates["a"], b.gates["a"])  # same hierarchy gates


def test_task_groups_must_cover_every_task_once(toy_frame: pd.DataFrame, toy_features: Any) -> None:
    tasks = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}
    for groups, message in [
        ({"x": ["click"]}, r"task\(s\) \['dwell'\] are in no category"),
        ({"x": ["click", "dwell"], "y": ["dwell"]}, "'dwell' is in two categories"),
        ({"x": ["click", "dwel"]}, "'dwel', which is not a task"),
    ]:
        with pytest.raises(ConfigError, match=message):
            MultiTaskModel(
                features=toy_features, tasks=tasks, model={"name": "home", "task_groups": groups}
            )


def test_trains_under_bf16_autocast_with_float32_running_statistics(
    toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "home", "expert_units": [8]},
        training={"epochs": 1, "batch_size": 256, "progress": False, "precision": "bf16"},
    ).fit(toy_frame)
    bank = model.network_.meta_experts[0]
    assert bank.running_mean0.dtype == torch.float32
    assert torch.count_nonzero(bank.running_mean0) > 0  # updated by the bf16 steps
    assert model.predict(toy_frame)["click"].between(0, 1).all()
