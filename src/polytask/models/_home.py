"""Hierarchy of Multi-Gate Experts (HoME).

Wang, Cao, Fu, Gai, Zhou (Kuaishou), "HoME: Hierarchy of Multi-Gate Experts for Multi-Task
Learning at Kuaishou", arXiv:2408.05430, 2024. Against expert collapse, every expert layer is
``Swish(BatchNorm(W x + b))`` (expert normalisation: all experts' outputs on one scale, no
dead ReLU units). Against expert degradation, a hierarchy: tasks are grouped into categories;
a meta level of shared and per-category experts gives each category (CGC-like gate over its
own and the shared experts) and the shared path (gate over every meta expert) a
representation; at the task level, task t's gate mixes task t's experts, its category's
experts and the shared experts. Against underfitting, feature gates ``2 sigmoid(x B A)``
(low rank) give each meta expert its own view of the input, and a self-gate adds task t's own
experts' mixture as a residual.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import ExpertBank, FeatureInput, Gates, concat, mix


class HoMEParams(TowerParams):
    task_groups: dict[str, list[str]] | None = None
    num_shared_experts: int = Field(default=2, ge=1)
    num_category_experts: int = Field(default=2, ge=1)
    num_task_experts: int = Field(default=2, ge=1)
    expert_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    expert_norm: bool = True
    feature_gate: bool = True
    feature_gate_rank: int = Field(default=8, ge=1)
    self_gate: bool = True
    gate_temperature: float = Field(default=1.0, gt=0)


def check_home_heads(params: HoMEParams, heads: Sequence[Head]) -> None:
    """Raise ValueError unless ``task_groups`` puts every task in exactly one category."""
    if params.task_groups is None:
        return
    names = [h.name for h in heads]
    seen: dict[str, str] = {}
    for category, tasks in params.task_groups.items():
        if not category or "." in category:
            raise ValueError(
                f"task_groups: expected category names without dots, found {category!r}"
            )
        if not tasks:
            raise ValueError(f"task_groups: category {category!r} has no task")
        for t in tasks:
            if t not in names:
                raise ValueError(
                    f"task_groups: category {category!r} names {t!r}, which is not a task; "
                    f"the tasks are {names}"
                )
            if t in seen:
                raise ValueError(
                    f"task_groups: task {t!r} is in two categories, {seen[t]!r} and {category!r}"
                )
            seen[t] = category
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"task_groups: task(s) {missing} are in no category")


class _FeatureGates(nn.Module):
    """One low-rank gate per expert, ``2 sigmoid(x B_e A_e)``: ``[B, in] -> [E, B, in]``,
    each expert's own scaling of the input (1 at initialisation: ``A_e = 0``)."""

    def __init__(self, in_dim: int, num_experts: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(num_experts, in_dim, rank) / in_dim**0.5)
        self.up = nn.Parameter(torch.zeros(num_experts, rank, in_dim))

    @staticmethod
    def stacked(gates: Sequence[_FeatureGates], x: Tensor) -> Tensor:
        down, up = concat([g.down for g in gates]), concat([g.up for g in gates])
        e, d, r = down.shape
        low = (x @ down.permute(1, 0, 2).reshape(d, e * r)).view(-1, e, r).transpose(0, 1)
        return x * (2.0 * torch.sigmoid(torch.bmm(low, up)))


