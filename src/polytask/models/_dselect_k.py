"""DSelect-k: a differentiable gate that selects at most k experts per task.

Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong, Chi, "DSelect-k: Differentiable
Selection in the Mixture of Experts with Applications to Multi-Task Learning", NeurIPS 2021.
With ``n`` experts and ``m = ceil(log2 n)``, each of k single-expert selectors reads ``m``
logits ``z`` through the smooth step ``S(t)`` (0 below ``-gamma/2``, 1 above ``gamma/2``,
``-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2`` between) and gives expert i the weight
``r(z)_i = prod_j (S(z_j) if bit j of i is 1 else 1 - S(z_j))``; the gate is
``q = sum_{s=1..k} softmax(w)_s r(z^(s))``. Once every ``S`` is 0 or 1, each selector picks
one expert: at most k non-zero weights. An entropy penalty on each ``r(z^(s))`` pushes it
there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams, experts_with
from polytask.nn import FeatureInput, concat, mix

_EPS = 1e-6  # inside the log of the entropy, as in the authors' code


class DSelectKParams(TowerParams):
    num_experts: int = Field(default=8, ge=2)
    k: int = Field(default=2, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    gamma: float = Field(default=1.0, gt=0)
    entropy_weight: float = Field(default=0.05, ge=0)
    per_example: bool = True

    @model_validator(mode="after")
    def _k_fits(self) -> DSelectKParams:
        if self.k > self.num_experts:
            raise ValueError(
                f"k: expected at most num_experts ({self.num_experts}), found {self.k}"
            )
        return self


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """The cubic smooth step of DSelect-k: 0 for ``t <= -gamma/2``, 1 for ``t >= gamma/2``,
    ``-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2`` between (continuously differentiable)."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, 0.0, torch.where(t >= gamma / 2, 1.0, cubic))


class DSelectGates(nn.Module):
    """One example-conditioned DSelect-k gate per task: ``[B, in] -> [B, G, n]``.

    Gate g's parameters are a weight ``[in, k * m + k]`` and a bias (the k selectors' logits
    ``z`` and the selector weights' logits ``w`` are ``x W + b``), its own tensors as in
    `Gates`, so the gates of inactive tasks stay out of the graph; the gates asked for run as
    one matmul. Without ``per_example`` (the paper's task-only conditioning) there is no
    weight: the logits are ``b``, the same for every row.
    Initialisation as in the authors' code: ``z``'s weights and bias uniform in
    ``+-gamma/100`` (every ``S`` starts near 1/2), ``w``'s in ``+-0.05``.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        num_gates: int,
        num_experts: int,
        k: int,
        gamma: float,
        per_example: bool = True,
    ) -> None:
        super().__init__()
        self.num_experts, self.k, self.gamma = num_experts, k, gamma
        self.bits = max(1, math.ceil(math.log2(num_experts)))
        codes = [
            [(i >> (self.bits - 1 - j)) & 1 for j in range(self.bits)] for i in range(num_experts)
        ]
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.bool), persistent=False)
        width = k * self.bits + k

        def init(*shape: int) -> Tensor:
            t = torch.empty(*shape)
            nn.init.uniform_(t[..., : k * self.bits], -gamma / 100, gamma / 100)
            nn.init.uniform_(t[..., k * self.bits :], -0.05, 0.05)
            return t

        self.per_example = per_example
        self.weight = nn.ParameterList(
            nn.Parameter(init(in_dim, width)) for _ in range(num_gates if per_example else 0)
        )
        self.bias = nn.ParameterList(nn.Parameter(init(width)) for _ in range(num_gates))

    def forward(self, x: Tensor, which: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The gate weights ``q [B, G, n]`` and the selectors' outputs ``r [B, G, k, n]`` of
        the gates ``which``."""
        b = concat([self.bias[i] for i in which])
        if not self.per_example:
            out = b.expand(x.shape[0], -1).view(x.shape[0], len(which), -1)
        else:
            w = concat([self.weight[i] for i in which], dim=1)
            out = torch.addmm(b, x, w).view(x.shape[0], len(which), -1)
        z = out[..., : self.k * self.bits].reshape(x.shape[0], len(which), self.k, 1, self.bits)
        s = smooth_step(z, self.gamma)
        codes = cast(Tensor, self.codes)  # [n, m]
        selectors = torch.where(codes, s, 1.0 - s).prod(-1)  # [B, G, k, n]
        weights = torch.softmax(out[..., self.k * self.bits :], dim=-1)  # [B, G, k]
        return (weights.unsqueeze(-1) * selectors).sum(2), selectors

    def regulariser(self, selectors: Tensor) -> Tensor:
        """Per gate ``[G]``: the mean over rows of the selectors' summed entropy and, when
        ``n`` is not a power of 2, of ``1 / sum_i r_i`` per selector (as in the authors' code:
        it keeps a selector from putting its weight on the codes past the last expert)."""
        entropy = -(selectors * torch.log(selectors + _EPS)).sum((-2, -1))  # [B, G]
        if self.num_experts != 2**self.bits:
            entropy = entropy + (1.0 / selectors.sum(-1).clamp_min(_EPS)).sum(-1)
        return entropy.mean(0)


