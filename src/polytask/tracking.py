"""What a training run records as it goes: per-task best epochs, and the loggers of
``training.loggers`` (``csv``, ``tensorboard``, ``mlflow``).

Every epoch's record (`polytask.training.progress.EpochRecord`) becomes a flat set of scalars
(`scalars`): each task's training loss and validation metrics, the monitor, the learning rate
of each parameter group, the weighting's task weights or sigmas, the entropy of each gate's
mean weight over the validation split (at most `GATE_ROWS` rows), the throughput and the
epoch's seconds. `Tracker` is the fit callback that computes the gate entropies and hands the
scalars to each logger; ``polytask train`` builds it from the run file.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polytask._atomic import atomic_write_text
from polytask.errors import ConfigError, MissingExtraError, install_hint
from polytask.metrics import HIGHER_IS_BETTER
from polytask.tasks import TaskSpec, task_type
from polytask.training.checkpoint import flatten

BEST_EPOCH_GAP = 2
"""``polytask train`` says so when a task's best validation epoch is more than this many
epochs from the monitor's."""

STEP_EVERY = 50
"""Task losses are logged every this many training steps (``step/loss/<task>``)."""

GATE_ROWS = 8192
"""Gate entropies per epoch are measured on at most this many validation rows."""


# ------------------------------------------------------------------------------ best epochs
def task_monitor_metrics(tasks: Mapping[str, Any], monitor: str) -> dict[str, str]:
    """The metric each task's own best epoch is judged by: the monitor's metric (``auc`` of
    ``mean.auc`` or ``income.auc``, ``loss`` of ``loss``) where the task reports it, else its
    type's primary one (AUC, RMSE, accuracy). ``tasks``: task specs or the run file's tasks."""
    metric = monitor.rpartition(".")[2]
    out = {}
    for name, task in tasks.items():
        kind = task_type(TaskSpec.of(task))
        out[name] = metric if metric in kind.metrics else kind.primary_metric
    return out


def _improves(metric: str, value: float, best: float | None) -> bool:
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if HIGHER_IS_BETTER.get(metric, False) else value < best


def task_best_epochs(
    history: Sequence[Mapping[str, Any]], tasks: Mapping[str, Any], monitor: str
) -> dict[str, dict[str, Any]]:
    """``{task: {"metric", "epoch", "value"}}``: each task's best validation epoch (the first
    of equal values; NaN never counts) over ``history``; empty without validation."""
    metrics = task_monitor_metrics(tasks, monitor)
    best: dict[str, dict[str, Any]] = {}
    for record in history:
        validation = record.get("validation")
        if not validation:
            continue
        for task, metric in metrics.items():
            value = validation.get(task, {}).get(metric)
            if value is None:
                continue
            current = best.get(task)
            if _improves(metric, float(value), None if current is None else current["value"]):
                best[task] = {"metric": metric, "epoch": record["epoch"], "value": float(value)}
    return best


def annotate_history(
    history: Sequence[dict[str, Any]], tasks: Mapping[str, Any], monitor: str
) -> None:
    """Add ``task_best`` to each record with validation: every task's best epoch and value
    up to that epoch, next to the record's ``monitor``."""
    for i, record in enumerate(history):
        if record.get("validation"):
            record["task_best"] = task_best_epochs(history[: i + 1], tasks, monitor)


def epochs_apart(
    best: Mapping[str, Mapping[str, Any]],
    monitor: str,
    monitor_epoch: int | None,
    gap: int = BEST_EPOCH_GAP,
) -> str | None:
    """A sentence when some task's best epoch is more than ``gap`` epochs from the monitor's
    best epoch, else None."""
    if monitor_epoch is None or all(abs(b["epoch"] - monitor_epoch) <= gap for b in best.values()):
        return None  # all() of no tasks is True
    peaks = ", ".join(
        f"{t} at {b['epoch']} ({b['metric']} {b['value']:.4f})" for t, b in best.items()
    )
    return (
        f"tasks peaked at different epochs: {peaks}; the monitor {monitor} at {monitor_epoch} "
        f"(more than {gap} epochs apart). The model kept is the monitor's best epoch; "
        "see task_best_epochs in metrics.json"
    )


