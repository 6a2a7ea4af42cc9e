"""Alternate training: one dataset per task, one task per step."""

from __future__ import annotations

import copy
from collections import Counter
from itertools import pairwise
from typing import Any

import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from polytask import ConfigError, DataError, MultiTaskModel
from polytask.training import StepResult, TrainStep
from polytask.training import step as step_module
from polytask.training.schedules import task_sequence


def _split(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Separate datasets per task: disjoint rows, each with only its task's label."""
    return {
        "click": df.iloc[:1200].drop(columns=["dwell", "kind"]),
        "dwell": df.iloc[1200:1700].drop(columns=["click", "kind"]),
        "kind": df.iloc[1700:].drop(columns=["click", "dwell"]),
    }


def _model(features: Any, tasks: Any, model: str = "mmoe", **training: Any) -> MultiTaskModel:
    spec: dict[str, Any] = {"name": model, "tower_units": [8]}
    if model != "shared_bottom":
        spec.update(num_experts=3, expert_units=[16])
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=spec,
        loss="uncertainty",
        optimizer={"lr": 5e-3},
        training={
            "epochs": 3,
            "batch_size": 128,
            "schedule": "alternate",
            "progress": False,
            **training,
        },
    )


@pytest.mark.parametrize("model_name", ["mmoe", "moe", "shared_bottom"])
def test_a_step_on_one_task_leaves_the_others_bit_identical(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, model_name: str
) -> None:
    model = _model(toy_features, toy_tasks, model_name, epochs=1).fit(_split(toy_frame))
    net, opt = model.network_, model.optimizer_
    names = dict(net.named_parameters()) | {
        f"weighting.{k}": v for k, v in model.weighting_.named_parameters()
    }
    before = {k: v.detach().clone() for k, v in names.items()}
    state_before = copy.deepcopy(opt.state_dict())
    batch = model.encode(toy_frame.head(128), labels=True).slice(0, 128)
    assert TrainStep(net, model.weighting_, model.config.tasks, opt)(batch, "click").applied

    def untouched(key: str) -> bool:
        return (
            key.startswith(("towers.dwell.", "towers.kind."))
            or key in {"gates.weight.1", "gates.bias.1", "gates.weight.2", "gates.bias.2"}
            or key in {"weighting.log_vars.1", "weighting.log_vars.2"}
        )

    changed = {k for k in names if not torch.equal(before[k], names[k].detach())}
    assert changed, "the step changed nothing"
    assert not {k for k in changed if untouched(k)}
    assert any(k.startswith("towers.click.") for k in changed)
    assert "weighting.log_vars.0" in changed
    if model_name == "mmoe":
        assert {"gates.weight.0", "experts.weights.0"} <= changed
    # the other tasks' optimizer state is bit-identical too
    index = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    state_after = opt.state_dict()["state"]
    for key, param in names.items():
        if untouched(key):
            i = index[id(param)]
            for field, value in state_before["state"].get(i, {}).items():
                assert torch.equal(value, state_after[i][field]), (key, field)


def test_alternate_training_learns_each_task_from_its_own_dataset(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, epochs=8).fit(_split(toy_frame))
    holdout = toy_frame.iloc[1000:1200]  # labels of click's dataset
    pred = model.predict(holdout)
    assert roc_auc_score(holdout.click, pred.click) > 0.85
    assert model.history_[-1]["train_loss"]["dwell"] < model.history_[0]["train_loss"]["dwell"]


def test_joint_schedule_stacks_per_task_datasets_with_masks(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    model = _model(toy_features, toy_tasks, schedule="joint", epochs=1).fit(_split(toy_frame))
    assert model.n_train_ == len(toy_frame)
    metrics = model.evaluate(toy_frame)
    assert metrics["click"]["count"] == len(toy_frame)


def test_task_sampling() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = {"a": 9000, "b": 1000}
    seq = task_sequence(sizes, 10_000, "proportional", g)
    share = Counter(seq)["a"] / len(seq)
    assert 0.88 < share < 0.92
    assert task_sequence(sizes, 4, "round_robin", g) == ["a", "b", "a", "b"]
    uniform = Counter(task_sequence(sizes, 10_000, "uniform", g))["a"] / 10_000
    assert 0.48 < uniform < 0.52


def test_alternate_needs_a_dataset_per_task(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    with pytest.raises(ConfigError, match="one dataset per task"):
        _model(toy_features, toy_tasks).fit(toy_frame)
    parts = _split(toy_frame)
    del parts["kind"]
    with pytest.raises(DataError, match=r"none given for \['kind'\]"):
        _model(toy_features, toy_tasks).fit(parts)
    parts = _split(toy_frame) | {"clik": toy_frame}
    with pytest.raises(DataError, match="unknown task"):
        _model(toy_features, toy_tasks).fit(parts)


@pytest.mark.parametrize("weighting", ["dwa", "pcgrad", "gradnorm"])
def test_weightings_that_mix_tasks_within_a_step_are_refused(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, weighting: str
) -> None:
    model = _model(toy_features, toy_tasks)
    model.config.loss.weighting = weighting
    with pytest.raises(ConfigError, match=f"'{weighting}' combines tasks within a step"):
        model.fit(_split(toy_frame))


def test_each_alternate_step_reads_the_device_once(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's finiteness check is the only host read between two steps: the loop does
    not read the returned losses again."""
    reads: list[str] = []
    for name in ("__bool__", "__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: Any, _name: str = name, _f: Any = original) -> Any:
            reads.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    starts: list[int] = []
    original = TrainStep.__call__

    def step(self: TrainStep, batch: Any, task: str | None = None) -> StepResult:
        assert task is not None
        starts.append(len(reads))
        return original(self, batch, task)

    monkeypatch.setattr(step_module.TrainStep, "__call__", step)
    _model(toy_features, toy_tasks, epochs=1).fit(_split(toy_frame))
    assert len(starts) == 17  # steps_per_epoch: 10 + 4 + 3 batches of 128
    assert {b - a for a, b in pairwise(starts)} == {1}
