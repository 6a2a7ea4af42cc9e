"""Mixture-of-experts with one gate (MoE / OMoE) and with one gate per task (MMoE).

Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018: ``y_k = h_k(sum_i g_k(x)_i f_i(x))`` with
``g_k(x) = softmax(W_gk x / T)``; MoE uses a single gate ``g`` for every task. The temperature
``T`` (``gate_temperature``) is polytask's addition: above 1 it spreads the mixture.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams, experts_with
from polytask.nn import FeatureInput, Gates, mix


class MoEParams(TowerParams):
    num_experts: int = Field(default=8, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    gate_temperature: float = Field(default=1.0, gt=0)


class GatedExperts(MultiTaskNet):
    """A shared bank of experts mixed by softmax gates: one gate per task (MMoE), or one gate
    shared by every task (``per_task=False``, the MMoE paper's one-gate MoE baseline)."""

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], params: MoEParams, per_task: bool
    ) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        self.per_task = per_task
        self.experts = experts_with(params, inputs.out_dim, params.num_experts, params.expert_units)
        self.gates = Gates(
            in_dim=inputs.out_dim,
            num_gates=len(heads) if per_task else 1,
            num_experts=params.num_experts,
            temperature=params.gate_temperature,
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        if not self.per_task:
            g = self.gates(x)
            return Representation(shared=mix(g, self.experts(x))[0], gates={"shared": g[:, 0]})
        g = self.gates(x, active)
        return Representation(
            per_task=mix(g, self.experts(x)),
            gates={self.task_names[k]: g[:, j] for j, k in enumerate(active)},
        )

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"experts": list(self.experts.parameters()), "gates": list(self.gates.parameters())}

    def last_shared_layer(self) -> list[nn.Parameter]:
        return [self.experts.weights[-1], self.experts.biases[-1]]


def moe(*, inputs: FeatureInput, heads: Sequence[Head], params: MoEParams) -> GatedExperts:
    """One gate shared by all tasks (the MMoE paper's OMoE baseline)."""
    return GatedExperts(inputs=inputs, heads=heads, params=params, per_task=False)


def mmoe(*, inputs: FeatureInput, heads: Sequence[Head], params: MoEParams) -> GatedExperts:
    """One gate per task over a shared bank of experts."""
    return GatedExperts(inputs=inputs, heads=heads, params=params, per_task=True)
