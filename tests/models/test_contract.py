"""One contract harness run against every registered model (STYLE rule 7)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import ConfigError, MultiTaskModel
from polytask.data import LABEL_PREFIX
from polytask.estimator import build_network
from polytask.losses import task_losses
from polytask.models import MODELS

# Models whose architecture fixes the tasks they serve declare them here.
SPECIAL_TASKS: dict[str, dict[str, Any]] = {
    "esmm": {
        "ctr": {"type": "binary", "label": "click"},
        "ctcvr": {"type": "binary", "label": "buy"},
    }
}
SPECIAL_TASKS["escm2"] = SPECIAL_TASKS["esmm"]
SMALL: dict[str, dict[str, Any]] = {
    "shared_bottom": {"shared_units": [16]},
    "moe": {"num_experts": 3, "expert_units": [16]},
    "mmoe": {"num_experts": 3, "expert_units": [16]},
    "adatt": {"expert_units": [16]},
    "stem": {"expert_units": [16]},
    "pepnet": {"gate_units": 8},
    "home": {"expert_units": [16]},
    "aitm": {"encoder_units": [16]},
    "cross_stitch": {"column_units": [16]},
    "dselect_k": {"num_experts": 3, "expert_units": [16]},
}


def _tasks(name: str, toy_tasks: dict[str, Any]) -> dict[str, Any]:
    return SPECIAL_TASKS.get(name, toy_tasks)


def _frame(toy_frame: pd.DataFrame) -> pd.DataFrame:
    df = toy_frame.copy()
    df["buy"] = ((df.click == 1) & (df.z > 1)).astype(int)
    return df


def _fitted(
    name: str, df: pd.DataFrame, features: Any, tasks: Any, **training: Any
) -> MultiTaskModel:
    spec = {"name": name, "tower_units": [8], **SMALL.get(name, {})}
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=spec,
        training={"epochs": 1, "batch_size": 256, "progress": False, **training},
    ).fit(df)


@pytest.fixture(params=sorted(MODELS))
def model_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_outputs_have_one_entry_per_task_with_the_right_shape(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    model = _fitted(model_name, df, toy_features, tasks)
    batch = model.encode(df.head(7)).slice(0, 7)
    out = model.network_(batch)
    assert set(tasks) <= set(out)
    for name, spec in tasks.items():
        expected = (7, 3) if spec["type"] == "multiclass" else (7,)
        assert tuple(out[name].shape) == expected, name
        assert torch.isfinite(out[name]).all()


def test_parameter_groups_partition_the_parameters(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    net = _fitted(model_name, df, toy_features, tasks).network_
    grouped = [id(p) for ps in net.parameter_groups().values() for p in ps]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in net.parameters()}, "a parameter is in no group"
    assert "input" in net.parameter_groups()


def test_save_load_gives_identical_predictions(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any, tmp_path: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    model = _fitted(model_name, df, toy_features, tasks)
    before = model.predict(df)
    model.save(tmp_path / "m")
    after = MultiTaskModel.load(tmp_path / "m").predict(df)
    pd.testing.assert_frame_equal(before, after)


def test_one_step_lowers_the_loss_on_a_fixed_batch(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    model = _fitted(model_name, df, toy_features, tasks)
    net, cfg = model.network_, model.config
    batch = model.encode(df.head(512)).slice(0, 512)
    labels = {t: batch[LABEL_PREFIX + t] for t in cfg.tasks}
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()

    def loss() -> torch.Tensor:
        return task_losses(cfg.tasks, net(batch), labels).sum()

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert float(loss().detach()) < float(before.detach())


def test_same_seed_same_weights(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    a = _fitted(model_name, df, toy_features, tasks, seed=3).network_.state_dict()
    b = _fitted(model_name, df, toy_features, tasks, seed=3).network_.state_dict()
    c = _fitted(model_name, df, toy_features, tasks, seed=4).network_.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_predictions_keep_input_order_and_index(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    model = _fitted(model_name, df, toy_features, tasks)
    shuffled = df.sample(frac=1.0, random_state=1)
    whole = model.predict(df)
    part = model.predict(shuffled)
    assert list(part.index) == list(shuffled.index)
    pd.testing.assert_frame_equal(part.loc[df.index], whole, check_exact=False, atol=1e-6)
    for name, spec in tasks.items():
        if spec["type"] == "binary":
            assert np.all((part[name] >= 0) & (part[name] <= 1))


def test_any_subset_of_tasks_gives_the_outputs_of_the_whole_forward_in_any_task_order(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    """Task permutation: the declared order is reversed, and each task computed alone (only
    the parts of the body it needs) gives exactly what the forward of every task gives."""
    df, tasks = _frame(toy_frame), _tasks(model_name, toy_tasks)
    reversed_tasks = dict(reversed(list(tasks.items())))
    model = _fitted(model_name, df, toy_features, reversed_tasks)
    net = model.network_.eval()
    batch = model.encode(df.head(64)).slice(0, 64)
    with torch.no_grad():
        whole = net(batch)
        assert list(whole)[: len(tasks)] == list(reversed_tasks)
        for name, spec in reversed_tasks.items():
            alone = net(batch, [name])
            expected = (64, 3) if spec["type"] == "multiclass" else (64,)
            assert tuple(alone[name].shape) == expected, name
            torch.testing.assert_close(alone[name], whole[name], rtol=1e-5, atol=1e-6)


def test_stop_gradient_links_or_a_config_error(
    model_name: str, toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    """A model either takes one task's estimate into another's tower, with stop-gradient
    exactly zeroing the target loss's gradient on the source tower, or (models whose tasks
    are coupled by construction, ESMM) rejects ``inputs_from`` before any data is read."""

    plain = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}
    source, target = list(_tasks(model_name, plain))[:2]
    df = _frame(toy_frame)

    def tasks(detach: bool) -> dict[str, Any]:
        out = {name: dict(t) for name, t in _tasks(model_name, plain).items()}
        out[target].update(inputs_from=[source], detach=detach)
        return out

    spec = {"name": model_name, "tower_units": [8], **SMALL.get(model_name, {})}
    settings = {"epochs": 1, "batch_size": 512, "progress": False}
    try:
        model = MultiTaskModel(
            features=toy_features, tasks=tasks(True), model=spec, training=settings
        )
    except ConfigError as err:
        assert "inputs_from" in str(err)
        return
    model.fit(df)
    open_cfg = MultiTaskModel(
        features=toy_features, tasks=tasks(False), model=spec, training=settings
    ).config
    nets = {True: model.network_, False: build_network(open_cfg, model.preprocessor_)}
    nets[False].load_state_dict(model.network_.state_dict())
    batch = model.encode(df.head(256)).slice(0, 256)
    grads, outs = {}, {}
    for detach, net in nets.items():
        net.eval()
        out = net(batch)
        outs[detach] = out[target].detach()
        tower = list(net.towers[source].parameters())
        g = torch.autograd.grad(out[target].square().mean(), tower, allow_unused=True)
        grads[detach] = [x for x in g if x is not None and torch.count_nonzero(x) > 0]
    assert not grads[True]
    assert grads[False]
    torch.testing.assert_close(outs[True], outs[False], rtol=0, atol=0)
