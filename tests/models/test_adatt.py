"""AdaTT: each task fuses every expert (softmax gate) plus a linear combination of its own."""

from __future__ import annotations

from typing import Any

import torch

from polytask.models import AdaTT, AdaTTParams, Head
from polytask.nn import FeatureInput


def _net(**params: Any) -> AdaTT:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[4, 5], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4
    )
    heads = [Head("a", "binary"), Head("b", "regression"), Head("c", "binary")]
    return AdaTT(inputs=inputs, heads=heads, params=AdaTTParams(expert_units=[6], **params))


def _batch(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cat = torch.stack(
        [torch.randint(0, 4, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)], 1
    )
    return {"categorical": cat, "numeric": torch.randn(n, 2, generator=g)}


def test_fusion_is_the_gate_mixture_of_every_expert_plus_the_native_combination() -> None:
    net = _net(num_levels=1, num_task_experts=2, num_shared_experts=1)
    batch = _batch()
    x = net.embed(batch)
    rep = net.represent(x, [0, 1, 2])
    level = net.levels[0]
    # Every expert by itself: tasks' in task order, then the shared one.
    experts = torch.cat([bank(x) for bank in level.banks()])  # [7, B, D]
    assert experts.shape[0] == 3 * 2 + 1
    for k, name in enumerate("abc"):
        g = torch.softmax(x @ level.task_gates.weight[k] + level.task_gates.bias[k], dim=1)
        torch.testing.assert_close(rep.gates[name], g)
        torch.testing.assert_close(g.sum(1), torch.ones(len(x)))
        expected = torch.einsum("be,ebd->bd", g, experts)
        own = experts[2 * k : 2 * k + 2]  # NativeExpertLF: task k's own experts only
        expected = expected + torch.einsum("e,ebd->bd", level.native[k], own)
        assert rep.per_task is not None
        torch.testing.assert_close(rep.per_task[k], expected)


def test_one_expert_per_unit_adds_the_own_expert_with_weight_one() -> None:
    net = _net(num_levels=1, num_task_experts=1, num_shared_experts=1)
    assert len(list(net.levels[0].native)) == 0  # nothing learned: the weight is fixed at 1
    x = net.embed(_batch())
    rep = net.represent(x, [0, 1, 2])
    experts = torch.cat([bank(x) for bank in net.levels[0].banks()])
    for k, name in enumerate("abc"):
        expected = torch.einsum("be,ebd->bd", rep.gates[name], experts) + experts[k]
        assert rep.per_task is not None
        torch.testing.assert_close(rep.per_task[k], expected)


def test_a_task_loss_reaches_other_tasks_experts_but_not_their_gates_or_towers() -> None:
    net = _net(num_levels=2, num_task_experts=2, num_shared_experts=1)
    out = net(_batch(), ["a"])
    assert set(out) == {"a"}
    out["a"].sum().backward()
    groups = net.parameter_groups()

    def reached(group: str) -> bool:
        return any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in groups[group])

    # Task-to-task transfer: task a's fusion mixes b's and c's experts at every level.
    assert reached("experts.b") and reached("experts.c") and reached("experts")
    for lv in net.levels:
        for w in lv.task_experts[1].weights:
            assert w.grad is not None and torch.count_nonzero(w.grad) > 0
    # b's last-level gate and native weights, and b's tower, are b's alone.
    last = net.levels[-1]
    for p in (last.task_gates.weight[1], last.task_gates.bias[1], last.native[1]):
        assert p.grad is None
    assert all(p.grad is None for p in groups["towers.b"])
    # b's inner-level gate feeds b's next-level experts, which a's fusion reads.
    assert net.levels[0].task_gates.weight[1].grad is not None


def test_without_shared_experts_it_is_adatt_sp() -> None:
    net = _net(num_levels=2, num_task_experts=2, num_shared_experts=0)
    assert "experts" not in net.parameter_groups() and "gates" not in net.parameter_groups()
    rep = net.represent(net.embed(_batch()), [0, 1, 2])
    assert rep.gates["a"].shape[1] == 3 * 2  # every task expert, no shared ones
    assert "level1.shared" not in rep.gates
