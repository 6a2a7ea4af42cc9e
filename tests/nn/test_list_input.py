"""List columns in `FeatureInput`: pooling against closed forms, DIN target attention, and
one table shared by a sequence and its candidate column."""

from __future__ import annotations

import pytest
import torch

from polytask.nn import FeatureInput, ListInput, TargetAttention

# Hand-made rows of a 6-row table (index 0 is the padding): a full row, a short one, an
# empty one.
ROWS = torch.tensor([[2, 3, 5], [4, 0, 0], [0, 0, 0]])


def make(pooling: str, **kw) -> FeatureInput:
    torch.manual_seed(0)
    return FeatureInput(
        cardinalities=[6],
        embedding_dims=[3],
        numeric_width=0,
        numeric_dim=1,
        names=["item"],
        lists=[ListInput(name="h", dim=3, pooling=pooling, cardinality=6, **kw)],
    )


def pooled(layer: FeatureInput, rows: torch.Tensor = ROWS) -> torch.Tensor:
    cat = torch.full((rows.shape[0], 1), 2)
    out = layer(cat, torch.zeros(rows.shape[0], 0), {"h": rows})
    assert out.shape == (rows.shape[0], 6)
    return out[:, 3:]  # after the single column's 3


@pytest.mark.parametrize(
    ("pooling", "closed_form"),
    [
        ("sum", lambda w: [w[2] + w[3] + w[5], w[4], torch.zeros(3)]),
        ("mean", lambda w: [(w[2] + w[3] + w[5]) / 3, w[4], torch.zeros(3)]),
        ("max", lambda w: [torch.maximum(torch.maximum(w[2], w[3]), w[5]), w[4], torch.zeros(3)]),
    ],
)
def test_pooling_matches_closed_form(pooling, closed_form):
    layer = make(pooling)
    w = layer.list_tables["h"].weight.detach()
    torch.testing.assert_close(pooled(layer), torch.stack(closed_form(w)))


def test_max_of_negative_values_is_not_clipped_by_padding():
    layer = make("max")
    with torch.no_grad():
        layer.list_tables["h"].weight.fill_(-1.0)
    torch.testing.assert_close(pooled(layer)[1], torch.full((3,), -1.0))


def test_padding_rows_get_no_gradient_and_present_rows_do():
    layer = make("mean")
    pooled(layer).sum().backward()
    grad = layer.list_tables["h"].weight.grad
    assert grad is not None
    assert grad[0].abs().sum() == 0  # the padding row
    assert grad[1].abs().sum() == 0  # unknown: absent from these rows
    assert (grad[[2, 3, 4, 5]].abs().sum(1) > 0).all()


# ----------------------------------------------------------------------------- attention
def attention_input(softmax: bool = False) -> FeatureInput:
    torch.manual_seed(1)
    return FeatureInput(
        cardinalities=[8, 5],
        embedding_dims=[4, 4],
        numeric_width=0,
        numeric_dim=1,
        names=["item", "other"],
        lists=[
            ListInput(
                name="h",
                dim=4,
                pooling="attention",
                shared_with="item",
                query="item",
                attention_softmax=softmax,
                attention_units=(8,),
            )
        ],
    )


HIST = torch.tensor([[2, 3, 4, 0, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
CAT = torch.tensor([[3, 1], [2, 4], [6, 0]])


@pytest.mark.parametrize("softmax", [False, True])
def test_attention_weights_of_padding_are_exactly_zero(softmax):
    layer = attention_input(softmax)
    w = layer.attention_weights("h", CAT, {"h": HIST})
    assert w.shape == (3, 5)
    assert (w[HIST == 0] == 0).all()
    assert (w[HIST != 0] != 0).all()
    if softmax:
        torch.testing.assert_close(w[:2].sum(1), torch.ones(2))
    out = layer(CAT, torch.zeros(3, 0), {"h": HIST})
    assert torch.isfinite(out).all()
    assert (out[2, 8:] == 0).all()  # an empty history pools to zero


@pytest.mark.parametrize("softmax", [False, True])
def test_attention_output_is_the_weighted_sum_and_ignores_where_padding_sits(softmax):
    layer = attention_input(softmax)
    out = layer(CAT, torch.zeros(3, 0), {"h": HIST})[:, 8:]
    w = layer.attention_weights("h", CAT, {"h": HIST})
    table = layer.embeddings[0].weight.detach()  # item rows start at 0 in the dim-4 group
    expected = torch.einsum("bl,bld->bd", w, table[HIST])
    torch.testing.assert_close(out, expected)
    # the same values with the padding moved (and the values' order changed): same output
    moved = torch.tensor([[0, 4, 0, 2, 3], [0, 0, 0, 0, 5], [0, 0, 0, 0, 0]])
    torch.testing.assert_close(layer(CAT, torch.zeros(3, 0), {"h": moved})[:, 8:], out)


@pytest.mark.parametrize("units", [(3,), (5, 4)])
def test_din_unit_is_an_mlp_over_h_q_difference_and_product(units):
    torch.manual_seed(2)
    unit = TargetAttention(6, units)
    h, q = torch.randn(4, 7, 6), torch.randn(4, 6)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 3:] = False
    qe = q.unsqueeze(1).expand_as(h)
    explicit = unit.out(unit.mlp(torch.cat([h, qe, h - qe, h * qe], -1))).squeeze(-1)
    torch.testing.assert_close(unit.weights(h, q, mask), explicit * mask)
    torch.testing.assert_close(unit(h, q, mask), torch.einsum("bl,bld->bd", explicit * mask, h))


def test_shared_table_is_one_parameter_a_step_moves_both_uses():
    layer = attention_input()
    names = [n for n, _ in layer.named_parameters()]
    assert not any(n.startswith("list_tables") for n in names)
    table = layer.embeddings[0].weight
    before = table.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0)
    # candidate item 3 (row 3) and a history holding only item 5 (row 5)
    cat, hist = torch.tensor([[3, 1]]), torch.tensor([[5, 0, 0, 0, 0]])
    layer(cat, torch.zeros(1, 0), {"h": hist}).sum().backward()
    opt.step()
    moved = (table.detach() - before).abs().sum(1)
    assert moved[3] > 0  # through the candidate's lookup
    assert moved[5] > 0  # through the history's lookup, in the same tensor
    assert moved[[0, 1, 2, 4, 6, 7]].sum() == 0
