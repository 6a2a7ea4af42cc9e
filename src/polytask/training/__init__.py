"""Optimizers from parameter groups, the training step, evaluation loops, the epoch trainer."""

from polytask.training.loops import gate_statistics, predict_outputs
from polytask.training.optim import build_optimizer, build_scheduler, group_lrs
from polytask.training.state import FitResult, LoopState
from polytask.training.step import StepResult, TrainStep
from polytask.training.trainer import evaluate_split, fit_loop

__all__ = [
    "FitResult",
    "LoopState",
    "StepResult",
    "TrainStep",
    "build_optimizer",
    "build_scheduler",
    "evaluate_split",
    "fit_loop",
    "gate_statistics",
    "group_lrs",
    "predict_outputs",
]
