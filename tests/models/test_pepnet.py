"""PEPNet: gates on the prior features scale the embeddings and every tower layer's input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from polytask import ConfigError, MultiTaskModel
from polytask.models import Head, PEPNet, PEPNetParams
from polytask.nn import FeatureInput


def _net(**params: Any) -> PEPNet:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[4, 5, 3],
        embedding_dims=[3, 2, 3],
        numeric_width=2,
        numeric_dim=4,
        names=["user", "item", "other"],
    )
    heads = [Head("a", "binary"), Head("b", "regression")]
    spec: dict[str, Any] = {"tower_units": [8, 4], "gate_units": 5, **params}
    return PEPNet(inputs=inputs, heads=heads, params=PEPNetParams(**spec))


def _batch(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in (4, 5, 3)], 1)
    return {"categorical": cat, "numeric": torch.randn(n, 2, generator=g)}


def _all_gates(net: PEPNet, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    rep = net.represent(net.embed(batch), [0, 1])
    return [rep.gates["embedding"], *rep.context["tower_gates"].values()]


def test_without_context_the_gates_depend_on_the_gate_features_only() -> None:
    net = _net(gate_features=["user"], gate_context=False)
    batch = _batch()
    before = _all_gates(net, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["categorical"][:, 1] = (changed["categorical"][:, 1] + 1) % 5  # item
    changed["categorical"][:, 2] = (changed["categorical"][:, 2] + 1) % 3  # other
    changed["numeric"] = changed["numeric"] + 1.0
    for b, a in zip(before, _all_gates(net, changed), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(net(batch)["a"], net(changed)["a"])  # the towers still read them
    changed["categorical"][:, 0] = (changed["categorical"][:, 0] + 1) % 4  # user: the prior
    assert all(not torch.equal(a, b) for a, b in zip(before, _all_gates(net, changed), strict=True))


def test_with_context_other_features_reach_the_gates_under_stop_gradient_only() -> None:
    net = _net(gate_features=["user"])  # the paper's form: gate_context on
    batch = _batch()
    x = net.embed(batch)
    x.retain_grad()
    gates = _all_gates_from(net, x)
    sum(g.sum() for g in gates).backward()  # type: ignore[union-attr]
    assert x.grad is not None
    user = dict((n, (s, w)) for n, s, w in net.inputs.fields)["user"]
    grad = x.grad.abs().sum(0)
    assert torch.count_nonzero(grad[user[0] : user[0] + user[1]]) > 0
    grad[user[0] : user[0] + user[1]] = 0
    assert torch.count_nonzero(grad) == 0  # item, other, numeric: no gradient via the gates
    changed = {k: v.clone() for k, v in batch.items()}
    changed["categorical"][:, 1] = (changed["categorical"][:, 1] + 1) % 5
    assert not torch.equal(_all_gates(net, changed)[0], _all_gates(net, batch)[0])


def _all_gates_from(net: PEPNet, x: torch.Tensor) -> list[torch.Tensor]:
    rep = net.represent(x, [0, 1])
    return [rep.gates["embedding"], *rep.context["tower_gates"].values()]


def test_identity_gates_reproduce_the_plain_network() -> None:
    net = _net()
    assert net.gate_features == ["user", "item", "other"]  # default: every categorical one
    with torch.no_grad():  # W2 = 0, b2 = 0: every gate is 2 * sigmoid(0) = 1
        for unit in [net.epnet, *net.ppnet.values()]:
            unit.out.weight.zero_()
            unit.out.bias.zero_()
    batch = _batch()
    out = net(batch)
    x = net.inputs(batch["categorical"], batch["numeric"])
    for name in ("a", "b"):
        plain = net.towers[name](x).squeeze(1)  # the towers alone on the plain embeddings
        torch.testing.assert_close(out[name], plain)
    gates = _all_gates(net, batch)
    assert all(torch.equal(g, torch.ones_like(g)) for g in gates)
    # Every linear layer of the tower, output layer included, has its slice of the gate.
    widths = [m.in_features for m in net.towers["a"].modules() if isinstance(m, nn.Linear)]
    assert gates[1].shape[1] == sum(widths)


def test_gates_scale_each_field_and_each_layer_input() -> None:
    net = _net(gate_scale=3.0)
    batch = _batch()
    x = net.embed(batch)
    rep = net.represent(x, [0, 1])
    delta = rep.gates["embedding"]
    assert delta.shape == (32, len(net.inputs.fields)) and (delta > 0).all() and (delta < 3).all()
    for f, (_, start, width) in enumerate(net.inputs.fields):
        assert rep.shared is not None
        torch.testing.assert_close(
            rep.shared[:, start : start + width], x[:, start : start + width] * delta[:, f : f + 1]
        )
    # Task a's tower by hand: each linear layer's input times its slice of a's gate.
    g = rep.context["tower_gates"]["a"]
    tower = net.towers["a"]
    layers = [m for m in tower.modules() if not isinstance(m, nn.Sequential)]
    h, start = rep.shared, 0
    for m in layers:
        if isinstance(m, nn.Linear):
            h = m(h * g[:, start : start + m.in_features])
            start += m.in_features
        else:
            h = m(h)
    torch.testing.assert_close(net(batch)["a"], h.squeeze(1))


def test_an_unknown_gate_feature_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"gate_features.*'usr'.*did you mean 'user'"):
        _net(gate_features=["usr"])


def test_gate_features_are_checked_before_any_data_is_read(toy_features: Any) -> None:
    with pytest.raises(ConfigError, match=r"gate_features.*'colour'.*did you mean 'color'"):
        MultiTaskModel(
            features=toy_features,
            tasks={"click": {"type": "binary"}},
            model={"name": "pepnet", "gate_features": ["colour"]},
        )
    no_categorical = {"categorical": [], "numeric": ["x"]}
    with pytest.raises(ConfigError, match=r"gate_features.*categorical feature"):
        MultiTaskModel(features=no_categorical, tasks={"click": {"type": "binary"}}, model="pepnet")
