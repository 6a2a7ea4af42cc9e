"""One task's estimate as another's feature, with and without stop-gradient."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch

from polytask import ConfigError, MultiTaskModel
from polytask.data import LABEL_PREFIX
from polytask.estimator import build_network
from polytask.losses import masked_loss


def _model(features: Any, name: str, detach: bool) -> MultiTaskModel:
    tasks = {
        "click": {"type": "binary"},
        "dwell": {"type": "regression", "inputs_from": ["click"], "detach": detach},
    }
    spec: dict[str, Any] = {"name": name, "tower_units": [8]}
    if name != "shared_bottom":
        spec.update(num_experts=3, expert_units=[8])
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=spec,
        training={"epochs": 1, "batch_size": 512, "progress": False},
    )


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe"])
def test_stop_gradient_zeroes_the_target_loss_gradient_on_the_source_tower(
    toy_frame: pd.DataFrame, toy_features: Any, name: str
) -> None:
    model = _model(toy_features, name, True).fit(toy_frame)
    # The same trained weights in a network whose link does not stop the gradient.
    open_cfg = _model(toy_features, name, False).config
    nets = {True: model.network_, False: build_network(open_cfg, model.preprocessor_)}
    nets[False].load_state_dict(model.network_.state_dict())
    batch = model.encode(toy_frame.head(256)).slice(0, 256)
    grads, outs = {}, {}
    for detach, net in nets.items():
        out = net(batch)
        outs[detach] = out["dwell"].detach()
        task = model.config.tasks["dwell"]
        loss = masked_loss(task, out["dwell"], batch[LABEL_PREFIX + "dwell"])
        source = list(net.towers["click"].parameters())
        g = torch.autograd.grad(loss, source, allow_unused=True)
        grads[detach] = [
            torch.zeros_like(p) if x is None else x for x, p in zip(g, source, strict=True)
        ]
    assert all(torch.count_nonzero(g) == 0 for g in grads[True])
    assert any(torch.count_nonzero(g) > 0 for g in grads[False])
    # stop-gradient changes the backward pass only
    torch.testing.assert_close(outs[True], outs[False], rtol=0, atol=0)


def test_links_are_declared_in_the_repr(toy_frame: pd.DataFrame, toy_features: Any) -> None:
    net = _model(toy_features, "shared_bottom", True).fit(toy_frame).network_
    assert "click->dwell (stop-gradient)" in repr(net)


def test_the_tower_takes_the_source_estimate_as_an_input(
    toy_frame: pd.DataFrame, toy_features: Any
) -> None:
    net = _model(toy_features, "shared_bottom", True).fit(toy_frame).network_
    first = net.towers["dwell"][0][0]
    assert first.in_features == net.towers["click"][0][0].in_features + 1


def test_unknown_source_and_cycles_are_errors(toy_features: Any) -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'clik'.*did you mean 'click'"):
        MultiTaskModel(
            features=toy_features,
            tasks={
                "click": {"type": "binary"},
                "dwell": {"type": "regression", "inputs_from": ["clik"]},
            },
        )
    with pytest.raises(ConfigError, match="cycle"):
        MultiTaskModel(
            features=toy_features,
            tasks={
                "click": {"type": "binary", "inputs_from": ["dwell"]},
                "dwell": {"type": "regression", "inputs_from": ["click"]},
            },
        )
