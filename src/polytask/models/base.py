"""The contract every model keeps.

A model maps a batch to ``{task name: raw output}`` (a logit ``[B]`` for binary, a value
``[B]`` for regression, logits ``[B, C]`` for multiclass) and names its parameter groups
(``input``, then its own such as ``shared``, ``experts``, ``gates``, then ``towers.<task>``),
which cover every parameter exactly once. Towers and the links between tasks (one task's
estimate fed into another's tower, with or without stop-gradient) live here, so every
architecture gets them the same way. A model may also compute auxiliary outputs, estimates
that no declared task has a label or loss for (ESMM's pCVR), named in ``auxiliary_outputs``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from polytask.data.encoded import batch_lists
from polytask.nn import Activation, ExpertBank, FeatureInput, Norm, mlp
from polytask.tasks import task_order, task_type


@dataclass(frozen=True)
class Head:
    """What a model needs to know about a task: output width and links from other tasks."""

    name: str
    type: str
    out_dim: int = 1
    inputs_from: tuple[str, ...] = ()
    detach: bool = True
    layer: int | None = None
    """The encoder layer a sequence model's task reads (None: the last)."""

    @property
    def estimate_dim(self) -> int:
        """Width of this task's estimate when fed into another task's tower."""
        return task_type(self.type).estimate_dim(self.out_dim)


class TowerParams(BaseModel):
    """Parameters every architecture shares: the per-task towers."""

    model_config = ConfigDict(extra="forbid")
    tower_units: list[int] = Field(default_factory=lambda: [64])
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    norm: Norm = "none"


def mlp_with(params: TowerParams, in_dim: int, units: Sequence[int]) -> nn.Sequential:
    """`mlp` with the model's activation, dropout and norm."""
    return mlp(
        in_dim, units, activation=params.activation, dropout=params.dropout, norm=params.norm
    )


def tower(params: TowerParams, in_dim: int, out_dim: int) -> nn.Sequential:
    """A tower: `mlp_with` of ``tower_units``, then a linear layer to ``out_dim``."""
    width = params.tower_units[-1] if params.tower_units else in_dim
    return nn.Sequential(mlp_with(params, in_dim, params.tower_units), nn.Linear(width, out_dim))


def experts_with(
    params: TowerParams, in_dim: int, num_experts: int, units: Sequence[int]
) -> ExpertBank:
    """An `ExpertBank` with the model's activation and dropout."""
    return ExpertBank(
        in_dim=in_dim,
        num_experts=num_experts,
        units=units,
        activation=params.activation,
        dropout=params.dropout,
    )


@dataclass
class Representation:
    """What a model body hands to the towers: one ``[B, D]`` tensor for all tasks, or one per
    task (``per_task[k]`` for task k), plus the gate weights when the body has gates."""

    shared: Tensor | None = None
    per_task: Tensor | list[Tensor] | None = None
    gates: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, Tensor] = field(default_factory=dict)
    """Loss terms of the body, a scalar per task name (DSelect-k's regulariser on a task's
    gate), added to that task's loss in training (`MultiTaskNet.training_forward`)."""
    context: dict[str, Any] = field(default_factory=dict)
    """Whatever else a model's own `MultiTaskNet.tower` reads (PEPNet's per-task tower
    gates)."""