# ------------------------------------------------------------------------------ scalars
def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """One epoch's record as flat ``name -> value`` scalars (names with ``/``)."""
    out: dict[str, float | None] = {}
    for task, value in record.get("train_loss", {}).items():
        out[f"train/loss/{task}"] = value
    for task, metrics in record.get("validation", {}).items():
        for metric, value in metrics.items():
            if metric != "count":
                out[f"validation/{task}/{metric}"] = value
    for name, value in record.get("monitor", {}).items():
        out[f"monitor/{name}"] = value
    for group, lr in record.get("lr", {}).items():
        out[f"lr/{group}"] = lr
    for key, value in record.items():
        head, _, task = key.partition(".")
        if head in ("weight", "sigma") and task and isinstance(value, int | float):
            out[f"weighting/{head}/{task}"] = float(value)
    for gate, entropy in record.get("gate_entropy", {}).items():
        out[f"gates/entropy/{gate}"] = entropy
    out["throughput/train_samples_per_s"] = record.get("train_samples_per_s")  # None: left out
    out["time/epoch_seconds"] = record.get("seconds")
    if record.get("skipped_batches"):
        out["train/skipped_batches"] = float(record["skipped_batches"])
    return {k: float(v) for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------ loggers
def _csv_text(rows: Sequence[Mapping[str, float]], index: str) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(v) if k == index else repr(v)) for k, v in row.items()})
    return buf.getvalue()


