"""Optimizer built from the model's named parameter groups, one learning rate per group.

``group_lr`` / ``group_weight_decay`` map group names or glob patterns (``towers.*``) to
values; the first pattern that matches a group wins. A pattern that matches no group is an
error listing the groups, so a typo never silently leaves a rate at its default.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from polytask.errors import ConfigError
from polytask.training.settings import OptimizerConfig

_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


def _lookup(patterns: Mapping[str, float], group: str, default: float) -> float:
    """The value of the first pattern that matches ``group``, else ``default``."""
    matches = (v for pattern, v in patterns.items() if fnmatch.fnmatchcase(group, pattern))
    return next(matches, default)


def _check_patterns(patterns: Mapping[str, float], groups: list[str], key: str) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(g, pattern) for g in groups):
            raise ConfigError(
                f"optimizer.{key}: pattern {pattern!r} matches no parameter group; "
                f"the groups are {groups}"
            )


def build_optimizer(
    groups: Mapping[str, list[nn.Parameter]], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    """One optimizer param group per named group, each tagged with its ``name``."""
    names = list(groups)
    _check_patterns(cfg.group_lr, names, "group_lr")
    _check_patterns(cfg.group_weight_decay, names, "group_weight_decay")
    param_groups = [
        {
            "params": params,
            "name": name,
            "lr": _lookup(cfg.group_lr, name, cfg.lr),
            "weight_decay": _lookup(cfg.group_weight_decay, name, cfg.weight_decay),
        }
        for name, params in groups.items()
    ]
    kwargs: dict[str, Any] = {"lr": cfg.lr}
    if cfg.name == "sgd":
        kwargs["momentum"] = cfg.momentum
    if cfg.name in {"adam", "adamw"}:
        # One fused kernel per parameter group: on CPU the foreach path falls back to a loop
        # of small ops, and this step took 0.3 ms instead of 0.9 ms (MMoE 8x[128, 64], five
        # groups; docs/performance.md).
        kwargs["fused"] = True
    return _OPTIMIZERS[cfg.name](param_groups, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, epochs: int) -> Any:
    """Epoch-level learning-rate scheduler, or None."""
    s = cfg.scheduler
    if s is None:
        return None
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=s.min_lr)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=s.gamma, patience=s.patience, min_lr=s.min_lr
    )


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Current learning rate of each named group."""
    return {g["name"]: float(g["lr"]) for g in optimizer.param_groups}
