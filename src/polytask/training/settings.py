"""The ``optimizer`` and ``training`` sections: how the network is trained.

Validated here, beside the training code that reads them; `polytask.config` composes them
into the run-file schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from polytask._schema import Strict
from polytask.data.stream import StreamConfig

LoggerName = Literal["csv", "tensorboard", "mlflow"]


class SchedulerConfig(Strict):
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["cosine", "step", "plateau"]
    step_size: int = Field(default=1, ge=1)
    gamma: float = Field(default=0.5, gt=0)
    patience: int = Field(default=1, ge=0)
    min_lr: float = Field(default=0.0, ge=0)


class OptimizerConfig(Strict):
    """Optimizer with one learning rate per parameter group.

    ``group_lr``/``group_weight_decay`` are keyed by group names or glob patterns
    (``shared``, ``experts``, ``gates``, ``towers.ctr``, ``towers.*``, ``weighting``); the
    first matching pattern wins, in the order written.
    """

    name: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    lr: float = Field(default=1e-3, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.0, ge=0)
    group_lr: dict[str, float] = Field(default_factory=dict)
    group_weight_decay: dict[str, float] = Field(default_factory=dict)
    scheduler: SchedulerConfig | None = None


class TrainingConfig(Strict):
    """Epochs, batching, early stopping and reproducibility."""

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    eval_batch_size: int = Field(default=8192, ge=1)
    seed: int = 0
    schedule: Literal["joint", "alternate"] = "joint"
    task_sampling: Literal["uniform", "proportional", "round_robin"] = "proportional"
    monitor: str = "loss"
    patience: int | None = Field(default=None, ge=0)
    restore_best: bool = True
    progress: bool = True
    device: str = "cpu"
    num_threads: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)
    on_nan: Literal["raise", "skip"] = "raise"
    compile: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    stream: StreamConfig | None = None
    loggers: list[LoggerName] = Field(default_factory=lambda: list[LoggerName](["csv"]))
    """What ``polytask train`` records per epoch besides history.json (`polytask.tracking`)."""
