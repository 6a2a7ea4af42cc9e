"""polytask: multi-task learning for tabular data in PyTorch."""

from polytask._version import __version__
from polytask.config import EstimatorConfig, RunConfig, load_run_file
from polytask.errors import (
    ConfigError,
    DataError,
    MissingExtraError,
    ModelFileError,
    NotFittedError,
    PolytaskError,
    TrainingError,
)
from polytask.estimator import MultiTaskModel

__all__ = [
    "ConfigError",
    "DataError",
    "EstimatorConfig",
    "MissingExtraError",
    "ModelFileError",
    "MultiTaskModel",
    "NotFittedError",
    "PolytaskError",
    "RunConfig",
    "TrainingError",
    "__version__",
    "load_run_file",
]