class CSVLogger:
    """``history.csv``: one row per epoch, one column per scalar, rewritten atomically each
    epoch; ``steps.csv`` beside it: the task losses of every `STEP_EVERY`-th step."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self.step_rows: list[dict[str, float]] = []

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        self.rows.append({"epoch": float(epoch), **values})
        self._write()

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        """Kept in memory; written to ``steps.csv`` beside the history with each epoch."""
        self.step_rows.append({"step": float(step), **values})

    def rewrite(self, history: Sequence[Mapping[str, Any]]) -> None:
        """The whole history (a resumed fit's earlier epochs included)."""
        self.rows = [{"epoch": float(r["epoch"]), **scalars(r)} for r in history]
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, _csv_text(self.rows, "epoch"))
        if self.step_rows:
            atomic_write_text(self.path.with_name("steps.csv"), _csv_text(self.step_rows, "step"))

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Event files under ``logdir`` via `torch.utils.tensorboard` (the extra
    ``tensorboard``): one scalar series per name, the epoch as the step."""

    def __init__(self, logdir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MissingExtraError(
                "training.loggers: tensorboard needs the tensorboard package: "
                + install_hint("tensorboard")
            ) from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        self.log_step(epoch, values)
        self.writer.flush()

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """An MLflow run (tracking URI and experiment from ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_EXPERIMENT_NAME`` as MLflow reads them; the experiment defaults to
    ``polytask``): the run's settings as parameters, every scalar per epoch, and at the end
    the final metrics, the run file and the model folder as artifacts."""

    def __init__(self, params: Mapping[str, Any], run_name: str | None = None) -> None:
        try:
            import mlflow
        except ImportError:
            raise MissingExtraError(
                f"training.loggers: mlflow needs the mlflow package: {install_hint('mlflow')}"
            ) from None
        self.mlflow = mlflow
        try:
            if not os.environ.get("MLFLOW_EXPERIMENT_NAME") and not os.environ.get(
                "MLFLOW_EXPERIMENT_ID"
            ):
                mlflow.set_experiment("polytask")
            self.run = mlflow.start_run(run_name=run_name)
        except mlflow.exceptions.MlflowException as err:
            uri = mlflow.get_tracking_uri()
            raise ConfigError(
                f"training.loggers: mlflow cannot start a run at tracking URI {uri!r}: "
                f"{str(err).split('. ')[0]}"
            ) from None
        items = [(k, str(v)[:250]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[i : i + 100]))

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        self.mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=epoch)

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        self.mlflow.log_metrics(dict(values), step=step)

    def finish(
        self, metrics: Mapping[str, Any], files: Sequence[Path], folders: Sequence[Path]
    ) -> None:
        final: dict[str, float] = {}
        for split in ("test", "validation"):
            for task, values in metrics.get(split, {}).items():
                for metric, value in values.items():
                    if metric != "count" and value is not None and math.isfinite(value):
                        final[f"final/{split}/{task}/{metric}"] = float(value)
        if final:
            self.mlflow.log_metrics(final)
        for path in files:
            if path.is_file():
                self.mlflow.log_artifact(str(path))
        for folder in folders:
            if folder.is_dir():
                self.mlflow.log_artifacts(str(folder), artifact_path=folder.name)

    def close(self, failed: bool = False) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


class Tracker:
    """The fit callback behind ``training.loggers``: for each epoch's record it measures the
    gate entropies (once `bind` has given it the network and the validation split), stores
    them in the record as ``gate_entropy`` and sends `scalars` to every logger."""

    def __init__(
        self, loggers: Sequence[Any], eval_batch_size: int = 8192, step_every: int = STEP_EVERY
    ) -> None:
        self.loggers = list(loggers)
        self.eval_batch_size = eval_batch_size
        self.step_every = step_every
        self._network: Any = None
        self._gate_data: Any = None
        self._task_names: list[str] = []

    def bind(self, network: Any, validation: Any) -> None:
        """Called by `MultiTaskModel.fit` before the first epoch."""
        self._network = network
        self._task_names = list(network.task_names)
        if validation is not None:
            self._gate_data = validation.select(slice(0, GATE_ROWS))

    def on_step(self, step: int, losses: Any, task: str | None) -> None:
        """Every `STEP_EVERY`-th applied step: its task losses (an alternate step: its
        task's only), one host read."""
        if losses is None or step % self.step_every or not self.loggers:
            return
        values = losses.tolist()
        names = self._task_names or [str(k) for k in range(len(values))]
        logged = {
            f"step/loss/{name}": float(v)
            for name, v in zip(names, values, strict=True)
            if task is None or name == task
        }
        for logger in self.loggers:
            logger.log_step(step, logged)

    def __call__(self, record: dict[str, Any]) -> None:
        if self._network is not None and self._gate_data is not None:
            from polytask.training import gate_statistics

            stats = gate_statistics(self._network, self._gate_data, self.eval_batch_size)
            if stats:
                record["gate_entropy"] = {g: s["entropy"] for g, s in stats.items()}
            else:  # a model without gates
                self._gate_data = None
        values = scalars(record)
        for logger in self.loggers:
            logger.log_epoch(int(record["epoch"]), values)

    def finish(
        self,
        history: Sequence[Mapping[str, Any]],
        metrics: Mapping[str, Any],
        files: Sequence[Path] = (),
        folders: Sequence[Path] = (),
    ) -> None:
        """After the run: the CSV gets the whole history, MLflow the final metrics and the
        artifacts."""
        for logger in self.loggers:
            if isinstance(logger, CSVLogger):
                logger.rewrite(history)
            elif isinstance(logger, MLflowLogger):
                logger.finish(metrics, files, folders)

    def close(self, failed: bool = False) -> None:
        for logger in self.loggers:
            if isinstance(logger, MLflowLogger):
                logger.close(failed=failed)
            else:
                logger.close()


def build_tracker(
    names: Sequence[str],
    out: Path,
    *,
    params: Mapping[str, Any],
    eval_batch_size: int = 8192,
    run_name: str | None = None,
) -> Tracker:
    """The loggers ``names`` (``training.loggers``) of a run writing to ``out``: ``csv`` to
    ``out/history.csv``, ``tensorboard`` to ``out/tensorboard/``, ``mlflow`` to the MLflow
    tracking URI. A missing package is a `MissingExtraError` before anything trains."""
    loggers: list[Any] = []
    try:
        # MLflow first: it is the one that may refuse to start (a bad tracking URI)
        for name in sorted(names, key=lambda n: n != "mlflow"):
            if name == "csv":
                loggers.append(CSVLogger(out / "history.csv"))
            elif name == "tensorboard":
                loggers.append(TensorBoardLogger(out / "tensorboard"))
            elif name == "mlflow":
                loggers.append(MLflowLogger(params, run_name=run_name))
    except BaseException:
        Tracker(loggers).close(failed=True)
        raise
    return Tracker(loggers, eval_batch_size=eval_batch_size)
