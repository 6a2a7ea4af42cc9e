"""Alternate training: one dataset per task, one task per optimizer step.

Suited to separate datasets per task (Godwin's "alternate training"): each step draws a task,
takes a batch from that task's dataset and updates only what that task uses — the shared
parameters, its gate(s) and its tower. Everything else, and its optimizer state, stays
bit-for-bit unchanged, because the other tasks' towers and gates are not even computed (their
gradients stay ``None`` and the optimizer skips them).

Two biases to keep in mind: with ``proportional`` sampling the largest dataset dominates the
shared layers, and whichever task is trained last pulls the shared parameters its way. When
rows carry several labels, joint training (the default) avoids both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import torch
from torch import Tensor

from polytask.config import TaskConfig
from polytask.data import LABEL_PREFIX, Batch, EncodedData
from polytask.losses import masked_loss
from polytask.models import MultiTaskNet
from polytask.weighting import Weighting

Sampling = Literal["uniform", "proportional", "round_robin"]


def steps_per_epoch(datasets: Mapping[str, EncodedData], batch_size: int) -> int:
    """One epoch = as many steps as it takes to see every dataset once on average."""
    return sum(d.num_batches(batch_size) for d in datasets.values())


def task_sequence(
    sizes: Mapping[str, int], steps: int, sampling: Sampling, generator: torch.Generator
) -> list[str]:
    """Which task each step of an epoch trains, drawn up front (no per-step host sync)."""
    names = list(sizes)
    if sampling == "round_robin":
        return [names[i % len(names)] for i in range(steps)]
    if sampling == "uniform":
        probs = torch.ones(len(names))
    else:
        probs = torch.tensor([float(sizes[n]) for n in names])
    draws = torch.multinomial(probs, steps, replacement=True, generator=generator)
    return [names[i] for i in draws.tolist()]


class _Stream:
    """Endless shuffled batches of one dataset; each pass is a fresh permutation."""

    def __init__(self, data: EncodedData, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self._it: Iterator[Batch] = iter(())

    def next(self) -> Batch:
        batch = next(self._it, None)
        if batch is None:
            self._it = self.data.batches(self.batch_size, generator=self.generator)
            batch = next(self._it)
        return batch


class AlternateBatches:
    """Yields ``(task, batch)`` for each step of an epoch; streams persist across epochs."""

    def __init__(
        self,
        datasets: Mapping[str, EncodedData],
        *,
        batch_size: int,
        sampling: Sampling,
        generator: torch.Generator,
    ) -> None:
        self.datasets = dict(datasets)
        self.batch_size = batch_size
        self.sampling = sampling
        self.generator = generator
        self.streams = {k: _Stream(d, batch_size, generator) for k, d in self.datasets.items()}
        self.steps = steps_per_epoch(self.datasets, batch_size)

    def epoch(self) -> Iterator[tuple[str, Batch]]:
        sizes = {k: len(d) for k, d in self.datasets.items()}
        for task in task_sequence(sizes, self.steps, self.sampling, self.generator):
            yield task, self.streams[task].next()

    @property
    def rows_per_epoch(self) -> int:
        return self.steps * self.batch_size


def alternate_step(
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskConfig],
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    task: str,
) -> Tensor:
    """One optimizer step on ``task`` alone; returns ``[K]`` losses (0 for other tasks)."""
    names = list(tasks)
    k = names.index(task)
    outputs = model(batch, tasks=[task])
    loss = masked_loss(tasks[task], outputs[task], batch[LABEL_PREFIX + task])
    objective = weighting.single(k, loss)
    optimizer.zero_grad(set_to_none=True)
    losses = torch.zeros(len(names), device=loss.device)
    losses[k] = loss.detach()
    if not bool(torch.isfinite(objective)):
        losses[k] = float("nan")
        return losses
    objective.backward()
    optimizer.step()
    return losses
