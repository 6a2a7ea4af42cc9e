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


def test_batch_norm_banks_stacked_equal_batch_norm_1d_per_expert() -> None:
    torch.manual_seed(0)
    banks = [
        ExpertBank(in_dim=5, num_experts=n, units=[4, 3], activation="silu", norm="batch")
        for n in (2, 3)
    ]
    x = torch.randn(16, 5)
    references = []
    for bank in banks:
        for e in range(bank.num_experts):
            norms = [torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(3)]
            references.append((bank, e, norms))

    def reference(bank: ExpertBank, e: int, norms: list[torch.nn.BatchNorm1d]) -> torch.Tensor:
        h = x
        for w, b, norm in zip(bank.weights, bank.biases, norms, strict=True):
            h = torch.nn.functional.silu(norm(h @ w[e] + b[e, 0]))
        return h

    for _ in range(2):  # two training steps: outputs and running statistics as BatchNorm1d
        out = ExpertBank.stacked(banks, x)
        expected = torch.stack([reference(*r) for r in references])
        torch.testing.assert_close(out, expected)
    for bank, e, norms in references:
        for layer, norm in enumerate(norms):
            torch.testing.assert_close(
                getattr(bank, f"running_mean{layer}")[e, 0], norm.running_mean
            )
            torch.testing.assert_close(getattr(bank, f"running_var{layer}")[e, 0], norm.running_var)
    # A one-row training batch, like evaluation, uses the running statistics, unchanged.
    before = [b.running_mean0.clone() for b in banks]
    one = ExpertBank.stacked(banks, x[:1])
    for b in banks:
        b.eval()
    torch.testing.assert_close(one, ExpertBank.stacked(banks, x[:1]))
    assert all(torch.equal(b.running_mean0, m) for b, m in zip(banks, before, strict=True))
