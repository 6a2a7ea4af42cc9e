"""Optimizers from parameter groups, step/evaluation loops, and the epoch trainer."""

from polytask.training._aggregate import aggregate_step
from polytask.training.loops import (
    NonFiniteLossError,
    gate_statistics,
    joint_step,
    predict_outputs,
)
from polytask.training.optim import build_optimizer, build_scheduler, group_lrs
from polytask.training.trainer import FitResult, evaluate_split, fit_loop

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "aggregate_step",
    "build_optimizer",
    "build_scheduler",
    "evaluate_split",
    "fit_loop",
    "gate_statistics",
    "group_lrs",
    "joint_step",
    "predict_outputs",
]
