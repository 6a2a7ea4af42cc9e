"""The expert level that PLE/CGC, STEM and AdaTT stack: each task's experts, the shared
experts, one gate per task and, at inner levels, a shared gate."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from polytask.models.base import Head
from polytask.nn import Activation, ExpertBank, Gates


class LevelParams(Protocol):
    """What the levels read from a model's parameters (PLEParams, STEMParams, AdaTTParams)."""

    num_levels: int
    num_task_experts: int
    num_shared_experts: int
    expert_units: list[int]
    gate_temperature: float
    activation: Activation
    dropout: float


class ExpertLevel(nn.Module):
    """``task_experts[k]`` (``num_task_experts`` each) and ``task_gates.weight[k]`` belong to
    task k; ``shared_experts`` is None without shared experts. Task gates weigh
    ``task_gate_experts`` experts (PLE: the task's own and the shared ones; STEM, AdaTT:
    every expert of the level); the shared gate, at inner levels with shared experts, weighs
    every expert."""

    def __init__(
        self,
        *,
        in_dim: int,
        num_tasks: int,
        params: LevelParams,
        inner: bool,
        task_gate_experts: int,
    ) -> None:
        super().__init__()
        nt, ns = self.nt, self.ns = params.num_task_experts, params.num_shared_experts

        bank = functools.partial(
            ExpertBank,
            in_dim=in_dim,
            units=params.expert_units,
            activation=params.activation,
            dropout=params.dropout,
        )
        gates = functools.partial(Gates, in_dim=in_dim, temperature=params.gate_temperature)
        self.task_experts = nn.ModuleList(bank(num_experts=nt) for _ in range(num_tasks))
        self.shared_experts = bank(num_experts=ns) if ns else None
        self.task_gates = gates(num_gates=num_tasks, num_experts=task_gate_experts)
        shared = num_tasks * nt + ns  # the shared gate weighs every expert
        self.shared_gate = gates(num_gates=1, num_experts=shared) if inner and ns else None

    def banks(self, tasks: Sequence[int] | None = None) -> list[ExpertBank]:
        """The expert banks of ``tasks`` (default all, in task order), then the shared one:
        the order of the stacked op."""
        chosen = range(len(self.task_experts)) if tasks is None else tasks
        banks = [cast(ExpertBank, self.task_experts[k]) for k in chosen]
        return banks + ([self.shared_experts] if self.shared_experts is not None else [])

    def experts(
        self, h: Tensor | Mapping[int, Tensor], h_shared: Tensor, tasks: Sequence[int]
    ) -> Tensor:
        """The experts of ``tasks``, then the shared ones, in one batched op
        (`ExpertBank.stacked`): every expert reads ``h`` when it is one tensor, else task k's
        read ``h[k]`` and the shared ones ``h_shared``."""
        if isinstance(h, Tensor):
            return ExpertBank.stacked(self.banks(tasks), h)
        per_expert = [h[k].expand(self.nt, -1, -1) for k in tasks]
        if self.ns:
            per_expert.append(h_shared.expand(self.ns, -1, -1))
        return ExpertBank.stacked(self.banks(tasks), torch.cat(per_expert))

    def gates(self, h: Tensor | Mapping[int, Tensor], tasks: Sequence[int]) -> Tensor:
        """The task gates of ``tasks``, ``[B, len(tasks), E]``: one call when every task
        reads ``h``, else task k's gate on ``h[k]``."""
        if isinstance(h, Tensor):
            return self.task_gates(h, tasks)
        return torch.cat([self.task_gates(h[k], [k]) for k in tasks], dim=1)


def stack_levels(
    make: Callable[..., ExpertLevel], in_dim: int, heads: Sequence[Head], params: LevelParams
) -> nn.ModuleList:
    """``params.num_levels`` levels: the first reads ``in_dim`` features, the others the
    previous level's mixtures (``expert_units[-1]``)."""
    return nn.ModuleList(
        make(
            in_dim=in_dim if i == 0 else params.expert_units[-1],
            num_tasks=len(heads),
            params=params,
            inner=i < params.num_levels - 1,
        )
        for i in range(params.num_levels)
    )


def level_groups(
    levels: Sequence[ExpertLevel],
    task_names: Sequence[str],
    shared_extra: Callable[[ExpertLevel], list[nn.Parameter]] = lambda lv: [],
    task_extra: Callable[[ExpertLevel, int], list[nn.Parameter]] = lambda lv, k: [],
) -> dict[str, list[nn.Parameter]]:
    """``experts`` (shared experts, every level), ``experts.<task>``, ``gates`` (the shared
    gates, with ``shared_extra``), ``gates.<task>`` (task k's gate rows, with
    ``task_extra``)."""
    groups: dict[str, list[nn.Parameter]] = {
        "experts": [p for lv in levels if lv.shared_experts for p in lv.shared_experts.parameters()]
    }
    for k, name in enumerate(task_names):
        groups[f"experts.{name}"] = [p for lv in levels for p in lv.task_experts[k].parameters()]
    groups["gates"] = [
        p
        for lv in levels
        if lv.shared_gate is not None
        for p in [*lv.shared_gate.parameters(), *shared_extra(lv)]
    ]
    for k, name in enumerate(task_names):
        groups[f"gates.{name}"] = [
            p
            for lv in levels
            for p in (lv.task_gates.weight[k], lv.task_gates.bias[k], *task_extra(lv, k))
        ]
    return groups


def last_layer(bank: ExpertBank) -> list[nn.Parameter]:
    return [bank.weights[-1], bank.biases[-1]]
