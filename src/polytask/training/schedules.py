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
from itertools import islice
from typing import Literal

import torch
from torch import Tensor

from polytask.data import Batch, EncodedData
from polytask.data.stream import StreamingBatches

Sampling = Literal["uniform", "proportional", "round_robin"]
Rows = EncodedData | StreamingBatches
"""A split that shuffles itself into batches (`StreamingBatches`: a file read out of core)."""


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


class JointBatches:
    """Joint training's batches: one shuffled pass over ``data`` per epoch, every task per step.

    Resumable: `state_dict` holds the shuffle generator's state at the start of the epoch in
    progress, so `load_state_dict` regenerates that epoch's permutation exactly and the next
    `epoch` continues after the batches already drawn.
    """

    def __init__(self, data: Rows, *, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.steps = data.num_batches(batch_size)
        self.rows_per_epoch = len(data)
        self._epoch_start: Tensor | None = None
        self._resume_at: int | None = None

    def epoch(self) -> Iterator[tuple[str | None, Batch]]:
        start, self._resume_at = self._resume_at, None
        if start is None:
            self._epoch_start = self.generator.get_state()
            start = 0
        else:
            assert self._epoch_start is not None
            self.generator.set_state(self._epoch_start)
        for batch in islice(
            self.data.batches(self.batch_size, generator=self.generator), start, None
        ):
            yield None, batch

    def state_dict(self) -> dict[str, Tensor]:
        assert self._epoch_start is not None, "state_dict() is only meaningful inside an epoch"
        return {"epoch_start": self._epoch_start}

    def load_state_dict(self, state: Mapping[str, Tensor], *, position: int) -> None:
        """Make the next `epoch` continue the saved epoch after its first ``position`` batches."""
        self._epoch_start = state["epoch_start"]
        self._resume_at = position


class _Stream:
    """Endless shuffled batches of one dataset; each pass is a fresh permutation.

    ``pass_start`` (the generator state before this pass's permutation) and ``consumed``
    (batches drawn in this pass) are enough to rebuild the pass exactly on resume."""

    def __init__(self, data: EncodedData, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self._it: Iterator[Batch] = iter(())
        self.pass_start: Tensor | None = None
        self.consumed = 0

    def next(self) -> Batch:
        batch = next(self._it, None)
        if batch is None:
            self.pass_start, self.consumed = self.generator.get_state(), 0
            self._it = self.data.batches(self.batch_size, generator=self.generator)
            batch = next(self._it)
        self.consumed += 1
        return batch

    def restore(self, pass_start: Tensor, consumed: int) -> None:
        # A private generator replays this pass's permutation; later passes draw from the
        # shared one again, whose state the caller restores.
        replay = torch.Generator().set_state(pass_start)
        self.pass_start, self.consumed = pass_start, consumed
        self._it = self.data.batches(self.batch_size, generator=replay)
        for _ in islice(self._it, consumed):
            pass


class AlternateBatches:
    """Yields ``(task, batch)`` for each step of an epoch; streams persist across epochs.

    Resumable like `JointBatches`: `state_dict` holds the shared generator's state, its state
    before this epoch's task sequence was drawn, and each stream's pass start and position."""

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
        # One epoch = as many steps as it takes to see every dataset once on average.
        self.steps = sum(d.num_batches(batch_size) for d in self.datasets.values())
        self._sequence_start: Tensor | None = None
        self._resume_at: int | None = None

    def epoch(self) -> Iterator[tuple[str, Batch]]:
        sizes = {k: len(d) for k, d in self.datasets.items()}
        start, self._resume_at = self._resume_at, None
        generator = self.generator
        if start is None:
            self._sequence_start, start = generator.get_state(), 0
        else:  # the saved epoch's sequence, drawn again from its saved state
            assert self._sequence_start is not None
            generator = torch.Generator().set_state(self._sequence_start)
        for task in task_sequence(sizes, self.steps, self.sampling, generator)[start:]:
            yield task, self.streams[task].next()

    @property
    def rows_per_epoch(self) -> int:
        return self.steps * self.batch_size

    def state_dict(self) -> dict[str, Tensor]:
        assert self._sequence_start is not None, "state_dict() is only meaningful inside an epoch"
        state = {"generator": self.generator.get_state(), "sequence_start": self._sequence_start}
        for name, stream in self.streams.items():
            if stream.pass_start is not None:
                state[f"stream.{name}.pass_start"] = stream.pass_start
                state[f"stream.{name}.consumed"] = torch.tensor(stream.consumed)
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], *, position: int) -> None:
        """Make the next `epoch` continue the saved epoch after its first ``position`` steps."""
        for name, stream in self.streams.items():
            if f"stream.{name}.pass_start" in state:
                consumed = int(state[f"stream.{name}.consumed"])
                stream.restore(state[f"stream.{name}.pass_start"], consumed)
        self.generator.set_state(state["generator"])
        self._sequence_start = state["sequence_start"]
        self._resume_at = position