class MultiTaskNet(nn.Module):
    """Base of the zoo: a feature input, a body (the subclass) and one tower per task."""

    auxiliary_outputs: dict[str, str]
    """Outputs beyond the tasks' (no label, no loss), name -> ``binary`` (a logit) or
    ``regression`` (a value); ``forward(..., auxiliary=True)`` adds them for every row and
    ``predict`` turns them into columns. Empty unless a model sets it."""

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], body_dim: int, params: TowerParams
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.heads = list(heads)
        self.task_names = [h.name for h in self.heads]
        self.order = task_order({h.name: h.inputs_from for h in self.heads})
        self.auxiliary_outputs = {}
        # Lookups the forward needs every step, built once.
        self.head_by_name = {h.name: h for h in self.heads}
        self.task_index = {name: k for k, name in enumerate(self.task_names)}
        self.towers = nn.ModuleDict()
        for h in self.heads:
            extra = sum(self.head_by_name[src].estimate_dim for src in h.inputs_from)
            self.towers[h.name] = tower(params, body_dim + extra, h.out_dim)

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        """Body: ``[B, input dim]`` -> inputs of the towers of the tasks at indices ``active``
        (``per_task[j]`` is for task ``active[j]``). Task-specific body parts (a task's gate)
        of inactive tasks must stay out of the graph."""

    @abstractmethod
    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        """The body's parameter groups (e.g. ``shared``, or ``experts`` and ``gates``)."""

    @abstractmethod
    def last_shared_layer(self) -> list[nn.Parameter]:
        """Parameters of the last layer shared by every task (GradNorm's ``W``)."""

    # ------------------------------------------------------------------ may override
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """The body's input ``[B, D]`` from a batch: the feature input's output. A model with
        more than one embedding of each feature (STEM) returns them side by side."""
        return self.inputs(batch["categorical"], batch["numeric"], batch_lists(batch))

    def body(self, batch: dict[str, Tensor], active: Sequence[int]) -> Representation:
        """`represent` of `embed`: what the towers read. A sequence model overrides it (it
        needs the batch's sentence lengths beside the embeddings)."""
        return self.represent(self.embed(batch), active)

    def tower(self, name: str, h: Tensor, rep: Representation) -> Tensor:
        """Task ``name``'s raw output ``[B, out_dim]`` from its tower input ``h`` (the body's
        representation plus any linked estimates); ``rep`` is the whole representation."""
        return cast(Tensor, self.towers[name](h))

    # ------------------------------------------------------------------ shared logic
    def forward(
        self,
        batch: dict[str, Tensor],
        tasks: Sequence[str] | None = None,
        *,
        auxiliary: bool = False,
    ) -> dict[str, Tensor]:
        """Raw outputs of ``tasks`` (default: all), plus of the tasks they take inputs from,
        plus with ``auxiliary`` the model's `auxiliary_outputs`.

        Only the parts of the model those tasks use are computed, so a loss on them leaves
        every other tower and gate with no gradient at all."""
        outputs, _ = self._run(batch, tasks, auxiliary=auxiliary)
        return outputs

    def training_forward(
        self,
        batch: dict[str, Tensor],
        labels: dict[str, Tensor],
        tasks: Sequence[str] | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """What a training step needs: the outputs of `forward` (auxiliary ones included) and
        the architecture's own loss terms, ``{task name: scalar}``, each to be added to that
        task's loss (so it is weighted, reported and, in alternate training, stepped with that
        task). The terms are the body's (`Representation.losses`) plus `auxiliary_losses`;
        only tasks this call computes have one. Most models have none."""
        outputs, rep = self._run(batch, tasks, auxiliary=True)
        terms = dict(rep.losses)
        for name, term in self.auxiliary_losses(outputs, labels).items():
            terms[name] = terms[name] + term if name in terms else term
        return outputs, {name: t for name, t in terms.items() if name in outputs}

    def auxiliary_losses(
        self, outputs: dict[str, Tensor], labels: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Loss terms computed from the outputs (AITM's calibrator, ESCM2's counterfactual
        CVR risk), ``{task name: scalar}``; see `training_forward`. ``outputs`` are the step's
        (only the tasks it computes, plus auxiliary outputs), ``labels`` every task's label
        (NaN where missing). Default: none."""
        return {}

    def gate_weights(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Gate weights per gate name (``[B, num_experts]`` each); empty for gateless models.

        Runs the body for every task, but no tower: the gates are the body's."""
        return self.body(batch, list(range(len(self.heads)))).gates

    def required_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        """``tasks`` plus, transitively, the tasks they take inputs from, in run order."""
        if tasks is None:
            return list(self.order)
        unknown = [t for t in tasks if t not in self.head_by_name]
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; the model has {self.task_names}")
        needed: set[str] = set()
        stack = list(tasks)
        while stack:
            name = stack.pop()
            if name not in needed:
                needed.add(name)
                stack.extend(self.head_by_name[name].inputs_from)
        return [n for n in self.order if n in needed]

    def _run(
        self, batch: dict[str, Tensor], tasks: Sequence[str] | None, *, auxiliary: bool = False
    ) -> tuple[dict[str, Tensor], Representation]:
        # ``auxiliary`` is for subclasses that set `auxiliary_outputs`; the base has none.
        run = self.required_tasks(tasks)
        active = sorted(self.task_index[n] for n in run)
        slot = {k: j for j, k in enumerate(active)}
        rep = self.body(batch, active)
        outputs: dict[str, Tensor] = {}
        for name in run:
            head = self.head_by_name[name]
            if rep.per_task is not None:
                h = rep.per_task[slot[self.task_index[name]]]
            else:
                assert rep.shared is not None
                h = rep.shared
            if head.inputs_from:
                feats = []
                for src in head.inputs_from:
                    est = task_type(self.head_by_name[src].type).link(outputs[src])
                    feats.append(est.detach() if head.detach else est)
                h = torch.cat([h, *feats], dim=-1)
            out = self.tower(name, h, rep)
            outputs[name] = out.squeeze(1) if head.out_dim == 1 else out
        return {name: outputs[name] for name in self.task_names if name in outputs}, rep

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups covering every parameter exactly once, in a stable order."""
        groups: dict[str, list[nn.Parameter]] = {"input": list(self.inputs.parameters())}
        groups.update(self.body_groups())
        for name, tower in self.towers.items():  # task order; a model may rename a tower
            groups[f"towers.{name}"] = list(tower.parameters())
        return {k: v for k, v in groups.items() if v}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the towers (input and body): what gradient aggregators
        combine across tasks."""
        return [
            p
            for name, ps in self.parameter_groups().items()
            if not name.startswith("towers.")
            for p in ps
        ]

    def extra_repr(self) -> str:
        links = [
            f"{src}->{h.name}{' (stop-gradient)' if h.detach else ''}"
            for h in self.heads
            for src in h.inputs_from
        ]
        return f"tasks={self.task_names}" + (f", links={links}" if links else "")


@dataclass(frozen=True)
class ModelEntry:
    """Registry row: the parameter schema, the builder and, for models that constrain the
    tasks (ESMM needs two binary tasks of given names), a check run when the config is
    validated, so a mismatch fails before any data is read."""

    params: type[TowerParams]
    build: Callable[..., MultiTaskNet]
    """Called as ``build(inputs=FeatureInput, heads=[Head, ...], params=<params>)``: a
    `MultiTaskNet` subclass or a function (a preset such as ``cgc``)."""
    check_heads: Callable[[Any, Sequence[Head]], None] | None = None
    """Raises ValueError naming the parameter, what it expects and what it found."""
    sequence: bool = False
    """A sequence model: it reads sentences (``features.tokens``) and its tasks are
    per-token (``tag``), each at the encoder layer its ``layer`` names."""
    check_features: Callable[[Any, Sequence[str]], None] | None = None
    """Likewise for models whose parameters name features (PEPNet's ``gate_features``):
    called with the parameters and the categorical columns' names."""
