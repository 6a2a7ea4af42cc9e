"""A thin trainer: epochs, validation, early stopping, history and progress.

Everything it trains is handed in (model, weighting, optimizer); it only consumes them.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from polytask.data import EncodedData
from polytask.data.stream import SplitShard, StreamingBatches
from polytask.errors import TrainingError
from polytask.metrics import all_metrics, monitor_mode, monitor_value, undefined_in_mean
from polytask.models import MultiTaskNet
from polytask.tasks import TaskSpec
from polytask.training.loops import predict_outputs
from polytask.training.optim import group_lrs
from polytask.training.progress import EpochCallback, batch_bar, ensure_visible, epoch_line, logger
from polytask.training.schedules import JointBatches
from polytask.training.settings import TrainingConfig
from polytask.training.state import BatchSource, FitResult, LoopState
from polytask.training.step import LOCAL, TrainStep
from polytask.weighting import Weighting

if TYPE_CHECKING:
    from polytask.training.distributed import DistributedTraining


class Checkpoints(Protocol):
    """What `fit_loop` needs from a checkpoint writer (see `polytask.training.checkpoint`)."""

    every: int
    latest: Path | None

    def save(self, state: LoopState) -> None: ...


@dataclass
class StopRequest:
    requested: bool = False


@contextlib.contextmanager
def interruptible(enabled: bool = True) -> Iterator[StopRequest]:
    """Inside the block a first Ctrl-C (SIGINT) only sets ``requested``, so the loop can stop
    after the step in progress; a second one raises `KeyboardInterrupt` at once. Only in the
    main thread, and only where SIGINT has Python's default handler (an application's own
    handler is left alone); elsewhere ``requested`` stays False."""
    stop = StopRequest()
    if (
        not enabled
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate_split(
    model: MultiTaskNet,
    tasks: dict[str, TaskSpec],
    data: EncodedData,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Exact per-task metrics over the whole split."""
    outputs = predict_outputs(model, data, batch_size)
    labels = {name: v.cpu().numpy() for name, v in data.labels.items()}  # weights too
    return all_metrics(tasks, outputs, labels)


def _where(state: LoopState, n_batches: int, checkpoints: Checkpoints | None) -> str:
    """The position and the way back, for a non-finite loss's error message."""
    where = f" (epoch {state.epoch}, batch {state.position} of {n_batches})"
    if checkpoints is not None and checkpoints.latest is not None:
        where += f"; last good checkpoint: {checkpoints.latest}"
    else:
        where += "; no checkpoint (set training.checkpoint_every to keep one)"
    return where + "; training.on_nan: skip skips such batches instead"


def fit_loop(
    *,
    model: MultiTaskNet,
    weighting: Weighting,
    tasks: dict[str, TaskSpec],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train: EncodedData | StreamingBatches | BatchSource,
    validation: EncodedData | SplitShard | None,
    cfg: TrainingConfig,
    callbacks: Sequence[EpochCallback] = (),
    checkpoints: Checkpoints | None = None,
    start: LoopState | None = None,
    distributed: DistributedTraining | None = None,
) -> FitResult:
    """Train for ``cfg.epochs`` epochs (fewer with early stopping); return the history.

    ``train`` is one encoded or streamed split (joint training: every step on every task,
    shuffled with a generator seeded by ``cfg.seed``) or a batch source: `JointBatches` or
    `AlternateBatches` (one task per step, see `polytask.training.schedules`).

    With a validation split, each epoch's record holds its exact metrics and
    ``cfg.monitor`` picks the best epoch; with ``cfg.restore_best`` the model ends at that
    epoch's weights.

    Each batch is one `TrainStep`; a step that was not applied (a non-finite loss or
    update) is skipped with ``cfg.on_nan: skip`` and stops training otherwise, with an error
    that says where. The loop reads nothing from the device between steps.

    Ctrl-C (SIGINT) in one process stops after the step in progress: a checkpoint is written
    if checkpoints are on, the model is left at its best epoch's weights (as at the end) and
    the result says ``interrupted``. A second Ctrl-C interrupts at once.

    Each epoch's record goes to ``callbacks`` (rank 0 only under torchrun) and, with
    ``cfg.progress``, to the ``polytask`` logger as one line (`polytask.training.progress`).
    A callback with an ``on_step(step, losses, task)`` method also gets every step's task
    losses ``[K]`` (None for a skipped step; ``task`` for an alternate step), on the device:
    reading them is the callback's choice (`polytask.tracking.Tracker` reads one step in 50).

    ``checkpoints.save(state)`` runs every ``checkpoints.every`` steps; ``start`` is the state
    a checkpoint restored (the model, optimizer, ... and ``train`` already restored with it).

    With ``distributed`` (one rank of a torchrun job) every rank walks the same global batches
    and trains on its share of each; see `polytask.training.distributed`.
    """
    if isinstance(train, EncodedData | StreamingBatches):
        generator = torch.Generator().manual_seed(cfg.seed)
        train = JointBatches(train, batch_size=cfg.batch_size, generator=generator)
    loop = _Loop(
        model,
        weighting,
        tasks,
        optimizer,
        train,
        cfg,
        callbacks,
        checkpoints,
        start or LoopState(),
        distributed,
    )
    state, result = loop.state, loop.state.result
    if start is not None:
        loop.say_resumed()
    with interruptible(distributed is None) as stop:
        while state.epoch <= cfg.epochs and not result.interrupted:
            elapsed, began = loop.train_epoch(stop)
            if result.interrupted:
                break
            loop.end_epoch(elapsed, began, scheduler, validation)
            patience = cfg.patience
            if patience is not None and validation is not None and state.bad_epochs > patience:
                break
    result.stopped_at = (min(state.epoch, cfg.epochs), state.step)
    if distributed is not None:
        distributed.sync_buffers()  # the last steps left each rank its own batch-norm statistics
    if state.best_state is not None and (
        result.interrupted or result.best_epoch != len(result.history)
    ):
        model.load_state_dict(state.best_state)
    return result


