"""Per-task losses with missing labels masked out.

A NaN label means "this row has no label for this task": the row contributes neither loss
nor gradient, and the mean is over labelled rows (PLE, Tang et al. RecSys 2020, eq. 9). A
batch with no labelled row for a task gives exactly zero loss and zero gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polytask.tasks import TaskSpec, task_type, weight_key


def masked_loss(
    task: TaskSpec, output: Tensor, label: Tensor, weight: Tensor | None = None
) -> Tensor:
    """Mean loss over the rows whose label is not NaN (0 when there are none); no host sync.

    ``output`` and ``label`` are ``[B]`` (a scalar loss), or ``[B, k]`` for ``k`` tasks of the
    same kind side by side (a ``[k]`` vector, one mean per column). With ``weight`` (a task's
    ``sample_weight``, ``[B]``) the mean is weighted: ``sum w l / sum w`` over labelled rows
    (0 when the weights sum to 0)."""
    if task_type(task).per_token:  # [B, T] tags, [B, T, C] logits: a mean over real tokens
        label, output = label.reshape(-1), output.reshape(-1, output.shape[-1])
        weight = None if weight is None else weight.reshape(-1)
    mask = ~torch.isnan(label)
    target = torch.where(mask, label, 0.0)
    per_row = torch.where(mask, task_type(task).loss(task, output, target), 0.0)
    if weight is None:
        return per_row.sum(0) / mask.sum(0).clamp(min=1)
    w = torch.where(mask, weight, 0.0)
    return (per_row * w).sum(0) / w.sum(0).clamp(min=torch.finfo(w.dtype).tiny)


def task_loss(
    task: TaskSpec, name: str, outputs: dict[str, Tensor], labels: dict[str, Tensor]
) -> Tensor:
    """One task's masked loss (weighted when the task has sample weights)."""
    weight = labels.get(weight_key(name)) if task.sample_weight else None
    return masked_loss(task, outputs[name], labels[name], weight)


def _group_key(index: int, task: TaskSpec) -> tuple[object, ...]:
    """Tasks with equal keys compute their loss on one ``[B, k]`` stack (the type's
    `~polytask.tasks.TaskType.loss_key`); a task with sample weights is never stacked."""
    key = task_type(task).loss_key(task, index)
    return (*key, "weighted", index) if task.sample_weight else key


def task_losses(
    tasks: dict[str, TaskSpec], outputs: dict[str, Tensor], labels: dict[str, Tensor]
) -> Tensor:
    """Vector ``[K]`` of masked task losses, in the order of ``tasks``.

    Tasks of the same kind (type, loss and its parameters) with one output column each are
    computed together on a ``[B, k]`` stack, so the step runs each loss op once rather than
    once per task: with small batches the per-op cost, not the arithmetic, is what counts
    (two binary tasks: 0.19 -> 0.10 ms forward and backward; docs/performance.md). When the
    tasks of a kind are not adjacent the vector is put back in task order by stacking views
    of the per-group results, not by indexing with a permutation tensor, which would be a
    host-to-device copy (a sync on CUDA) every step."""
    names = list(tasks)
    groups: dict[tuple[object, ...], list[int]] = {}
    for k, name in enumerate(names):
        groups.setdefault(_group_key(k, tasks[name]), []).append(k)
    order = [k for members in groups.values() for k in members]
    in_order = order == sorted(order)
    parts: list[Tensor] = []
    per_task: list[Tensor] = []
    for members in groups.values():
        task = tasks[names[members[0]]]
        if len(members) == 1:
            part = task_loss(task, names[members[0]], outputs, labels).unsqueeze(0)
        else:
            out = torch.stack([outputs[names[k]] for k in members], dim=1)
            lab = torch.stack([labels[names[k]] for k in members], dim=1)
            part = masked_loss(task, out, lab)
        parts.append(part)
        if not in_order:
            per_task += part.unbind(0)
    if in_order:
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return torch.stack([per_task[i] for i in inverse])


def add_terms(losses: Tensor, names: list[str], terms: dict[str, Tensor]) -> Tensor:
    """``losses [K]`` (tasks ``names``) plus a model's loss terms, ``{task name: scalar}``
    (`MultiTaskNet.training_forward`), each added to its task's entry. No terms: ``losses``."""
    if not terms:
        return losses
    zero = losses.new_zeros(())
    return losses + torch.stack([terms.get(name, zero) for name in names])
