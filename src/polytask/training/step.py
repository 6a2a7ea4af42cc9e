"""The training step: one optimizer step on a batch, for every way polytask trains.

`TrainStep` is built once per fit and called once per batch. It trains every task (joint
training) or one (``task``: alternate training); with a weighting of the losses it steps
along the gradient of the weighted objective, with a gradient weighting (aggregators,
GradNorm; see `polytask.training._aggregate`) along the direction the weighting makes of the
per-task gradients. What differs between one process and a torchrun job is one piece, the
`Reduction`: `LOCAL` (everything is already global) or a rank's `DistributedTraining`
(its share of the global batch, all-reduced losses, gradients and Jacobians).

Each step reads the device once, to decide whether its losses and its update are finite (a
gradient-weighting step twice: once more before the Jacobian, which would be NaN). A step
whose update is not finite leaves the weights and the optimizer state unchanged and says so
in its `StepResult`: the caller decides (skip the batch or stop), nothing is raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polytask.data import LABEL_PREFIX, Batch
from polytask.losses import add_terms, task_loss, task_losses
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec
from polytask.training._aggregate import (
    backward_objective,
    parameter_split,
    task_jacobian,
    write_grads,
)
from polytask.weighting import GradientWeighting, Weighting


def batch_labels(batch: Batch) -> dict[str, Tensor]:
    """The batch's labels by task, and a weighted task's weights (under `weight_key`)."""
    return {n[len(LABEL_PREFIX) :]: v for n, v in batch.items() if n.startswith(LABEL_PREFIX)}


def task_loss_vector(
    model: MultiTaskNet, tasks: dict[str, TaskSpec], batch: Batch, scale: Tensor | None = None
) -> Tensor:
    """``[K]`` the batch's task losses, attached, with the model's own loss terms
    (`MultiTaskNet.training_forward`) added to their tasks', times ``scale [K]`` if given."""
    labels = batch_labels(batch)
    outputs, terms = model.training_forward(batch, labels)
    losses = add_terms(task_losses(tasks, outputs, labels), list(tasks), terms)
    return losses if scale is None else losses * scale


