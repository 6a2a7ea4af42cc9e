"""One contract harness run against every registered model (STYLE rule 7), on networks built
through the registry (`MODELS[name].build`: its parameter schema, head check and builder), not
through ``fit``: output shapes, parameter groups, one step, seeds, task subsets and order, and
links between tasks are properties of every architecture. What the estimator adds on top
(save/load, prediction order) is checked for every model in tests/test_estimator_models.py."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from polytask.losses import task_losses
from polytask.models import MODELS, Head, MultiTaskNet
from polytask.nn import FeatureInput
from polytask.tasks import TaskSpec

K = 3  # tasks; every task-indexed module list has this length (and no other list here has)
SMALL: dict[str, dict[str, Any]] = {
    "shared_bottom": {"shared_units": [8]},
    "moe": {"num_experts": 2, "expert_units": [8]},
    "mmoe": {"num_experts": 2, "expert_units": [8]},
    "ple": {"expert_units": [8], "num_levels": 2},
    "cgc": {"expert_units": [8]},
    "adatt": {"expert_units": [8]},
    "stem": {"expert_units": [8]},
    "pepnet": {"gate_units": 8},
    "home": {"expert_units": [8]},
    "aitm": {"encoder_units": [8]},
    "cross_stitch": {"column_units": [8]},
    "dselect_k": {"num_experts": 3, "expert_units": [8]},
}
# ESMM and ESCM2 serve two fixed tasks (a CTR and a CTCVR estimate) and refuse inputs_from.
FUNNEL = {"esmm", "escm2"}
ESMM_HEADS = [Head("ctr", "binary"), Head("ctcvr", "binary")]
# AITM transfers information along the task order (a funnel, by design): permuting the tasks
# is another model, so it is checked for the links only.
ORDERED = {"aitm"}


def _heads() -> list[Head]:
    return [Head("a", "binary"), Head("b", "regression"), Head("c", "multiclass", out_dim=4)]


def build(name: str, heads: Sequence[Head], seed: int = 0) -> MultiTaskNet:
    """A network from the registry alone: its parameter schema, its head check, its builder."""
    entry = MODELS[name]
    params = entry.params.model_validate({"tower_units": [6], **SMALL.get(name, {})})
    if entry.check_heads is not None:
        entry.check_heads(params, heads)
    torch.manual_seed(seed)
    inputs = FeatureInput(
        cardinalities=[5, 7], embedding_dims=[3, 3], numeric_width=2, numeric_dim=4
    )
    return entry.build(inputs=inputs, heads=list(heads), params=params)


def batch(rows: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "categorical": torch.stack(
            [torch.randint(0, 5, (rows,), generator=g), torch.randint(0, 7, (rows,), generator=g)],
            dim=1,
        ),
        "numeric": torch.randn(rows, 2, generator=g),
    }


def _task_lists(net: nn.Module) -> set[str]:
    """Prefixes of the module/parameter lists indexed by task (length K)."""
    return {
        name
        for name, module in net.named_modules()
        if isinstance(module, nn.ModuleList | nn.ParameterList) and len(module) == K
    }


def _permuted_state(
    state: dict[str, torch.Tensor], lists: set[str], order: list[int]
) -> dict[str, torch.Tensor]:
    """``state`` of a network on tasks ``[t_0, ..]`` as the state of the same network built on
    ``[t_order[0], ..]``: entry ``j`` of each task-indexed list takes entry ``order[j]``."""
    inverse = {old: new for new, old in enumerate(order)}
    out = {}
    for key, value in state.items():
        new_key = key
        for prefix in sorted(lists, key=len, reverse=True):
            match = re.match(rf"^{re.escape(prefix)}\.(\d+)(\.|$)", key)
            if match:
                i = inverse[int(match.group(1))]
                new_key = f"{prefix}.{i}{key[match.end(1) :]}"
                break
        out[new_key] = value
    return out


def _contract_heads(name: str) -> list[Head]:
    return list(ESMM_HEADS) if name in FUNNEL else _heads()


def _labels(heads: Sequence[Head], rows: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    out = {}
    for h in heads:
        if h.type == "binary":
            out[h.name] = torch.randint(0, 2, (rows,), generator=g).float()
        elif h.type == "multiclass":
            out[h.name] = torch.randint(0, h.out_dim, (rows,), generator=g).float()
        else:
            out[h.name] = torch.randn(rows, generator=g)
    return out


# Row models: the sequence models (bilstm, transformer) read sentences and keep their own
# contract (tests/models/test_sequence.py).
ROW_MODELS = sorted(name for name, entry in MODELS.items() if not entry.sequence)


@pytest.fixture(params=ROW_MODELS)
def model_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_outputs_have_one_entry_per_task_with_the_right_shape(model_name: str) -> None:
    heads = _contract_heads(model_name)
    out = build(model_name, heads).eval()(batch(7))
    assert [h.name for h in heads] == list(out)[: len(heads)]
    for h in heads:
        expected = (7, h.out_dim) if h.out_dim > 1 else (7,)
        assert tuple(out[h.name].shape) == expected, h.name
        assert torch.isfinite(out[h.name]).all()


def test_parameter_groups_partition_the_parameters(model_name: str) -> None:
    net = build(model_name, _contract_heads(model_name))
    grouped = [id(p) for ps in net.parameter_groups().values() for p in ps]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert set(grouped) == {id(p) for p in net.parameters()}, "a parameter is in no group"
    assert "input" in net.parameter_groups()


def test_one_step_lowers_the_loss_on_a_fixed_batch(model_name: str) -> None:
    heads = _contract_heads(model_name)
    net = build(model_name, heads).train()
    specs = {h.name: TaskSpec(type=h.type) for h in heads}
    x, labels = batch(64), _labels(heads, 64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same dropout masks, if any
        return task_losses(specs, net(x), labels).sum()

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    assert float(loss().detach()) < float(before.detach())


def test_same_seed_same_weights(model_name: str) -> None:
    heads = _contract_heads(model_name)
    a = build(model_name, heads, seed=3).state_dict()
    b = build(model_name, heads, seed=3).state_dict()
    c = build(model_name, heads, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_any_subset_of_tasks_gives_the_outputs_of_the_whole_forward(model_name: str) -> None:
    """Each task computed alone (only the parts of the body it needs) gives exactly what the
    forward of every task gives."""
    heads = _contract_heads(model_name)
    net = build(model_name, heads).eval()
    x = batch(32)
    with torch.no_grad():
        whole = net(x)
        for h in heads:
            alone = net(x, [h.name])
            torch.testing.assert_close(alone[h.name], whole[h.name], rtol=1e-5, atol=1e-6)


# Models whose gates mix every task's experts in one weight matrix: permuting the tasks also
# permutes columns inside those matrices, which the generic key remapping below cannot do.
# For them the test checks the shapes: each parameter group holds the same tensors.
MIXED_GATES = {"adatt", "home", "ple", "stem"}


def _shapes(net: MultiTaskNet) -> dict[str, list[tuple[int, ...]]]:
    return {g: sorted(tuple(p.shape) for p in ps) for g, ps in net.parameter_groups().items()}


@pytest.mark.parametrize("name", sorted(set(ROW_MODELS) - FUNNEL - ORDERED))
def test_permuting_the_tasks_permutes_the_outputs_and_nothing_else(name: str) -> None:
    heads = _heads()
    order = [2, 0, 1]
    net = build(name, heads).eval()
    other = build(name, [heads[i] for i in order], seed=5).eval()
    assert set(other.parameter_groups()) == set(net.parameter_groups())
    towers = [g for g in other.parameter_groups() if g.startswith("towers.")]
    assert towers == [f"towers.{heads[i].name}" for i in order]
    assert _shapes(other) == _shapes(net)
    if name in MIXED_GATES:
        assert list(other(batch())) == [heads[i].name for i in order]
        return
    lists = _task_lists(net)
    state = _permuted_state(net.state_dict(), lists, order)
    other.load_state_dict(state)  # every parameter has its counterpart
    x = batch()
    with torch.no_grad():
        a, b = net(x), other(x)
    assert list(b) == [heads[i].name for i in order]
    for h in heads:
        torch.testing.assert_close(a[h.name], b[h.name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ROW_MODELS)
@pytest.mark.parametrize("detach", [True, False])
def test_inputs_from_feeds_the_estimate_and_detach_stops_its_gradient(
    name: str, detach: bool
) -> None:
    heads = [Head("a", "binary"), Head("b", "regression", inputs_from=("a",), detach=detach)]
    if name in FUNNEL:  # its tasks are fixed and may not take inputs from each other
        with pytest.raises(ValueError, match="inputs_from"):
            build(name, [ESMM_HEADS[0], Head("ctcvr", "binary", inputs_from=("ctr",))])
        return
    net = build(name, heads).train()
    out = net(batch(), ["b"])  # b needs a: both run
    assert set(out) == {"a", "b"}
    net.zero_grad()
    out["b"].sum().backward()
    source = list(net.towers["a"].parameters())
    grads = [p.grad for p in source]
    if detach:
        assert all(g is None or bool((g == 0).all()) for g in grads)
    else:
        assert any(g is not None and bool((g != 0).any()) for g in grads)
    # b's tower takes a's estimate as one more input
    with torch.no_grad():
        base = net(batch(), ["b"])["b"]
        first = net.towers["a"][-1]
        assert isinstance(first, nn.Linear)
        first.bias += 5.0  # moves a's logit, so a's probability, so b's input
        assert not torch.allclose(net(batch(), ["b"])["b"], base)
