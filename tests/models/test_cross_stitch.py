"""Cross-stitch networks (Misra et al., CVPR 2016): the paper's initial units, identity units
make the task columns independent networks, units across tasks couple them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polytask.models import CrossStitch, CrossStitchParams, Head
from polytask.nn import FeatureInput


def make_net(num_tasks: int = 2, **params: object) -> CrossStitch:
    torch.manual_seed(0)
    inputs = FeatureInput(cardinalities=[4], embedding_dims=[3], numeric_width=2, numeric_dim=3)
    heads = [Head(f"t{k}", "binary") for k in range(num_tasks)]
    spec = CrossStitchParams.model_validate({"column_units": [10, 6], "tower_units": [4], **params})
    return CrossStitch(inputs=inputs, heads=heads, params=spec)


def make_batch(n: int = 24) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "categorical": torch.randint(0, 4, (n, 1), generator=g),
        "numeric": torch.randn(n, 2, generator=g),
    }


def _grads(out: Tensor, params: list[nn.Parameter]) -> list[Tensor | None]:
    return list(torch.autograd.grad(out.sum(), params, allow_unused=True))


def test_units_start_as_the_papers_convex_combinations() -> None:
    two = make_net(2)
    for unit in two.stitch:
        torch.testing.assert_close(unit.detach(), torch.tensor([[0.9, 0.1], [0.1, 0.9]]))
    three = make_net(3, self_weight=0.7)
    unit = three.stitch[0].detach()
    torch.testing.assert_close(unit.diagonal(), torch.full((3,), 0.7))
    torch.testing.assert_close(unit.sum(1), torch.ones(3))


def test_identity_units_make_the_columns_independent() -> None:
    net = make_net(2)
    batch = make_batch()
    groups = net.parameter_groups()
    # The paper's initial units couple the columns: t0's output depends on t1's column.
    assert any(
        g is not None and bool(g.abs().sum() > 0)
        for g in _grads(net(batch)["t0"], groups["columns.t1"])
    )
    with torch.no_grad():
        for unit in net.stitch:
            unit.copy_(torch.eye(2))
    before = net(batch)
    for k, other in ((0, "t1"), (1, "t0")):
        grads = _grads(net(batch)[f"t{k}"], groups[f"columns.{other}"] + groups[f"towers.{other}"])
        assert all(g is None or bool((g == 0).all()) for g in grads)
    # Changing t1's column and tower leaves t0's output bit for bit, and the other way round.
    with torch.no_grad():
        for p in groups["columns.t1"] + groups["towers.t1"]:
            p.add_(torch.randn_like(p))
    after = net(batch)
    torch.testing.assert_close(after["t0"], before["t0"], rtol=0, atol=0)
    assert not torch.equal(after["t1"], before["t1"])


def test_identity_units_match_separately_computed_columns() -> None:
    net = make_net(2)
    with torch.no_grad():
        for unit in net.stitch:
            unit.copy_(torch.eye(2))
    batch = make_batch()
    x = net.inputs(batch["categorical"], batch["numeric"])
    for k in range(2):
        h = x
        for banks in net._banks:
            h = banks[k](h)[0]
        expected = net.towers[f"t{k}"](h).squeeze(1)
        torch.testing.assert_close(net(batch)[f"t{k}"], expected)


def test_parameter_groups() -> None:
    net = make_net(2)
    groups = net.parameter_groups()
    assert list(groups) == ["input", "columns.t0", "columns.t1", "stitch", "towers.t0", "towers.t1"]
    assert len(groups["stitch"]) == 2 and net.last_shared_layer() == [net.stitch[-1]]
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in net.parameters()}