def forward_objective(
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskSpec],
    batch: Batch,
    task: str | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The forward pass of a step: ``(objective, losses [K])``.

    For every task (``task`` None) the objective is ``weighting(losses)`` and the losses stay
    attached. For ``task`` alone only its part of the model runs, the objective is
    `Weighting.single` of its loss and the losses are detached, 0 for the other tasks.
    ``scale [K]`` multiplies the task losses first (a torchrun rank's share). A model's own
    loss terms (`MultiTaskNet.training_forward`) are part of their task's loss."""
    if task is None:
        losses = task_loss_vector(model, tasks, batch, scale)
        return weighting(losses), losses
    k = weighting.task_index[task]
    labels = batch_labels(batch)  # a task's own dataset (alternate) may lack the others'
    outputs, terms = model.training_forward(batch, labels, [task])
    loss = task_loss(tasks[task], task, outputs, labels)
    if task in terms:
        loss = loss + terms[task]
    if scale is not None:
        loss = loss * scale[k]
    losses = torch.zeros(len(tasks), device=loss.device)
    losses[k] = loss.detach()
    return weighting.single(k, loss), losses


@dataclass(frozen=True)
class StepResult:
    """What a step did: ``losses [K]`` (detached; the global batch's under torchrun; 0 for
    the tasks an alternate step did not train) and whether the update was ``applied``.

    A step that was not applied had a non-finite task loss, or finite losses and a
    non-finite update (``what``: the weighted total, the direction..., ``value``: it)."""

    losses: Tensor
    applied: bool = True
    what: str = ""
    value: Tensor | None = None

    def problem(self, names: list[str]) -> str:
        """Why the update was not applied, naming the task whose loss was not finite (reads
        the device: only for a step that was not applied)."""
        bad = ~torch.isfinite(self.losses)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            return f"task {names[k]!r}: loss is {float(self.losses[k])}"
        flat = torch.zeros(1) if self.value is None else self.value.detach().reshape(-1)
        wrong = flat[~torch.isfinite(flat)]
        shown = float(wrong[0]) if wrong.numel() else float("nan")
        found = ", ".join(f"{float(v):.4g}" for v in self.losses.reshape(-1))
        return (
            f"{self.what} is {shown} although every task loss is finite ([{found}]); the "
            "update was not applied"
        )


class Reduction:
    """How a step's values become the global batch's: in one process they already are, so
    every method is the identity. `polytask.training.distributed.DistributedTraining`
    overrides them for one rank of a torchrun job."""

    world_size = 1

    def shard(self, batch: Batch) -> tuple[Batch, Tensor | None]:
        """This process's rows of the batch and its per-task loss scale (None: 1)."""
        return batch, None

    def objective(
        self, step: TrainStep, batch: Batch, scale: Tensor | None, task: str | None
    ) -> tuple[Tensor, Tensor]:
        """`forward_objective` (under torchrun through the DDP module, which reduces the
        gradients in backward)."""
        return forward_objective(step.model, step.weighting, step.tasks, batch, task, scale)

    def prepare(self) -> None:
        """Before a gradient-weighting step's forward (torchrun: rank 0's batch-norm
        statistics, as DDP's forward would)."""

    def mean(self, values: Tensor) -> Tensor:
        """The mean over processes of ``values`` (detached)."""
        return values.detach()

    def same(self, values: Tensor) -> Tensor:
        """Rank 0's ``values`` on every process."""
        return values

    def average_grads(self, params: list[nn.Parameter], objective: Tensor) -> Tensor:
        """Average the ``.grad`` of ``params`` over processes, in place; return what must be
        finite besides the direction (the objective; under torchrun the gradients too)."""
        return objective.detach().reshape(1)


LOCAL = Reduction()
"""The reduction of one process."""


class TrainStep:
    """One optimizer step on a batch: ``step(batch)`` for every task, ``step(batch, task)``
    for one. Built once per fit (it fixes which parameters a gradient weighting combines)."""

    def __init__(
        self,
        model: MultiTaskNet,
        weighting: Weighting,
        tasks: dict[str, TaskSpec],
        optimizer: torch.optim.Optimizer,
        reduction: Reduction = LOCAL,
    ) -> None:
        self.model, self.weighting, self.tasks = model, weighting, tasks
        self.optimizer, self.reduction = optimizer, reduction
        self.split = (
            parameter_split(model, weighting) if isinstance(weighting, GradientWeighting) else None
        )

    def __call__(self, batch: Batch, task: str | None = None) -> StepResult:
        if self.split is not None and task is None:
            return self._combine_gradients(batch)
        r = self.reduction
        local, scale = r.shard(batch)
        objective, losses = r.objective(self, local, scale, task)
        # The global batch's values decide: the same decision on every process.
        checked = r.mean(torch.cat([losses.detach(), objective.detach().reshape(1)]))
        self.optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(checked).all()):  # the step's one host read
            name = self.weighting.name
            what = f"the weighted total ({name})"
            if task is not None:
                what = f"the weighted loss of {task!r} ({name})"
            return StepResult(checked[:-1], False, what, checked[-1:])
        objective.backward()
        self.optimizer.step()
        return StepResult(checked[:-1])

    def _combine_gradients(self, batch: Batch) -> StepResult:
        """The step of a `GradientWeighting`: the Jacobian of the task losses with respect to
        the split's parameters (all-reduced under torchrun), the weighting's direction for
        them, the objective's gradient for every other parameter."""
        r, split, weighting = self.reduction, self.split, self.weighting
        assert split is not None and isinstance(weighting, GradientWeighting)
        r.prepare()
        local, scale = r.shard(batch)
        losses = task_loss_vector(self.model, self.tasks, local, scale)
        global_losses = r.mean(losses)
        self.optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(global_losses).all()):  # before the Jacobian (NaN)
            return StepResult(global_losses, False)
        if r.world_size > 1:
            # Values of the global losses (what GradNorm's loss ratios read), gradients of
            # this rank's scaled losses (whose mean over ranks is the global gradient).
            losses = (losses - losses.detach()) + global_losses
        jacobian = r.mean(task_jacobian(losses, split.jacobian))
        update = weighting.combine(losses, jacobian)
        direction = r.same(update.direction)
        backward_objective(update.objective, split.others)
        rest = r.average_grads(split.others, update.objective)
        direction_ok = torch.isfinite(direction).all()
        if not bool(direction_ok & torch.isfinite(rest).all()):  # one host read
            self.optimizer.zero_grad(set_to_none=True)
            name = weighting.name
            if not bool(direction_ok):
                return StepResult(global_losses, False, f"the update direction ({name})", direction)
            return StepResult(global_losses, False, f"the objective ({name})", rest)
        write_grads(split.jacobian, direction)
        self.optimizer.step()
        weighting.after_step()
        return StepResult(global_losses)
