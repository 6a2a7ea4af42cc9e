"""A thin trainer: epochs, validation, early stopping, history and progress.

Everything it trains is handed in (model, weighting, optimizer); it only consumes them.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from polytask.config import TaskConfig, TrainingConfig
from polytask.data import Batch, EncodedData
from polytask.data.stream import StreamingBatches
from polytask.errors import TrainingError
from polytask.metrics import all_metrics, monitor_mode, monitor_value
from polytask.models import MultiTaskNet
from polytask.training._aggregate import aggregate_step
from polytask.training.loops import check_finite, joint_step, predict_outputs
from polytask.training.optim import group_lrs
from polytask.training.schedules import AlternateBatches, alternate_step
from polytask.weighting import Weighting

if TYPE_CHECKING:
    from polytask.training.distributed import DistributedTraining


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    skipped_batches: int = 0


def evaluate_split(
    model: MultiTaskNet,
    tasks: dict[str, TaskConfig],
    data: EncodedData,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Exact per-task metrics over the whole split."""
    outputs = predict_outputs(model, data, batch_size)
    labels = {name: data.labels[name].cpu().numpy() for name in tasks}
    return all_metrics(tasks, outputs, labels)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def fit_loop(
    *,
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskConfig],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train: EncodedData | AlternateBatches | StreamingBatches,
    validation: EncodedData | None,
    cfg: TrainingConfig,
    step_fn: Callable[..., torch.Tensor] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    distributed: DistributedTraining | None = None,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs (fewer with early stopping); return the history.

    ``train`` is one encoded split (joint training: every step on every task) or
    `AlternateBatches` (one task per step, see `polytask.training.schedules`).

    With a validation split, each epoch's record holds its exact metrics and
    ``cfg.monitor`` picks the best epoch; with ``cfg.restore_best`` the model ends at that
    epoch's weights.

    With ``distributed`` (one rank of a torchrun job) every rank walks the same global batches
    and trains on its share of each; see `polytask.training.distributed`.
    """
    names = list(tasks)
    generator = torch.Generator().manual_seed(cfg.seed)
    result = FitResult()
    mode = monitor_mode(cfg.monitor)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    step = 0
    if step_fn is None:
        step_fn = aggregate_step if weighting.needs_gradients else joint_step
    alternate_fn, evaluate = alternate_step, evaluate_split
    if distributed is not None:
        step_fn, alternate_fn = distributed.step, distributed.alternate_step
        evaluate = distributed.evaluate
    enabled = cfg.progress and sys.stderr.isatty() and (distributed is None or distributed.is_main)
    if isinstance(train, AlternateBatches):
        n_batches, n_rows = train.steps, train.rows_per_epoch
    else:
        n_batches, n_rows = train.num_batches(cfg.batch_size), len(train)
    device = next(model.parameters()).device

    def epoch_items() -> Iterator[tuple[str | None, Batch]]:
        if isinstance(train, AlternateBatches):
            yield from train.epoch()
        else:
            for batch in train.batches(cfg.batch_size, generator=generator):
                yield None, batch

    with _progress(enabled) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            handle = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=n_batches, info="")
            sums = torch.zeros(len(names), device=device)
            counts = torch.zeros(len(names), device=device)
            steps = 0
            start = time.perf_counter()
            for task, batch in epoch_items():
                if task is None:
                    losses = step_fn(model, weighting, tasks, optimizer, batch)
                else:
                    losses = alternate_fn(model, weighting, tasks, optimizer, batch, task)
                step += 1
                if not bool(torch.isfinite(losses).all()):
                    if cfg.on_nan == "skip":
                        result.skipped_batches += 1
                        continue
                    check_finite(losses, names, step, f" (epoch {epoch})")
                sums += losses
                if task is None:
                    counts += 1
                else:
                    counts[names.index(task)] += 1
                steps += 1
                if enabled and steps % 20 == 0:
                    bar.update(handle, completed=steps)
            elapsed = time.perf_counter() - start
            bar.update(handle, completed=n_batches)
            mean_losses = sums / counts.clamp(min=1)
            weighting.epoch_end(mean_losses)
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": dict(zip(names, mean_losses.tolist(), strict=True)),
                "train_samples_per_s": n_rows / elapsed if elapsed > 0 else math.inf,
                "lr": group_lrs(optimizer),
                **weighting.report(),
            }
            if result.skipped_batches:
                record["skipped_batches"] = result.skipped_batches
            if validation is not None:
                metrics = evaluate(model, tasks, validation, cfg.eval_batch_size)
                record["validation"] = metrics
                value = monitor_value(metrics, cfg.monitor)
                record["monitor"] = {cfg.monitor: value}
                improved = result.best_value is None or (
                    not math.isnan(value)
                    and (value > result.best_value if mode == "max" else value < result.best_value)
                )
                if improved:
                    result.best_value, result.best_epoch, bad_epochs = value, epoch, 0
                    if cfg.restore_best:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    bad_epochs += 1
                if scheduler is not None:
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(value if mode == "min" else -value)
                    else:
                        scheduler.step()
            elif scheduler is not None:
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(float(mean_losses.sum()))
                else:
                    scheduler.step()
            info = " ".join(f"{k}={v:.4f}" for k, v in record["train_loss"].items())
            if validation is not None:
                info += f" val {cfg.monitor}={record['monitor'][cfg.monitor]:.4f}"
            bar.update(handle, info=info)
            result.history.append(record)
            if on_epoch_end is not None:
                on_epoch_end(record)
            if steps == 0:
                raise TrainingError(
                    f"epoch {epoch}: every batch had a non-finite loss and was skipped"
                )
            if cfg.patience is not None and validation is not None and bad_epochs > cfg.patience:
                break
    if best_state is not None and result.best_epoch != len(result.history):
        model.load_state_dict(best_state)
    return result


def summarize(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