class DSelectK(MultiTaskNet):
    """Multi-gate mixture of experts with DSelect-k gates (Hazimeh et al., NeurIPS 2021).

    MMoE's body with each task's softmax gate replaced by a DSelect-k gate over
    ``num_experts`` shared experts (``expert_units``; one batched op): task t's tower reads
    ``sum_i q_t(x)_i f_i(x)`` with at most ``k`` non-zero ``q_t(x)_i`` once the gate's smooth
    steps are saturated. ``per_example`` (default) conditions the gate on the input, as
    MMoE's gates are; rows whose logits sit inside the smooth step's band still mix more
    than ``k`` experts, which are few after training. ``per_example: false`` is the paper's
    task-only gate: one selection per task, exactly ``k`` experts or fewer once converged.
    ``gamma`` (1.0, the authors' default) is the width of the smooth step's non-constant
    region. ``entropy_weight`` times the mean over rows of the selectors'
    entropy is added to task t's loss (`Representation.losses`); the authors add a
    scheduled multiple of the sum over the batch, which the mean makes independent of the
    batch size. Defaults not from the paper (it tunes them per data set): 8 experts of
    [128, 64] as polytask's MMoE, ``k = 2``, ``entropy_weight = 0.05``.

    Parameter groups: ``input``, ``experts``, ``gates`` (every task's gate), ``towers.<task>``.
    Gate weights: ``<task>``, the weights ``q_t`` over the experts.
    """

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], params: DSelectKParams
    ) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        self.entropy_weight = params.entropy_weight
        self.experts = experts_with(params, inputs.out_dim, params.num_experts, params.expert_units)
        self.gates = DSelectGates(
            in_dim=inputs.out_dim,
            num_gates=len(self.heads),
            num_experts=params.num_experts,
            k=params.k,
            gamma=params.gamma,
            per_example=params.per_example,
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        q, selectors = self.gates(x, list(active))
        names = [self.task_names[k] for k in active]
        losses: dict[str, Tensor] = {}
        if self.training and self.entropy_weight > 0:
            reg = self.entropy_weight * self.gates.regulariser(selectors)
            losses = {name: reg[j] for j, name in enumerate(names)}
        return Representation(
            per_task=mix(q, self.experts(x)),
            gates={name: q[:, j] for j, name in enumerate(names)},
            losses=losses,
        )

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"experts": list(self.experts.parameters()), "gates": list(self.gates.parameters())}

    def last_shared_layer(self) -> list[nn.Parameter]:
        return [self.experts.weights[-1], self.experts.biases[-1]]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.gates.k}, experts={self.gates.num_experts}"