@dataclass
class _Loop:
    """What one `fit_loop` call shares between its epochs: the step, the loop state, where
    records go, and who shows them."""

    model: MultiTaskNet
    weighting: Weighting
    tasks: dict[str, TaskSpec]
    optimizer: torch.optim.Optimizer
    train: BatchSource
    cfg: TrainingConfig
    callbacks: Sequence[EpochCallback]
    checkpoints: Checkpoints | None
    state: LoopState
    distributed: DistributedTraining | None

    def __post_init__(self) -> None:
        model, tasks, distributed = self.model, self.tasks, self.distributed
        self.names = list(tasks)
        self.index = {name: k for k, name in enumerate(self.names)}
        self.step = TrainStep(model, self.weighting, tasks, self.optimizer, distributed or LOCAL)
        self.main = distributed is None or distributed.is_main
        self.shown = self.cfg.progress and self.main
        hooks = [cb.on_step for cb in self.callbacks if hasattr(cb, "on_step")]
        self.step_hooks = hooks if self.main else []
        self.device = next(model.parameters()).device
        self.left_out: set[str] = set()  # tasks a mean.<metric> monitor left out (warned)
        if self.shown:
            ensure_visible()

    def say_resumed(self) -> None:
        if self.shown:
            state, checkpoints = self.state, self.checkpoints
            source = "" if checkpoints is None else f" from {checkpoints.latest}"
            logger.info(
                f"resumed{source} at step {state.step}: epoch {state.epoch}, "
                f"{state.position} of its {self.train.steps} batches done"
            )

    def train_epoch(self, stop: StopRequest) -> tuple[float, float]:
        """The steps of the current epoch from its position (a resumed epoch continues);
        returns the seconds it took and its start on the ``perf_counter`` clock."""
        state, result, cfg, checkpoints = self.state, self.state.result, self.cfg, self.checkpoints
        self.model.train()
        bar_at = (self.shown, f"epoch {state.epoch}/{cfg.epochs}", self.train.steps, state.position)
        with batch_bar(*bar_at) as advance_bar:
            if state.position == 0 or state.loss_sums is None or state.loss_counts is None:
                state.loss_sums = torch.zeros(len(self.names), device=self.device)
                state.loss_counts = torch.zeros(len(self.names), device=self.device)
                state.finite_steps = state.skipped_in_epoch = 0
                state.elapsed = 0.0
            sums, counts = state.loss_sums, state.loss_counts
            began = time.perf_counter() - state.elapsed
            for task, batch in self.train.epoch():
                # The step decides (one host read) whether its losses and update are finite;
                # nothing here reads the device.
                done = self.step(batch, task)
                state.step += 1
                state.position += 1
                for hook in self.step_hooks:  # each subsamples: a host read only when it logs
                    hook(state.step, done.losses if done.applied else None, task)
                if done.applied:
                    sums += done.losses
                    if task is None:
                        counts += 1
                    else:
                        counts[self.index[task]] += 1
                    state.finite_steps += 1
                elif cfg.on_nan == "skip":
                    state.skipped_in_epoch += 1
                    result.skipped_batches += 1
                else:
                    where = _where(state, self.train.steps, checkpoints)
                    raise TrainingError(f"{done.problem(self.names)} at step {state.step}{where}")
                saved = checkpoints is not None and state.step % checkpoints.every == 0
                if saved or stop.requested:
                    state.elapsed = time.perf_counter() - began
                    if checkpoints is not None:
                        checkpoints.save(state)
                if stop.requested:
                    result.interrupted = True
                    break
                if self.shown and state.position % 20 == 0:
                    advance_bar(state.position)
            return time.perf_counter() - began, began

    def end_epoch(
        self,
        elapsed: float,
        began: float,
        scheduler: Any,
        validation: EncodedData | SplitShard | None,
    ) -> None:
        """The epoch's record (losses, throughput, validation and monitor), the best epoch,
        the scheduler's step; the record goes to the log and the callbacks."""
        state, result, cfg = self.state, self.state.result, self.cfg
        assert state.loss_sums is not None and state.loss_counts is not None
        mean_losses = state.loss_sums / state.loss_counts.clamp(min=1)
        self.weighting.epoch_end(mean_losses)
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "train_loss": dict(zip(self.names, mean_losses.tolist(), strict=True)),
            "train_samples_per_s": self.train.rows_per_epoch / elapsed if elapsed > 0 else math.inf,
            "lr": group_lrs(self.optimizer),
            **self.weighting.report(),
        }
        if state.skipped_in_epoch:
            record["skipped_batches"] = state.skipped_in_epoch
        plateau: float | None = None  # what ReduceLROnPlateau minimises
        if validation is not None:
            plateau = self._validate(record, validation)
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                # The monitor, else the summed mean training loss.
                scheduler.step(float(mean_losses.sum()) if plateau is None else plateau)
            else:
                scheduler.step()
        record["seconds"] = time.perf_counter() - began
        result.history.append(record)
        if self.shown:
            logger.info(epoch_line(record, cfg.epochs))
        if self.main:
            for callback in self.callbacks:
                callback(record)
        if state.finite_steps == 0:
            raise TrainingError(
                f"epoch {state.epoch}: every batch had a non-finite loss or update and was skipped"
            )
        state.epoch, state.position = state.epoch + 1, 0

    def _validate(self, record: dict[str, Any], validation: EncodedData | SplitShard) -> float:
        """Validation metrics and the monitor into ``record``; tracks the best epoch. Returns
        the monitor as a value to minimise. A `SplitShard` (torchrun: each rank holds its
        part of the validation set) is evaluated by the process group."""
        state, result, cfg = self.state, self.state.result, self.cfg
        if self.distributed is not None:
            metrics = self.distributed.evaluate(
                self.model, self.tasks, validation, cfg.eval_batch_size
            )
        else:
            assert isinstance(validation, EncodedData)
            metrics = evaluate_split(self.model, self.tasks, validation, cfg.eval_batch_size)
        record["validation"] = metrics
        value = monitor_value(metrics, cfg.monitor)
        for t, why in undefined_in_mean(metrics, cfg.monitor).items():
            if self.main and t not in self.left_out:  # once per task and fit
                self.left_out.add(t)
                warnings.warn(
                    f"training.monitor {cfg.monitor}: task {t!r} is left out of the mean, its "
                    f"metric is undefined on the validation split ({why})",
                    stacklevel=4,
                )
        record["monitor"] = {cfg.monitor: value}
        mode, best = monitor_mode(cfg.monitor), result.best_value
        # The first epoch is the best so far whatever its value; a NaN best (e.g. an AUC over
        # one class) is no best: any later finite value improves on it.
        improved = best is None or (
            not math.isnan(value)
            and (math.isnan(best) or (value > best if mode == "max" else value < best))
        )
        if improved:
            result.best_value, result.best_epoch, state.bad_epochs = value, state.epoch, 0
            if cfg.restore_best:
                state.best_state = copy.deepcopy(self.model.state_dict())
        else:
            state.bad_epochs += 1
        return value if mode == "min" else -value
