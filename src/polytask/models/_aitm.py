"""Adaptive Information Transfer Multi-task (AITM) for tasks in a sequence (a conversion funnel).

Xi, Liu, Zhang, Wang, He, Ji, Yang, Luo, "Modeling the Sequential Dependence among Audience
Multi-step Conversions with Multi-task Learning in Targeted Display Advertising", KDD 2021.
Task t's encoder gives ``q_t``; for t >= 2 a transfer unit carries task t-1's representation,
``p_{t-1} = g_{t-1}(z_{t-1})``, and an attention unit (AIT) mixes the two:
``z_t = sum_{u in {p_{t-1}, q_t}} w_u h1(u)``, ``w_u = softmax_u(<h2(u), h3(u)> / sqrt(D))``
(``z_1 = q_1``); ``y_t`` is task t's output on ``z_t``. The behavioural expectation
calibrator adds ``alpha * mean(max(y_t - y_{t-1}, 0))`` to the loss: a later step of the
funnel should not be more likely than the one before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams, experts_with
from polytask.nn import ExpertBank, FeatureInput


class AITMParams(TowerParams):
    chain: list[str] | None = None
    """The tasks in funnel order; None: every task, in the order declared."""
    encoder_units: list[int] = Field(default_factory=lambda: [128, 64, 32], min_length=1)
    calibrator_weight: float = Field(default=0.6, ge=0)
    tower_units: list[int] = Field(default_factory=list)


def check_aitm_heads(params: AITMParams, heads: Sequence[Head]) -> None:
    """Raise ValueError unless ``chain`` names tasks, each once."""
    if params.chain is None:
        return
    names = [h.name for h in heads]
    unknown = [t for t in params.chain if t not in names]
    if unknown:
        raise ValueError(
            f"chain: expected task names, found {unknown}, not among the tasks {sorted(names)}"
        )
    twice = sorted({t for t in params.chain if params.chain.count(t) > 1})
    if twice:
        raise ValueError(f"chain: expected each task at most once, found {twice} more than once")


class _Transfer(nn.Module):
    """Task t's transfer unit ``g_{t-1}`` (linear + ReLU) and its AIT attention: ``h1, h2, h3``
    as one ``D -> 3D`` linear map, applied to ``p_{t-1}`` and ``q_t`` in one call."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.info = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.attention = nn.Linear(dim, 3 * dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, previous: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        """``z_{t-1}, q_t [B, D]`` -> ``z_t [B, D]`` and the weights ``[B, 2]`` on
        ``(p_{t-1}, q_t)``."""
        units = torch.stack([self.info(previous), own], dim=1)  # [B, 2, D]
        value, key, query = self.attention(units).chunk(3, dim=-1)
        weights = torch.softmax((key * query).sum(-1) * self.scale, dim=1)  # [B, 2]
        return (weights.unsqueeze(-1) * value).sum(1), weights


class AITM(MultiTaskNet):
    """Adaptive Information Transfer Multi-task (Xi et al., KDD 2021).

    Every task has an encoder MLP (``encoder_units``, the paper's per-task "tower" of
    [128, 64, 32]); all encoders a call needs run as one batched op (`ExpertBank.stacked`).
    Along ``chain`` (default: the tasks in declared order) task t's representation is the AIT
    mixture of its own encoding and task t-1's representation through the transfer unit, the
    only path from task t-1 into task t; tasks outside the chain use their encoding alone.
    The tower (``tower_units``, default none: a linear output as in the paper) reads it.

    The calibrator (``calibrator_weight``, 0.6 as in the paper; 0 turns it off) adds
    ``calibrator_weight * mean(max(p_t - p_{t-1}, 0))`` to task t's loss for consecutive
    binary tasks of the chain, over every row (it needs no label). It needs both tasks'
    outputs, so it applies in joint steps; an alternate step on task t computes task t-1's
    representation (its encoder and transfer units get task t's gradient, as in joint
    training) but not task t-1's tower, which it leaves untouched.

    Parameter groups: ``input``; ``encoders.<task>``; ``transfer.<task>`` (the transfer and
    attention units into task t, absent for the first task of the chain and tasks outside
    it); ``towers.<task>``. Gate weights (`gate_weights`, `gate_statistics`): per task after
    the first of the chain, the attention weights on (transferred, own).
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: AITMParams) -> None:
        check_aitm_heads(params, heads)
        dim = params.encoder_units[-1]
        super().__init__(inputs=inputs, heads=heads, body_dim=dim, params=params)
        self.chain = list(params.chain) if params.chain is not None else list(self.task_names)
        self.calibrator_weight = params.calibrator_weight
        self.encoders = nn.ModuleDict(
            {
                name: experts_with(params, inputs.out_dim, 1, params.encoder_units)
                for name in self.task_names
            }
        )
        self.transfer = nn.ModuleDict({name: _Transfer(dim) for name in self.chain[1:]})
        self._position = {name: i for i, name in enumerate(self.chain)}

    def _needed(self, active: Sequence[int]) -> list[str]:
        """The active tasks plus the chain's tasks before them, in task order."""
        needed = {self.task_names[k] for k in active}
        last = max((self._position[n] for n in needed if n in self._position), default=-1)
        needed.update(self.chain[: last + 1])
        return [n for n in self.task_names if n in needed]

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        needed = self._needed(active)
        banks = [self.encoders[n] for n in needed]
        encoded = ExpertBank.stacked([b for b in banks if isinstance(b, ExpertBank)], x)
        z = {name: encoded[j] for j, name in enumerate(needed)}
        gates: dict[str, Tensor] = {}
        for prev, name in zip(self.chain, self.chain[1:], strict=False):
            if name not in z:
                break
            z[name], gates[name] = self.transfer[name](z[prev], z[name])
        return Representation(per_task=[z[self.task_names[k]] for k in active], gates=gates)

    def auxiliary_losses(
        self, outputs: dict[str, Tensor], labels: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        if self.calibrator_weight == 0:
            return {}
        terms: dict[str, Tensor] = {}
        for prev, name in zip(self.chain, self.chain[1:], strict=False):
            binary = self.head_by_name[prev].type == self.head_by_name[name].type == "binary"
            if binary and prev in outputs and name in outputs:
                excess = torch.sigmoid(outputs[name]) - torch.sigmoid(outputs[prev])
                terms[name] = self.calibrator_weight * torch.relu(excess).mean()
        return terms

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {f"encoders.{n}": list(self.encoders[n].parameters()) for n in self.task_names}
        transfer = {f"transfer.{n}": list(self.transfer[n].parameters()) for n in self.chain[1:]}
        return groups | transfer

    def last_shared_layer(self) -> list[nn.Parameter]:
        """AITM shares only the input: the embeddings and the numeric projection."""
        return list(self.inputs.parameters())

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, chain={' -> '.join(self.chain)}, "
            f"calibrator_weight={self.calibrator_weight}"
        )
