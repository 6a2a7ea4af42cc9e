"""What a task is: plain task specs and one registry of task types.

A new task type is one module defining a `TaskType` subclass plus one line in `TASK_TYPES`;
the data, loss, metric, model, weighting and estimator layers ask the type for everything
that depends on it.
"""

from __future__ import annotations

from polytask.tasks._binary import Binary
from polytask.tasks._count import Count
from polytask.tasks._multiclass import Multiclass
from polytask.tasks._regression import Regression
from polytask.tasks._tag import Tag
from polytask.tasks.base import TaskType, log_softmax, sigmoid, softmax
from polytask.tasks.spec import WEIGHT_SUFFIX, TaskSpec, task_order, weight_key

TASK_TYPES: dict[str, TaskType] = {
    "binary": Binary(),
    "regression": Regression(),
    "multiclass": Multiclass(),
    "count": Count(),
    "tag": Tag(),
}


def task_type(spec: TaskSpec | str) -> TaskType:
    """The type of a spec (or of a type name)."""
    return TASK_TYPES[spec if isinstance(spec, str) else spec.type]


__all__ = [
    "TASK_TYPES",
    "WEIGHT_SUFFIX",
    "TaskSpec",
    "TaskType",
    "log_softmax",
    "sigmoid",
    "softmax",
    "task_order",
    "task_type",
    "weight_key",
]
