"""Sequence models and tag tasks: padding, permutation, depth, packed vs masked, the loss."""

from __future__ import annotations

import pytest
import torch

from polytask.losses import task_losses
from polytask.models import MODELS, Head
from polytask.models._sequence import check_layers
from polytask.nn.tokens import TokenInput
from polytask.tasks import TaskSpec

SMALL = {"bilstm": {"hidden": 6}, "transformer": {"width": 8, "heads": 2, "feedforward": 8}}
SEQUENCE_MODELS = sorted(n for n, e in MODELS.items() if e.sequence)


def build(name: str, heads: list[Head], seed: int = 0, **params: object):
    entry = MODELS[name]
    p = entry.params.model_validate({**SMALL[name], **params})
    assert entry.check_heads is not None
    entry.check_heads(p, heads)
    torch.manual_seed(seed)
    inputs = TokenInput(
        cardinalities=[20, 5, 9], embedding_dim=5, shape_dim=2, char_filters=3, char_dim=3
    )
    return entry.build(inputs=inputs, heads=heads, params=p)


def batch(lengths: list[int], width: int | None = None, chars: int = 4) -> dict[str, torch.Tensor]:
    """Sentences of these lengths padded to ``width``: word, shape, char indices (0: pad)."""
    g = torch.Generator().manual_seed(3)
    width = width or max(lengths)
    cat = torch.zeros(len(lengths), width, 2 + chars, dtype=torch.long)
    for i, n in enumerate(lengths):
        cat[i, :n, 0] = torch.randint(1, 20, (n,), generator=g)
        cat[i, :n, 1] = torch.randint(1, 5, (n,), generator=g)
        cat[i, :n, 2:] = torch.randint(1, 9, (n, chars), generator=g)
    return {"categorical": cat, "numeric": torch.zeros(len(lengths), 0)}


HEADS = [
    Head("pos", "tag", out_dim=4, layer=1),
    Head("chunk", "tag", out_dim=3, inputs_from=("pos",)),
]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_outputs_are_per_token_and_zero_at_padding(name: str) -> None:
    net = build(name, HEADS).eval()
    out = net(batch([3, 5, 1], width=7))
    assert out["pos"].shape == (3, 7, 4) and out["chunk"].shape == (3, 7, 3)
    assert (out["chunk"][0, 3:] == 0).all() and (out["chunk"][2, 1:] == 0).all()
    assert (out["pos"][1, :5] != 0).any(dim=-1).all()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_permuting_the_sentences_permutes_the_outputs(name: str) -> None:
    net = build(name, HEADS).eval()
    x = batch([4, 2, 6, 1, 3])
    perm = torch.tensor([3, 0, 4, 2, 1])
    with torch.no_grad():
        a = net(x)
        b = net({k: v[perm] for k, v in x.items()})
    for task in a:
        torch.testing.assert_close(a[task][perm], b[task], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_sentence_does_not_depend_on_its_padding_or_batch(name: str) -> None:
    net = build(name, HEADS).eval()
    x = batch([4, 2, 6])
    with torch.no_grad():
        together = net(x)["chunk"]
        alone = net({k: v[1:2, :2] for k, v in x.items()})["chunk"]
    torch.testing.assert_close(together[1:2, :2], alone, rtol=1e-5, atol=1e-6)


def test_packed_and_masked_bilstm_are_the_same_network() -> None:
    packed = build("bilstm", HEADS, packed=True).eval()
    masked = build("bilstm", HEADS, packed=False).eval()
    masked.load_state_dict(packed.state_dict())
    x = batch([5, 2, 7, 1])
    with torch.no_grad():
        a, b = packed(x), masked(x)
    for task in a:
        torch.testing.assert_close(a[task], b[task], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_padding_gives_exactly_zero_loss_and_gradient(name: str) -> None:
    net = build(name, HEADS)
    net.train(False)
    x = batch([4, 2], width=6)
    y = torch.full((2, 6), float("nan"))
    y[0, :4] = torch.tensor([0.0, 1, 2, 1])
    y[1, :2] = torch.tensor([2.0, 0])
    out = net(x)
    out["pos"].retain_grad()
    tasks = {"pos": TaskSpec(type="tag")}
    loss = task_losses(tasks, {"pos": out["pos"]}, {"pos": y})[0]
    # the mean cross-entropy of the 6 real tokens, computed from them alone
    real = ~torch.isnan(y)
    expected = torch.nn.functional.cross_entropy(out["pos"][real], y[real].long())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert out["pos"].grad is not None
    assert (out["pos"].grad[~real] == 0).all() and (out["pos"].grad[real] != 0).any()
    # padding word indices are never looked up by the loss: the padding row gets no gradient
    grad = net.inputs.words.weight.grad
    assert grad is not None and (grad[0] == 0).all()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_task_at_layer_1_gets_no_gradient_from_the_layers_above(name: str) -> None:
    net = build(name, HEADS)
    x = batch([4, 3])
    out = net(x, ["pos"])
    assert set(out) == {"pos"}
    out["pos"].sum().backward()
    first = [p for p in net.encoder[0].parameters()]
    above = [p for p in net.encoder[1].parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in first)
    assert all(p.grad is None for p in above)
    assert all(p.grad is None for p in net.towers["chunk"].parameters())


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_a_layer_deeper_than_the_encoder_is_refused(name: str) -> None:
    params = MODELS[name].params.model_validate({**SMALL[name], "layers": 2})
    with pytest.raises(
        ValueError, match=r"task 'pos': layer 3 is deeper than the encoder, which has 2"
    ):
        check_layers(params, [Head("pos", "tag", layer=3)])


def test_inputs_from_is_per_token_and_detached_by_default() -> None:
    net = build("bilstm", HEADS)
    out = net(batch([3, 2]), ["chunk"])
    assert set(out) == {"pos", "chunk"}
    out["chunk"].sum().backward()
    assert all(p.grad is None for p in net.towers["pos"].parameters())
    attached = build(
        "bilstm", [HEADS[0], Head("chunk", "tag", out_dim=3, inputs_from=("pos",), detach=False)]
    )
    attached(batch([3, 2]), ["chunk"])["chunk"].sum().backward()
    assert all(p.grad is not None for p in attached.towers["pos"].parameters())