class HoME(MultiTaskNet):
    """HoME (Wang et al., Kuaishou 2024): meta level, then task level, then towers.

    Categories are ``task_groups`` (name -> tasks; default: one category per task, named
    after it). **Meta level**, on the feature input ``x``: ``num_shared_experts`` shared and
    ``num_category_experts`` per-category experts, each reading ``x`` times its own feature
    gate (``feature_gate``); category c's gate mixes ``[E_c, E_s]`` into ``z_c``, the shared
    gate every meta expert into ``z_s``. **Task level**: task t (in category c) has
    ``num_task_experts`` experts on ``z_c``, category c has ``num_category_experts`` experts
    on ``z_c`` and there are ``num_shared_experts`` shared experts on ``z_s``; task t's gate
    on ``z_c`` mixes ``[E_t, E_c, E_s]``, and its self-gate (``self_gate``; sigmoid for one
    expert, softmax for more) adds a mixture of ``E_t`` alone. Every expert layer is
    ``Swish(BatchNorm(W x + b))`` with ``expert_norm`` (else ``activation``, no norm).
    Each level's experts run as one batched op.

    Only what the active tasks need is computed: every meta expert (the shared gate mixes
    them all) but only their categories' gates, and at the task level their own and their
    categories' experts. So a loss on task t leaves other tasks' experts and gates and other
    categories' task-level experts and meta gates without gradient; other categories' meta
    experts do get one, through the shared path.

    Parameter groups: ``input``; ``experts`` (shared experts, both levels, with their feature
    gates); ``experts.category.<c>``; ``experts.<task>``; ``gates`` (the shared meta gate);
    ``gates.category.<c>``; ``gates.<task>`` (its gate and self-gate); ``towers.<task>``.
    Gate weights: ``meta.<c>`` (over ``E_c`` then ``E_s``), ``meta.shared`` (shared experts,
    then each category's in order) and ``<task>`` (over ``E_t``, ``E_c``, ``E_s``).
    """

    def __init__(self, *, inputs: FeatureInput, heads: Sequence[Head], params: HoMEParams) -> None:
        check_home_heads(params, heads)
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.expert_units[-1], params=params
        )
        groups = params.task_groups or {h.name: [h.name] for h in heads}
        self.categories = list(groups)
        self.category_of = [
            next(i for i, c in enumerate(self.categories) if h.name in groups[c]) for h in heads
        ]
        ns, nc, nt = params.num_shared_experts, params.num_category_experts, params.num_task_experts
        self.ns, self.nc, self.nt = ns, nc, nt
        width = params.expert_units[-1]

        def bank(in_dim: int, num: int) -> ExpertBank:
            return ExpertBank(
                in_dim=in_dim,
                num_experts=num,
                units=params.expert_units,
                activation="silu" if params.expert_norm else params.activation,
                dropout=params.dropout,
                norm="batch" if params.expert_norm else "none",
            )

        gates = functools.partial(Gates, temperature=params.gate_temperature)
        d, g = inputs.out_dim, len(self.categories)
        # Meta level: bank 0 is the shared experts', bank 1 + c category c's.
        self.meta_experts = nn.ModuleList([bank(d, ns), *(bank(d, nc) for _ in range(g))])
        self.feature_gates = (
            nn.ModuleList(_FeatureGates(d, n, params.feature_gate_rank) for n in [ns, *([nc] * g)])
            if params.feature_gate
            else None
        )
        self.meta_gates = gates(in_dim=d, num_gates=g, num_experts=nc + ns)
        self.meta_shared_gate = gates(in_dim=d, num_gates=1, num_experts=ns + g * nc)
        # Task level.
        self.shared_experts = bank(width, ns)
        self.category_experts = nn.ModuleList(bank(width, nc) for _ in range(g))
        self.task_experts = nn.ModuleList(bank(width, nt) for _ in heads)
        self.task_gates = gates(in_dim=width, num_gates=len(heads), num_experts=nt + nc + ns)
        self.self_gates = (
            gates(in_dim=width, num_gates=len(heads), num_experts=nt) if params.self_gate else None
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        ns, nc, nt = self.ns, self.nc, self.nt
        cats = sorted({self.category_of[k] for k in active})
        gates: dict[str, Tensor] = {}
        # Meta level: every meta expert in one op, each on its own gated view of x.
        banks = [cast(ExpertBank, b) for b in self.meta_experts]
        views = x
        if self.feature_gates is not None:
            views = _FeatureGates.stacked(
                list(cast(Sequence[_FeatureGates], self.feature_gates)), x
            )
        meta = ExpertBank.stacked(banks, views)
        shared_meta = meta[:ns]
        gs = self.meta_shared_gate(x)
        gates["meta.shared"] = gs[:, 0]
        z_shared = mix(gs, meta)[0]
        gc = self.meta_gates(x, cats)  # [B, len(cats), nc + ns]
        z_cat: dict[int, Tensor] = {}
        for j, c in enumerate(cats):
            own = meta[ns + c * nc : ns + (c + 1) * nc]
            z_cat[c] = (
                mix(gc[:, j : j + 1, :nc], own)[0] + mix(gc[:, j : j + 1, nc:], shared_meta)[0]
            )
            gates[f"meta.{self.categories[c]}"] = gc[:, j]
        # Task level: the active tasks' experts, their categories' and the shared ones.
        level = [cast(ExpertBank, self.task_experts[k]) for k in active]
        level += [cast(ExpertBank, self.category_experts[c]) for c in cats]
        level.append(self.shared_experts)
        per_expert = [z_cat[self.category_of[k]].expand(nt, -1, -1) for k in active]
        per_expert += [z_cat[c].expand(nc, -1, -1) for c in cats]
        per_expert.append(z_shared.expand(ns, -1, -1))
        experts = ExpertBank.stacked(level, torch.cat(per_expert))
        shared = experts[len(active) * nt + len(cats) * nc :]
        out: list[Tensor] = []
        for j, k in enumerate(active):
            c = self.category_of[k]
            z = z_cat[c]
            own = experts[j * nt : (j + 1) * nt]
            slot = len(active) * nt + cats.index(c) * nc
            category = experts[slot : slot + nc]
            g = self.task_gates(z, [k])  # [B, 1, nt + nc + ns]
            gates[self.task_names[k]] = g[:, 0]
            h = mix(g[..., :nt], own)[0] + mix(g[..., nt : nt + nc], category)[0]
            h = h + mix(g[..., nt + nc :], shared)[0]
            if self.self_gates is not None:
                w = self.self_gates.weight[k]
                logits = torch.addmm(self.self_gates.bias[k], z, w).unsqueeze(1)
                sg = torch.sigmoid(logits) if nt == 1 else torch.softmax(logits, dim=-1)
                h = h + mix(sg, own)[0]
            out.append(h)
        return Representation(per_task=out, gates=gates)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        fg = list(self.feature_gates) if self.feature_gates is not None else []
        # Meta bank i, its feature gates and the task-level bank of the same experts: the
        # shared ones (i = 0), then category i - 1's.
        task_level = [self.shared_experts, *self.category_experts]
        names = ["experts", *(f"experts.category.{c}" for c in self.categories)]
        groups: dict[str, list[nn.Parameter]] = {
            name: [
                *self.meta_experts[i].parameters(),
                *(fg[i].parameters() if fg else []),
                *task_level[i].parameters(),
            ]
            for i, name in enumerate(names)
        }
        for k, name in enumerate(self.task_names):
            groups[f"experts.{name}"] = list(self.task_experts[k].parameters())
        groups["gates"] = list(self.meta_shared_gate.parameters())
        for c, name in enumerate(self.categories):
            groups[f"gates.category.{name}"] = [self.meta_gates.weight[c], self.meta_gates.bias[c]]
        for k, name in enumerate(self.task_names):
            own = [self.task_gates.weight[k], self.task_gates.bias[k]]
            if self.self_gates is not None:
                own += [self.self_gates.weight[k], self.self_gates.bias[k]]
            groups[f"gates.{name}"] = own
        return groups

    def last_shared_layer(self) -> list[nn.Parameter]:
        bank = self.shared_experts
        params = [bank.weights[-1], bank.biases[-1]]
        if bank.norm == "batch":
            params += [bank.norm_weights[-1], bank.norm_biases[-1]]
        return params

    def extra_repr(self) -> str:
        groups = {
            c: [n for k, n in enumerate(self.task_names) if self.category_of[k] == i]
            for i, c in enumerate(self.categories)
        }
        return (
            f"{super().extra_repr()}, categories={groups}, experts: shared={self.ns}, "
            f"per category={self.nc}, per task={self.nt}"
        )
