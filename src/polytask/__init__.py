"""polytask: multi-task learning for tabular data in PyTorch.

The heavy names (`MultiTaskModel` pulls in torch, pandas and scikit-learn; the config
classes pull in pydantic) are imported on first use, so ``polytask --version`` and
``polytask --help`` start without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polytask._version import __version__
from polytask.errors import (
    ConfigError,
    DataError,
    MissingExtraError,
    ModelFileError,
    NotFittedError,
    OutputError,
    PolytaskError,
    TrainingError,
)

if TYPE_CHECKING:
    from polytask.config import EstimatorConfig, RunConfig, load_run_file
    from polytask.estimator import MultiTaskModel

_LAZY = {
    "EstimatorConfig": "polytask.config",
    "RunConfig": "polytask.config",
    "load_run_file": "polytask.config",
    "MultiTaskModel": "polytask.estimator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polytask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConfigError",
    "DataError",
    "EstimatorConfig",
    "MissingExtraError",
    "ModelFileError",
    "MultiTaskModel",
    "NotFittedError",
    "OutputError",
    "PolytaskError",
    "RunConfig",
    "TrainingError",
    "__version__",
    "load_run_file",
]
