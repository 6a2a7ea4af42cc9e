"""Where a fit is: `LoopState`, everything of the loop a checkpoint needs to resume exactly,
and `FitResult`, what a fit returns. Shared by the loop (`polytask.training.trainer`) and the
checkpoints (`polytask.training.checkpoint`), which need not know each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


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
