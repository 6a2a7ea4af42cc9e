"""ExpertBank: the batched computation equals each expert's own MLP, with and without
autograd (at inference ReLU runs in place)."""

from __future__ import annotations

import pytest
import torch

from polytask.nn import ExpertBank


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("units", [[16], [32, 8]])
def test_bank_equals_one_mlp_per_expert(activation: str, units: list[int]) -> None:
    torch.manual_seed(0)
    bank = ExpertBank(in_dim=5, num_experts=3, units=units, activation=activation)
    x = torch.randn(7, 5, requires_grad=True)
    act = torch.relu if activation == "relu" else torch.nn.functional.gelu
    want = []
    for e in range(3):
        h = x
        for w, b in zip(bank.weights, bank.biases, strict=True):
            h = act(h @ w[e] + b[e, 0])
        want.append(h)
    expected = torch.stack(want)

    out = bank(x)
    assert out.shape == (3, 7, units[-1])
    torch.testing.assert_close(out, expected)
    with torch.no_grad():
        torch.testing.assert_close(bank(x), expected)
    with torch.inference_mode():
        torch.testing.assert_close(bank(x.detach()), expected.detach())

    grads = torch.autograd.grad(out.sum(), [x, *bank.parameters()])
    want_grads = torch.autograd.grad(expected.sum(), [x, *bank.parameters()])
    for got, ref in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(got, ref)
    assert bank(x[:0]).shape == (3, 0, units[-1])
