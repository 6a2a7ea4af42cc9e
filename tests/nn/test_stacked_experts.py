"""`ExpertBank.stacked`: several banks with their own parameters run as one batched op."""

from __future__ import annotations

import torch

from polytask.nn import ExpertBank


def test_stacked_banks_equal_each_expert_run_alone() -> None:
    banks = [ExpertBank(in_dim=4, num_experts=n, units=[5, 3]) for n in (2, 1, 3)]
    x = torch.randn(7, 4)

    def alone(bank: ExpertBank, e: int, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for w, b in zip(bank.weights, bank.biases, strict=True):
            h = torch.relu(h @ w[e] + b[e, 0])
        return h

    expected = torch.stack([alone(b, e, x) for b in banks for e in range(b.num_experts)])
    torch.testing.assert_close(ExpertBank.stacked(banks, x), expected)
    per_expert = torch.randn(6, 7, 4)
    expected = torch.stack(
        [
            alone(b, e, per_expert[j])
            for j, (b, e) in enumerate((b, e) for b in banks for e in range(b.num_experts))
        ]
    )
    torch.testing.assert_close(ExpertBank.stacked(banks, per_expert), expected)
