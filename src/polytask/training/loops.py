"""The step and evaluation loops as plain functions.

The hot path moves tensors only: batches are contiguous slices of pre-encoded column tensors,
task losses stay on the device and are summed there; the host reads them once per epoch.
Each step reads the device once, to decide whether its losses and update are finite (an
aggregator step twice: once more before the Jacobian); a step that is not applied raises
`NonFiniteLossError` or `NonFiniteUpdateError`, so what a step returns is always finite and
the loop never reads it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from polytask.data import LABEL_PREFIX, Batch, EncodedData
from polytask.errors import NonFiniteUpdateError, TrainingError
from polytask.losses import add_terms, masked_loss, task_losses
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec
from polytask.weighting import Weighting


def batch_labels(batch: Batch, tasks: Mapping[str, TaskSpec]) -> dict[str, Tensor]:
    return {name: batch[LABEL_PREFIX + name] for name in tasks}


class NonFiniteLossError(TrainingError):
    """A task loss of a step was NaN or inf, so the step left the weights unchanged.

    Raised by the step functions with the step's task losses ``[K]`` (``losses``) and handled
    by the training loop: with ``training.on_nan: skip`` the batch is counted as skipped,
    otherwise the loop raises a `TrainingError` naming the task and where."""

    def __init__(self, losses: Tensor) -> None:
        super().__init__("a task loss is not finite; the update was not applied")
        self.losses = losses


def nonfinite_update(what: str, value: Tensor, losses: Tensor) -> NonFiniteUpdateError:
    """The error for a non-finite ``value`` (``what``: the weighted total, a direction...)
    computed from finite task ``losses``. Only built on that rare path (it reads tensors)."""
    flat = value.detach().reshape(-1)
    bad = flat[~torch.isfinite(flat)]
    shown = float(bad[0]) if bad.numel() else float("nan")
    found = ", ".join(f"{float(v):.4g}" for v in losses.detach().reshape(-1))
    return NonFiniteUpdateError(
        f"{what} is {shown} although every task loss is finite ([{found}]); the update was "
        "not applied"
    )


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
        labels = batch_labels(batch, tasks)
        outputs, terms = model.training_forward(batch, labels)
        losses = add_terms(task_losses(tasks, outputs, labels), list(tasks), terms)
        if scale is not None:
            losses = losses * scale
        return weighting(losses), losses
    k = weighting.task_index[task]
    # A task's own dataset (alternate training) may lack the other tasks' labels.
    labels = {n: batch[LABEL_PREFIX + n] for n in tasks if LABEL_PREFIX + n in batch}
    outputs, terms = model.training_forward(batch, labels, [task])
    loss = masked_loss(tasks[task], outputs[task], labels[task])
    if task in terms:
        loss = loss + terms[task]
    if scale is not None:
        loss = loss * scale[k]
    losses = torch.zeros(len(tasks), device=loss.device)
    losses[k] = loss.detach()
    return weighting.single(k, loss), losses


def apply_update(
    optimizer: torch.optim.Optimizer,
    objective: Tensor,
    checked: Tensor,
    what: str,
    losses: Tensor | None = None,
) -> None:
    """Zero the gradients, then step along ``objective``'s gradient if every entry of
    ``checked`` (the task losses, then the objective, detached; the global batch's under
    torchrun) is finite: the step's one host read.

    Otherwise the update is skipped: `NonFiniteLossError` with ``losses`` (default: the checked
    losses) if a checked loss is not finite, else `NonFiniteUpdateError` naming ``what``."""
    optimizer.zero_grad(set_to_none=True)
    if not bool(torch.isfinite(checked).all()):
        if bool(torch.isfinite(checked[:-1]).all()):
            raise nonfinite_update(what, checked[-1:], checked[:-1])
        raise NonFiniteLossError(checked[:-1] if losses is None else losses)
    objective.backward()
    optimizer.step()


def joint_step(
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskSpec],
    optimizer: torch.optim.Optimizer,
    batch: Batch,
) -> Tensor:
    """One optimizer step on all tasks; returns the detached task losses ``[K]``.

    A non-finite loss skips the update and raises `NonFiniteLossError` (the caller decides
    whether to stop), so one bad batch never writes NaN into the weights. A non-finite
    weighted total from finite losses also skips it, and raises `NonFiniteUpdateError`."""
    total, losses = forward_objective(model, weighting, tasks, batch)
    losses = losses.detach()
    checked = torch.cat([losses, total.detach().reshape(1)])
    apply_update(optimizer, total, checked, f"the weighted total ({type(weighting).__name__})")
    return losses


def check_finite(losses: Tensor, task_names: list[str], step: int, where: str) -> None:
    """Raise `TrainingError` naming the first task whose loss is NaN or inf."""
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise TrainingError(
            f"task {task_names[k]!r}: loss is {float(losses[k])} at step {step}{where}"
        )


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in evaluation mode inside the block; its previous mode after it, also when
    the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.inference_mode()
def predict_outputs(
    model: MultiTaskNet, data: EncodedData, batch_size: int
) -> dict[str, np.ndarray]:
    """Raw outputs for every row, in row order, as float32 numpy arrays: one per task and
    one per auxiliary output of the model."""
    names = [*model.task_names, *model.auxiliary_outputs]
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    with evaluating(model):
        for batch in data.batches(batch_size):
            for name, out in model(batch, auxiliary=True).items():
                chunks[name].append(out.float())
    return {
        name: torch.cat(parts).cpu().numpy() if parts else np.zeros((0,), np.float32)
        for name, parts in chunks.items()
    }


@torch.inference_mode()
def gate_statistics(
    model: MultiTaskNet, data: EncodedData, batch_size: int
) -> dict[str, dict[str, list[float] | float]]:
    """Mean gate weight per expert per gate over ``data``, and the entropy of that mean (nats).

    A collapsed gate (all weight on one expert) has entropy near 0; a uniform one log(E).
    For a gate whose weights do not sum to 1 (PEPNet's scales in ``(0, 2)``) the entropy is
    that of the mean rescaled to sum to 1: how evenly the gate spreads its weight; for a
    softmax gate the rescaling changes nothing.
    """
    sums: dict[str, Tensor] = {}
    with evaluating(model):
        for batch in data.batches(batch_size):
            for name, g in model.gate_weights(batch).items():
                part = g.float().sum(0)
                sums[name] = sums[name] + part if name in sums else part
    out: dict[str, dict[str, list[float] | float]] = {}
    for name, total in sums.items():
        mean = total / max(len(data), 1)
        share = mean / mean.sum().clamp_min(1e-12)
        entropy = float(-(share * share.clamp_min(1e-12).log()).sum())
        out[name] = {"mean_weight": mean.tolist(), "entropy": entropy}
    return out
