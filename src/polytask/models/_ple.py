"""Progressive Layered Extraction (PLE) and its one-level form, Customized Gate Control (CGC).

Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations", RecSys 2020. Each level has task-specific experts
``E_k`` per task and shared experts ``E_s``; task k's gate mixes ``[E_k, E_s]``; at inner
levels a shared gate mixes every expert of the level to feed the next level's shared experts,
while task k's mixture feeds the next level's ``E_k`` (and, at the last level, task k's tower).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

from pydantic import Field
from torch import Tensor, nn

from polytask.models._levels import ExpertLevel, last_layer, level_groups, stack_levels
from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import ExpertBank, FeatureInput, mix


class CGCParams(TowerParams):
    """CGC: one level, so no ``num_levels``."""

    num_shared_experts: int = Field(default=2, ge=1)
    num_task_experts: int = Field(default=2, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    gate_temperature: float = Field(default=1.0, gt=0)


class PLEParams(CGCParams):
    num_levels: int = Field(default=2, ge=1)


class PLE(MultiTaskNet):
    """Progressive Layered Extraction (Tang et al., RecSys 2020); ``num_levels=1`` is CGC.

    ``[B, input dim]`` -> per level: every expert of the level in one batched op
    (`ExpertBank.stacked`), then task k's gate ``softmax(W_k h_k / T)`` over ``[E_k, E_s]``
    (``num_task_experts + num_shared_experts`` weights) and, at inner levels, the shared gate
    over all ``K * num_task_experts + num_shared_experts`` experts. Level 1 reads the feature
    input; later levels read the previous level's mixtures (``h_k`` for ``E_k`` and task k's
    gate, ``h_s`` for ``E_s`` and the shared gate). Every level has ``expert_units``.

    Only what the active tasks need is computed: at the last level their own experts and
    gates; at inner levels every task's experts (the shared gate mixes them all, so they
    feed every task through ``h_s``) but only the gates whose mixture a later level reads.
    With one level (CGC) a loss on task A leaves every other task's experts and gates with
    no gradient; with more, other tasks' inner-level experts do get one (they are inputs of
    A's shared path), their last-level experts and gates do not.

    Parameter groups: ``input``; ``experts`` (shared experts, all levels); ``experts.<task>``
    (that task's experts, all levels); ``gates`` (the inner levels' shared gates; absent
    with one level); ``gates.<task>`` (that task's gates, all levels); ``towers.<task>``.
    So ``experts*`` and ``gates*`` are every expert and every gate in ``group_lr``.

    Gate weights (`gate_weights`, `gate_statistics`): ``<task>`` for the last level's task
    gates, ``level<l>.<task>`` and ``level<l>.shared`` for inner level ``l`` (1-based); task
    names cannot contain a dot (they name modules), so these never clash.
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: PLEParams) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        self.num_task_experts = params.num_task_experts
        self.num_shared_experts = params.num_shared_experts
        own = params.num_task_experts + params.num_shared_experts  # a task gate's experts
        make = functools.partial(ExpertLevel, task_gate_experts=own)
        self.levels = stack_levels(make, inputs.out_dim, self.heads, params)

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        every = list(range(len(self.heads)))
        last = len(self.levels) - 1
        nt = self.num_task_experts
        h_task: dict[int, Tensor] = dict.fromkeys(every, x)
        h_shared = x
        gates: dict[str, Tensor] = {}
        for i, level in enumerate(self.levels):
            assert isinstance(level, ExpertLevel)
            # Inner levels compute every task's experts: the shared gate mixes them all.
            expert_tasks = list(active) if i == last else every
            # A task's mixture is needed by its tower (last level) or next-level experts.
            gate_tasks = list(active) if i >= last - 1 else every
            experts = level.experts(x if i == 0 else h_task, h_shared, expert_tasks)
            shared = experts[len(expert_tasks) * nt :]
            slot = {k: j for j, k in enumerate(expert_tasks)}
            # Task gates, [B, len(gate_tasks), nt + ns]: at level 1 every task reads x, so
            # one call computes them all; later levels read each task's own mixture.
            g = level.gates(x if i == 0 else h_task, gate_tasks)
            # Task k mixes [E_k, E_s]: its own and the shared experts are mixed apart (no
            # concatenation of the experts per task), the shared part for every task at once.
            from_shared = mix(g[..., nt:], shared)  # [len(gate_tasks), B, D]
            mixed: dict[int, Tensor] = {}
            for j, k in enumerate(gate_tasks):
                own = experts[slot[k] * nt : (slot[k] + 1) * nt]
                mixed[k] = mix(g[:, j : j + 1, :nt], own)[0] + from_shared[j]
                name = self.task_names[k]
                gates[name if i == last else f"level{i + 1}.{name}"] = g[:, j]
            if level.shared_gate is not None:
                g = level.shared_gate(h_shared)  # [B, 1, K * nt + ns]; experts holds them all
                h_shared = mix(g, experts)[0]
                gates[f"level{i + 1}.shared"] = g[:, 0]
            h_task = mixed
        return Representation(per_task=[h_task[k] for k in active], gates=gates)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return level_groups(cast(Sequence[ExpertLevel], self.levels), self.task_names)

    def last_shared_layer(self) -> list[nn.Parameter]:
        return last_layer(cast(ExpertBank, self.levels[-1].shared_experts))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, levels={len(self.levels)}, "
            f"experts per task={self.num_task_experts}, shared experts={self.num_shared_experts}"
        )


def cgc(*, inputs: FeatureInput, heads: Sequence[Head], params: CGCParams) -> PLE:
    """Customized Gate Control (Tang et al., RecSys 2020, sec. 4.2): PLE with one level."""
    return PLE(inputs=inputs, heads=heads, params=PLEParams(**params.model_dump(), num_levels=1))
