"""PLE / CGC (Tang et al., RecSys 2020): structure, batched experts, subset forward, groups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from polytask import ConfigError, MultiTaskModel
from polytask.config import OptimizerConfig
from polytask.losses import task_losses
from polytask.models import PLE, CGCParams, Head, PLEParams, cgc
from polytask.nn import FeatureInput, mix
from polytask.tasks import TaskSpec
from polytask.training import build_optimizer

HEADS = [Head("a", "binary"), Head("b", "regression"), Head("c", "multiclass", out_dim=3)]
TASKS = {
    "a": TaskSpec(type="binary"),
    "b": TaskSpec(type="regression"),
    "c": TaskSpec(type="multiclass"),
}


def make_inputs() -> FeatureInput:
    return FeatureInput(cardinalities=[4, 5], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4)


def make_ple(heads: Sequence[Head] = HEADS, **params: Any) -> PLE:
    settings: dict[str, Any] = {
        "num_levels": 2,
        "num_task_experts": 2,
        "num_shared_experts": 3,
        "expert_units": [8, 6],
        "tower_units": [5],
    }
    settings.update(params)
    return PLE(inputs=make_inputs(), heads=heads, params=PLEParams(**settings))


def make_batch(n: int = 16, *, labels: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    batch = {
        "categorical": torch.stack(
            [torch.randint(0, 4, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)], 1
        ),
        "numeric": torch.randn(n, 2, generator=g),
    }
    if labels:
        batch["label:a"] = torch.randint(0, 2, (n,), generator=g).float()
        batch["label:b"] = torch.randn(n, generator=g)
        batch["label:c"] = torch.randint(0, 3, (n,), generator=g).float()
    return batch


def labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: batch[f"label:{name}"] for name in TASKS}


def expert_params(model: PLE, task: int | None, level: int) -> list[nn.Parameter]:
    lv = model.levels[level]
    bank = lv.shared_experts if task is None else lv.task_experts[task]
    return list(bank.parameters())


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_outputs_have_one_entry_per_task_with_its_shape(levels: int) -> None:
    out = make_ple(num_levels=levels)(make_batch(16))
    assert list(out) == ["a", "b", "c"]
    assert out["a"].shape == (16,)
    assert out["b"].shape == (16,)
    assert out["c"].shape == (16, 3)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_forward_on_a_subset_equals_the_full_forward(levels: int) -> None:
    model = make_ple(num_levels=levels).eval()
    batch = make_batch(16)
    full = model(batch)
    for name in ["a", "b", "c"]:
        sub = model(batch, tasks=[name])
        assert list(sub) == [name]
        torch.testing.assert_close(sub[name], full[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(model(batch, tasks=["c", "a"])["a"], full["a"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_each_level_mixes_own_and_shared_experts_as_the_paper_defines(levels: int) -> None:
    """Against a plain per-task reference: task k's gate over ``[E_k, E_s]``, the shared
    gate over every expert of the level (Tang et al. 2020, eqs. 3-6)."""
    model = make_ple(num_levels=levels).eval()
    batch = make_batch(16)
    x = model.inputs(batch["categorical"], batch["numeric"])
    h_task, h_shared = [x] * 3, x
    for level in model.levels:
        own = [level.task_experts[k](h_task[k]) for k in range(3)]
        shared = level.shared_experts(h_shared)
        mixed = [
            mix(level.task_gates(h_task[k], [k]), torch.cat([own[k], shared]))[0] for k in range(3)
        ]
        if level.shared_gate is not None:
            h_shared = mix(level.shared_gate(h_shared), torch.cat([*own, shared]))[0]
        h_task = mixed
    rep = model.represent(x, [0, 1, 2])
    for got, want in zip(rep.per_task, h_task, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("levels", [1, 2])
def test_parameter_groups_cover_every_parameter_exactly_once(levels: int) -> None:
    model = make_ple(num_levels=levels)
    groups = model.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    expected = ["input", "experts", "experts.a", "experts.b", "experts.c"]
    expected += ["gates"] if levels > 1 else []
    expected += ["gates.a", "gates.b", "gates.c", "towers.a", "towers.b", "towers.c"]
    assert list(groups) == expected


def test_task_groups_hold_that_tasks_experts_and_gates_at_every_level() -> None:
    model = make_ple(num_levels=2)
    groups = model.parameter_groups()
    assert {id(p) for p in groups["experts.b"]} == {
        id(p) for level in (0, 1) for p in expert_params(model, 1, level)
    }
    assert {id(p) for p in groups["experts"]} == {
        id(p) for level in (0, 1) for p in expert_params(model, None, level)
    }
    gates = [model.levels[i].task_gates for i in (0, 1)]
    assert {id(p) for p in groups["gates.b"]} == {
        id(p) for g in gates for p in (g.weight[1], g.bias[1])
    }
    assert {id(p) for p in groups["gates"]} == {
        id(p) for p in model.levels[0].shared_gate.parameters()
    }


def test_group_names_make_natural_learning_rate_patterns() -> None:
    model = make_ple(num_levels=2)
    cfg = OptimizerConfig(lr=1e-3, group_lr={"gates*": 0.1, "experts.*": 0.01})
    lrs = {g["name"]: g["lr"] for g in build_optimizer(model.parameter_groups(), cfg).param_groups}
    assert lrs["gates"] == lrs["gates.a"] == lrs["gates.c"] == 0.1
    assert lrs["experts.a"] == lrs["experts.b"] == 0.01
    assert lrs["experts"] == lrs["towers.a"] == lrs["input"] == 1e-3


class _CountOps(TorchFunctionMode):
    """Counts every torch function and tensor method called inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _ops_in_forward(model: PLE) -> int:
    batch = make_batch(8)
    with _CountOps() as counter:
        model(batch)
    return counter.calls


