"""FeatureInput: grouped embedding tables give each column its own rows."""

from __future__ import annotations

import torch

from polytask.nn import FeatureInput


def test_lookup_matches_per_column_embeddings_and_is_deterministic() -> None:
    torch.manual_seed(0)
    f = FeatureInput(
        cardinalities=[3, 4, 5], embedding_dims=[2, 3, 2], numeric_width=2, numeric_dim=2
    )
    cat = torch.tensor([[0, 1, 2], [2, 3, 4], [1, 0, 0]])
    num = torch.randn(3, 2)
    out = f(cat, num)
    dim2, dim3 = f.embeddings[0].weight, f.embeddings[1].weight  # columns (0, 2) and (1,)
    want = torch.cat([dim2[cat[:, 0]], dim2[cat[:, 2] + 3], dim3[cat[:, 1]], f.numeric(num)], dim=1)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert f(cat[:0], num[:0]).shape == (0, 9)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # determinism with a parallel backward; restored after
    try:
        idx = torch.randint(0, 3, (4096, 3))
        grads = []
        for _ in range(5):
            f.zero_grad()
            f(idx, torch.zeros(4096, 2)).pow(2).sum().backward()
            grads.append(f.embeddings[0].weight.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads)


def test_fields_locate_each_column_in_the_output_and_like_copies_the_shape() -> None:
    torch.manual_seed(0)
    inputs = FeatureInput(
        cardinalities=[5, 7, 4],
        embedding_dims=[4, 2, 4],
        numeric_width=3,
        numeric_dim=6,
        names=["a", "b", "c"],
    )
    cat = torch.tensor([[1, 2, 3], [4, 6, 0]])
    num = torch.randn(2, 3)
    out = inputs(cat, num)
    fields = {name: (start, width) for name, start, width in inputs.fields}
    assert sum(w for _, w in fields.values()) == inputs.out_dim == out.shape[1]
    # Each categorical field holds exactly that column's embedding row.
    for j, name in enumerate("abc"):
        start, width = fields[name]
        changed = cat.clone()
        changed[:, j] = (changed[:, j] + 1) % [5, 7, 4][j]
        diff = (inputs(changed, num) - out).abs().sum(0) > 0
        assert diff[start : start + width].all() and diff.sum() == width, name
    start, width = fields["numeric"]
    torch.testing.assert_close(out[:, start:], inputs.numeric(num))  # type: ignore[misc]
    twin = inputs.like()
    assert twin.fields == inputs.fields and twin.out_dim == inputs.out_dim
    assert not torch.equal(twin(cat, num), out)  # its own parameters
