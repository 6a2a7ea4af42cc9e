"""Per-task losses with missing labels masked out.

A NaN label means "this row has no label for this task": the row contributes neither loss
nor gradient, and the mean is over labelled rows (PLE, Tang et al. RecSys 2020, eq. 9). A
batch with no labelled row for a task gives exactly zero loss and zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from polytask.config import TaskConfig


def elementwise_loss(task: TaskConfig, output: Tensor, target: Tensor) -> Tensor:
    """Unreduced loss ``[B]`` for targets with NaN already replaced."""
    if task.type == "binary":
        return F.binary_cross_entropy_with_logits(output, target, reduction="none")
    if task.type == "multiclass":
        return F.cross_entropy(output, target.long(), reduction="none")
    if task.loss == "huber":
        return F.huber_loss(output, target, reduction="none", delta=task.huber_delta)
    return (output - target) ** 2


def masked_loss(task: TaskConfig, output: Tensor, label: Tensor) -> Tensor:
    """Mean loss over the rows whose label is not NaN (0 when there are none); no host sync."""
    mask = ~torch.isnan(label)
    target = torch.where(mask, label, torch.zeros_like(label))
    per_row = torch.where(mask, elementwise_loss(task, output, target), 0.0)
    return per_row.sum() / mask.sum().clamp(min=1)


def task_losses(
    tasks: dict[str, TaskConfig], outputs: dict[str, Tensor], labels: dict[str, Tensor]
) -> Tensor:
    """Vector ``[K]`` of masked task losses, in the order of ``tasks``."""
    return torch.stack([masked_loss(t, outputs[name], labels[name]) for name, t in tasks.items()])