@pytest.mark.parametrize("levels", [1, 2])
def test_experts_run_as_batched_ops_not_a_loop_over_experts(levels: int) -> None:
    few = make_ple(num_levels=levels, num_task_experts=1, num_shared_experts=1)
    many = make_ple(num_levels=levels, num_task_experts=5, num_shared_experts=4)
    assert _ops_in_forward(few) == _ops_in_forward(many)
    # Experts are stacked weight tensors [E, in, out], not nn.Linear modules.
    assert not [m for m in many.levels.modules() if isinstance(m, nn.Linear)]
    first_in = make_inputs().out_dim
    bank = many.levels[0].task_experts[0]
    assert [tuple(w.shape) for w in bank.weights] == [(5, first_in, 8), (5, 8, 6)]
    assert [tuple(w.shape) for w in many.levels[-1].shared_experts.weights] == [
        (4, first_in if levels == 1 else 6, 8),
        (4, 8, 6),
    ]


def test_one_level_is_cgc_and_two_levels_add_a_shared_gate_feeding_the_next_level() -> None:
    one = make_ple(num_levels=1)
    assert len(one.levels) == 1
    assert one.levels[0].shared_gate is None
    assert one.levels[0].task_gates.num_experts == 2 + 3  # [E_k, E_s]

    two = make_ple(num_levels=2)
    assert len(two.levels) == 2
    inner, last = two.levels
    assert inner.shared_gate is not None and inner.shared_gate.num_experts == 3 * 2 + 3
    assert last.shared_gate is None
    assert last.shared_experts.weights[0].shape[1] == 6  # reads the previous level's mixture
    assert last.task_gates.weight[0].shape[0] == 6

    built = cgc(inputs=make_inputs(), heads=HEADS, params=CGCParams(expert_units=[8]))
    assert isinstance(built, PLE) and len(built.levels) == 1


def test_gate_weights_are_named_per_task_and_level_and_sum_to_one() -> None:
    model = make_ple(num_levels=2)
    gates = model.gate_weights(make_batch(16))
    assert sorted(gates) == sorted(
        ["a", "b", "c", "level1.a", "level1.b", "level1.c", "level1.shared"]
    )
    assert gates["a"].shape == (16, 2 + 3)
    assert gates["level1.shared"].shape == (16, 3 * 2 + 3)
    for g in gates.values():
        torch.testing.assert_close(g.sum(1), torch.ones(16))
    assert sorted(make_ple(num_levels=1).gate_weights(make_batch(4))) == ["a", "b", "c"]


def test_gate_weights_run_no_tower() -> None:
    model = make_ple(num_levels=2).eval()
    ran: list[str] = []
    for name, tower in model.towers.items():
        tower.register_forward_pre_hook(lambda *_, name=name: ran.append(name))
    batch = make_batch(8)
    gates = model.gate_weights(batch)
    assert ran == []
    assert len(gates) == 7
    model(batch)
    assert ran == ["a", "b", "c"]  # the hooks see the towers when they do run


def _grads_after_loss_on(model: PLE, task: str) -> None:
    batch = make_batch(16, labels=True)
    out = model(batch, tasks=[task])
    task_losses({task: TASKS[task]}, out, {task: labels(batch)[task]}).sum().backward()


def test_cgc_step_on_one_task_leaves_every_other_tasks_parameters_without_grad() -> None:
    model = make_ple(num_levels=1)
    _grads_after_loss_on(model, "a")
    groups = model.parameter_groups()
    for name in ["experts.b", "gates.b", "towers.b", "experts.c", "gates.c", "towers.c"]:
        assert all(p.grad is None for p in groups[name]), name
    for name in ["input", "experts", "experts.a", "gates.a", "towers.a"]:
        assert all(p.grad is not None for p in groups[name]), name


def test_ple_step_on_one_task_reaches_other_tasks_only_through_the_shared_path() -> None:
    model = make_ple(num_levels=2)
    _grads_after_loss_on(model, "a")
    groups = model.parameter_groups()
    for name in ["gates.b", "towers.b", "gates.c", "towers.c"]:
        assert all(p.grad is None for p in groups[name]), name
    # Last level: other tasks' experts are not computed.
    assert all(p.grad is None for p in expert_params(model, 1, level=1))
    # Inner level: the shared gate mixes every task's experts into the shared path of 'a'.
    assert all(p.grad is not None for p in expert_params(model, 1, level=0))
    assert all(p.grad is not None for p in groups["gates"])


@pytest.mark.parametrize("name", ["ple", "cgc"])
def test_save_and_load_give_identical_predictions(
    name: str,
    tmp_path: Path,
    toy_frame: pd.DataFrame,
    toy_features: dict[str, list[str]],
    toy_tasks: dict[str, dict[str, str]],
) -> None:
    model = MultiTaskModel(
        features=toy_features,
        tasks=toy_tasks,
        model={"name": name, "expert_units": [16], "num_task_experts": 1},
        training={"epochs": 1, "batch_size": 256, "progress": False},
    ).fit(toy_frame)
    loaded = MultiTaskModel.load(model.save(tmp_path / "model"))
    pd.testing.assert_frame_equal(loaded.predict(toy_frame), model.predict(toy_frame))
    stats = loaded.gate_statistics(toy_frame.head(100))
    assert {"click", "dwell", "kind"} <= set(stats)


def test_cgc_has_no_num_levels_key(
    toy_features: dict[str, list[str]], toy_tasks: dict[str, dict[str, str]]
) -> None:
    with pytest.raises(ConfigError, match="num_levels"):
        MultiTaskModel(
            features=toy_features, tasks=toy_tasks, model={"name": "cgc", "num_levels": 2}
        )
