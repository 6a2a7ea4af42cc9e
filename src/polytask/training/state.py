"""Where a fit is: `LoopState`, everything of the loop a checkpoint needs to resume exactly,
`FitResult`, what a fit returns, and `BatchSource`, what it draws its batches from. Shared by
the loop (`polytask.training.trainer`) and the checkpoints (`polytask.training.checkpoint`),
which need not know each other."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from polytask.data import Batch


class BatchSource(Protocol):
    """Yields ``(task or None for every task, batch)`` for each step of an epoch; saves and
    restores its place in the epoch in progress (checkpoints)."""

    @property
    def steps(self) -> int: ...

    @property
    def rows_per_epoch(self) -> int: ...

    def epoch(self) -> Iterator[tuple[str | None, Batch]]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor], *, position: int) -> None: ...


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    skipped_batches: int = 0
    interrupted: bool = False
    """Ctrl-C stopped the fit after a step (`polytask.training.trainer.interruptible`)."""
    stopped_at: tuple[int, int] = (0, 0)
    """``(epoch, step)`` where the fit ended: the epoch in progress and the steps taken."""


@dataclass
class LoopState:
    """Where `fit_loop` is. With the model, weighting, optimizer, scheduler and the batch
    source's own state it is everything a checkpoint needs to resume exactly."""

    result: FitResult = field(default_factory=FitResult)
    step: int = 0
    """Batches drawn so far, over every epoch (skipped ones included)."""
    epoch: int = 1
    """The epoch in progress (1-based)."""
    position: int = 0
    """Batches drawn in that epoch."""
    finite_steps: int = 0
    skipped_in_epoch: int = 0
    loss_sums: torch.Tensor | None = None
    """``[K]`` sums of this epoch's finite task losses (on the model's device)."""
    loss_counts: torch.Tensor | None = None
    elapsed: float = 0.0
    """Seconds spent in this epoch's batches before the last checkpoint (throughput only)."""
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
