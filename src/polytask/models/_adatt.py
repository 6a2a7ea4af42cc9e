"""Adaptive Task-to-Task Fusion Network (AdaTT).

Li, Wang, Guo, Zheng, Wu, Ma, Chen, Gong, Xu, Wang, Zhao, Weissman (Meta), "AdaTT: Adaptive
Task-to-Task Fusion Network for Multitask Learning in Recommendations", KDD 2023. Each level
has task-specific experts per task and (optionally) shared experts. Task k's fusion unit
mixes **every** expert of the level, its own, the other tasks' and the shared ones, with a
softmax gate on its own input (``AllExpertGF``), and adds a learned linear combination of
its own experts (``NativeExpertLF``, the residual the reference code calls
``self_exp_res_connect``; with one expert per task and per shared unit the weights are fixed
to 1, a plain residual). At inner levels a shared fusion unit does the same for the shared
experts; each task's fusion output is that task's input at the next level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.models._levels import ExpertLevel, last_layer, level_groups, stack_levels
from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import FeatureInput, mix


class AdaTTParams(TowerParams):
    num_levels: int = Field(default=2, ge=1)
    num_task_experts: int = Field(default=2, ge=1)
    num_shared_experts: int = Field(default=1, ge=0)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    native_residual: bool = True
    gate_temperature: float = Field(default=1.0, gt=0)


class _Level(ExpertLevel):
    """An `ExpertLevel` whose gates weigh every expert, plus the native-expert weights:
    ``native[k]`` holds the weights of task k's own experts in its fusion (learned when
    ``learned_native``, else fixed ones), ``shared_native`` the shared unit's; empty without
    ``native_residual``.
    """

    def __init__(self, *, in_dim: int, num_tasks: int, params: AdaTTParams, inner: bool) -> None:
        nt, ns = params.num_task_experts, params.num_shared_experts
        super().__init__(
            in_dim=in_dim,
            num_tasks=num_tasks,
            params=params,
            inner=inner,
            task_gate_experts=num_tasks * nt + ns,
        )
        # The reference learns native weights unless every unit has exactly one expert, in
        # which case it adds the expert itself (a weight fixed at 1).
        self.learned_native = params.native_residual and (nt != 1 or ns not in (0, 1))
        self.residual = params.native_residual

        def native(num: int) -> nn.Parameter:
            bound = math.sqrt(1.0 / num)
            return nn.Parameter(torch.empty(num).uniform_(-bound, bound))

        self.native = nn.ParameterList(
            native(nt) for _ in range(num_tasks if self.learned_native else 0)
        )
        self.shared_native = nn.ParameterList(
            [native(ns)] if self.learned_native and self.shared_gate is not None else []
        )

    def native_weights(self, unit: int | None) -> Tensor | None:
        """Weights ``[E]`` over every expert of the level that a unit's fusion adds to its
        gate: its own experts' native weights, zero elsewhere. ``unit`` is a task index or
        None for the shared unit; None without ``native_residual``."""
        if not self.residual:
            return None
        num_tasks, nt, ns = len(self.task_experts), self.nt, self.ns
        total = num_tasks * nt + ns
        own = (unit * nt, nt) if unit is not None else (num_tasks * nt, ns)
        if self.learned_native:
            values = self.native[unit] if unit is not None else self.shared_native[0]
        else:
            values = torch.ones(own[1], device=self.task_gates.weight[0].device)
        parts = [values.new_zeros(own[0]), values, values.new_zeros(total - own[0] - own[1])]
        return torch.cat(parts)


class AdaTT(MultiTaskNet):
    """AdaTT (Li et al., KDD 2023), the shared-expert form (``AdaTTWSharedExps``);
    ``num_shared_experts: 0`` is AdaTT-sp.

    Per level, every expert runs in one batched op (`ExpertBank.stacked`): level 1's read
    the feature input, later levels' task experts read their task's fusion output and the
    shared experts the shared unit's. Task k's fusion is
    ``sum_j (g_k(h_k)_j + v_kj) E_j`` over all ``K * num_task_experts + num_shared_experts``
    experts, ``g_k = softmax(W_k h_k / T)`` and ``v_k`` the native weights, non-zero on task
    k's own experts only. At inner levels the shared unit fuses the same way with its own
    gate and native weights on the shared experts.

    Every task's experts feed every task's fusion, so a loss on task A reaches task B's
    experts at every level: that is AdaTT's task-to-task transfer. It does not reach B's
    last-level gate and native weights, nor B's tower.

    Parameter groups: ``input``; ``experts`` (shared experts, all levels); ``experts.<task>``;
    ``gates`` (the shared units' gates and native weights; absent without inner levels or
    shared experts); ``gates.<task>`` (task k's gates and native weights, every level);
    ``towers.<task>``.

    Gate weights: ``<task>`` for the last level's task gates, ``level<l>.<task>`` and
    ``level<l>.shared`` at inner level ``l``; each over every expert of the level, task
    experts in task order then the shared ones. They are the softmax part alone: the native
    weights are parameters, reported in the state dict.
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: AdaTTParams) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        self.num_task_experts = params.num_task_experts
        self.num_shared_experts = params.num_shared_experts
        self.levels = stack_levels(_Level, inputs.out_dim, self.heads, params)

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        every = list(range(len(self.heads)))
        last = len(self.levels) - 1
        h_task: dict[int, Tensor] = dict.fromkeys(every, x)
        h_shared = x
        gates: dict[str, Tensor] = {}
        for i, level in enumerate(self.levels):
            assert isinstance(level, _Level)
            experts = level.experts(x if i == 0 else h_task, h_shared, every)
            # Inner levels feed every task's next experts; the last only the active towers.
            units = list(active) if i == last else every
            g = level.gates(x if i == 0 else h_task, units)
            for j, k in enumerate(units):
                name = self.task_names[k]
                gates[name if i == last else f"level{i + 1}.{name}"] = g[:, j]
            weights = g
            native = [level.native_weights(k) for k in units]
            if native[0] is not None:
                weights = g + torch.stack(cast(list[Tensor], native))  # [B, G, E] + [G, E]
            fused = mix(weights, experts)  # [len(units), B, D]
            if level.shared_gate is not None:
                gs = level.shared_gate(h_shared)
                gates[f"level{i + 1}.shared"] = gs[:, 0]
                own = level.native_weights(None)
                h_shared = mix(gs if own is None else gs + own, experts)[0]
            h_task = {k: fused[j] for j, k in enumerate(units)}
        return Representation(per_task=[h_task[k] for k in active], gates=gates)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return level_groups(
            cast(Sequence[_Level], self.levels),
            self.task_names,
            shared_extra=lambda lv: list(cast(_Level, lv).shared_native),
            task_extra=lambda lv, k: (
                [cast(_Level, lv).native[k]] if cast(_Level, lv).learned_native else []
            ),
        )

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last level's shared experts' last layer; without shared experts, every
        task's last-level experts' (each task's fusion reads them all)."""
        level = self.levels[-1]
        assert isinstance(level, _Level)
        banks = [level.shared_experts] if level.shared_experts is not None else level.banks()
        return [p for b in banks for p in last_layer(b)]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, levels={len(self.levels)}, "
            f"experts per task={self.num_task_experts}, shared experts={self.num_shared_experts}"
        )
