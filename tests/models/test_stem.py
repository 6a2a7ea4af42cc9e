"""STEM: a task's embeddings get gradient from that task's loss alone, yet feed every task."""

from __future__ import annotations

import pytest
import torch

from polytask.models import STEM, Head, STEMParams
from polytask.nn import FeatureInput


def _net(num_levels: int) -> STEM:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[4, 5], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4
    )
    heads = [Head("a", "binary"), Head("b", "regression"), Head("c", "binary")]
    params = STEMParams(num_levels=num_levels, num_task_experts=2, expert_units=[6])
    return STEM(inputs=inputs, heads=heads, params=params)


def _batch(n: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cat = torch.stack(
        [torch.randint(0, 4, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)], 1
    )
    return {"categorical": cat, "numeric": torch.randn(n, 2, generator=g)}


def _grads(net: STEM, task: str) -> dict[str, bool]:
    """Which parameter groups the loss of ``task`` alone reaches (computed with every task
    active, so the whole forward runs)."""
    net.zero_grad(set_to_none=True)
    net(_batch())[task].sum().backward()
    return {
        group: any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in ps)
        for group, ps in net.parameter_groups().items()
    }


@pytest.mark.parametrize("num_levels", [1, 2])
def test_task_embeddings_get_no_gradient_from_other_tasks_losses(num_levels: int) -> None:
    net = _net(num_levels)
    for task in "abc":
        reached = _grads(net, task)
        assert reached["input"] and reached["experts"], task  # shared: every task's
        assert reached[f"input.{task}"] and reached[f"experts.{task}"], task
        for other in set("abc") - {task}:
            assert not reached[f"input.{other}"], (task, other)
            assert not reached[f"experts.{other}"], (task, other)
            assert not reached[f"towers.{other}"], (task, other)


def test_every_tasks_embeddings_still_feed_every_tasks_output() -> None:
    net = _net(1)
    batch = _batch()
    before = net(batch)
    with torch.no_grad():  # change only task b's embedding tables
        for p in net.task_inputs[1].parameters():
            p.add_(1.0)
    after = net(batch)
    for task in "abc":  # all forward: a and c read b's experts (under stop-gradient)
        assert not torch.allclose(before[task], after[task]), task


def test_stop_gradient_changes_the_backward_only() -> None:
    net = _net(1)
    x = net.embed(_batch())
    level = net.levels[0]
    rep = net.represent(x, [0, 1, 2])
    parts = x.split(net.input_dim, dim=1)
    inputs = [parts[1 + k].expand(2, -1, -1) for k in range(3)] + [parts[0].unsqueeze(0)]
    experts = torch.cat([bank(inp) for bank, inp in zip(level.banks(), inputs, strict=True)])
    for k, name in enumerate("abc"):
        expected = torch.einsum("be,ebd->bd", rep.gates[name], experts)
        assert rep.per_task is not None
        torch.testing.assert_close(rep.per_task[k], expected)
        g = level.task_gates(parts[1 + k] + parts[0], [k])[:, 0]
        torch.testing.assert_close(rep.gates[name], g)  # the gate reads task + shared
