"""Shared and Task-specific EMbeddings (STEM-Net).

Su, Wang, Zhang, Jiang, Ma, Cheng, Gai, Zhou (Kuaishou), "STEM: Unleashing the Power of
Embeddings for Multi-task Recommendation", AAAI 2024. Every feature has one shared embedding
and one embedding per task. Task k's experts read task k's embeddings, the shared experts the
shared ones; task k's gate (on the sum of its and the shared embeddings) mixes every expert,
but with the paper's "All Forward Task-specific Backward" rule: the other tasks' experts enter
task k's mixture under stop-gradient, so task k's loss updates only its own and the shared
embeddings and experts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.data.encoded import batch_lists
from polytask.models._levels import ExpertLevel, last_layer, level_groups, stack_levels
from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import ExpertBank, FeatureInput, mix


class STEMParams(TowerParams):
    num_levels: int = Field(default=1, ge=1)
    num_task_experts: int = Field(default=1, ge=1)
    num_shared_experts: int = Field(default=1, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    gate_temperature: float = Field(default=1.0, gt=0)


class STEM(MultiTaskNet):
    """STEM-Net (Su et al., AAAI 2024).

    ``embed`` returns the shared embeddings (the model's ``inputs``) and then one embedding
    of every feature per task (``task_inputs[k]``, the same columns and widths), side by
    side. Per level, every expert runs in one batched op: task k's experts read task k's
    input (level 1: its embeddings; later: its previous mixture) and the shared experts the
    shared one. Task k's gate, ``softmax(W_k (h_k + h_s) / T)``, weighs every expert of the
    level; the other tasks' experts enter that mixture under stop-gradient (forward: all of
    them; backward: only task k's own and the shared experts). At inner levels the shared
    gate, ``softmax(W_s h_s / T)``, mixes every expert too, the task experts under
    stop-gradient, so the rule holds at every depth: **task k's embeddings and experts get
    gradient from task k's loss alone**; the shared ones from every task.

    Parameter groups: ``input`` (shared embeddings), ``input.<task>`` (that task's
    embeddings), ``experts`` (shared experts), ``experts.<task>``, ``gates`` (inner levels'
    shared gates; absent with one level), ``gates.<task>``, ``towers.<task>``.

    Gate weights: ``<task>`` (last level), ``level<l>.<task>``, ``level<l>.shared``; each
    over every expert of the level, task experts in task order then the shared ones.
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: STEMParams) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        self.task_inputs = nn.ModuleList(inputs.like() for _ in self.heads)
        self.input_dim = inputs.out_dim
        self.num_task_experts = params.num_task_experts
        self.num_shared_experts = params.num_shared_experts
        nt, num_tasks = params.num_task_experts, len(self.heads)
        every = num_tasks * nt + params.num_shared_experts  # each gate weighs every expert
        make = functools.partial(ExpertLevel, task_gate_experts=every)
        self.levels = stack_levels(make, inputs.out_dim, self.heads, params)
        # Row k: 1 on the experts whose gradient task k's mixture keeps (its own and the
        # shared ones); last row: the shared unit's (the shared ones).
        keep = torch.zeros(num_tasks + 1, every)
        keep[:, num_tasks * nt :] = 1
        for k in range(num_tasks):
            keep[k, k * nt : (k + 1) * nt] = 1
        self.register_buffer("_keep", keep, persistent=False)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        cat, num, lists = batch["categorical"], batch["numeric"], batch_lists(batch)
        return torch.cat(
            [self.inputs(cat, num, lists), *(t(cat, num, lists) for t in self.task_inputs)], 1
        )

    _keep: Tensor

    def _fuse(self, g: Tensor, experts: Tensor, units: Sequence[int | None]) -> Tensor:
        """``sum_j g_j E_j`` per unit, with the experts outside the unit's mask under
        stop-gradient: the forward is every expert's, the backward the unit's own."""
        rows = [len(self.heads) if k is None else k for k in units]
        keep = self._keep[rows] if len(rows) > 1 else self._keep[rows[0]].unsqueeze(0)
        return mix(g * keep, experts) + mix(g * (1 - keep), experts.detach())

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        num_tasks = len(self.heads)
        every = list(range(num_tasks))
        last = len(self.levels) - 1
        parts = x.split(self.input_dim, dim=1)  # shared, then one per task
        h_shared, h_task = parts[0], {k: parts[1 + k] for k in every}
        gates: dict[str, Tensor] = {}
        for i, level in enumerate(self.levels):
            assert isinstance(level, ExpertLevel)
            experts = level.experts(h_task, h_shared, every)
            units = list(active) if i == last else every
            g = torch.cat([level.task_gates(h_task[k] + h_shared, [k]) for k in units], dim=1)
            for j, k in enumerate(units):
                name = self.task_names[k]
                gates[name if i == last else f"level{i + 1}.{name}"] = g[:, j]
            fused = self._fuse(g, experts, units)
            if level.shared_gate is not None:
                gs = level.shared_gate(h_shared)
                gates[f"level{i + 1}.shared"] = gs[:, 0]
                h_shared = self._fuse(gs, experts, [None])[0]
            h_task = {k: fused[j] for j, k in enumerate(units)}
        return Representation(per_task=[h_task[k] for k in active], gates=gates)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            f"input.{n}": list(t.parameters())
            for n, t in zip(self.task_names, self.task_inputs, strict=True)
        }
        return groups | level_groups(cast(Sequence[ExpertLevel], self.levels), self.task_names)

    def last_shared_layer(self) -> list[nn.Parameter]:
        return last_layer(cast(ExpertBank, self.levels[-1].shared_experts))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, levels={len(self.levels)}, embeddings per feature="
            f"{len(self.heads) + 1} (shared + one per task), experts per task="
            f"{self.num_task_experts}, shared experts={self.num_shared_experts}"
        )
