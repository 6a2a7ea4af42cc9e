"""Task specs: what a task is, as plain data (no validation here; `polytask.config` validates
the run file and hands these down)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task. ``type`` names its entry in `polytask.tasks.TASK_TYPES`; ``label``
    is the label column (None: the task's name); ``positive`` the value that means 1 in a
    binary label; ``loss`` one of the type's losses (None: its default); ``inputs_from`` the
    tasks whose estimates feed this task's tower, ``detach`` whether that link stops the
    gradient."""

    type: str
    label: str | None = None
    positive: Any = None
    loss: str | None = None
    huber_delta: float = 1.0
    weight: float = 1.0
    inputs_from: tuple[str, ...] = ()
    detach: bool = True
    sample_weight: str | None = None
    """A column of non-negative row weights: the task's loss is the weighted mean over its
    labelled rows."""
    label_scaling: str = "auto"
    """``auto``: the type's own scaling of the label (`TaskType.fit_scaling`); ``none``."""
    label_shift: float = 0.0
    label_scale: float = 1.0
    """Fitted on the training labels (by the preprocessor): the network learns
    ``(label - label_shift) / label_scale``; outputs are mapped back for predictions and
    metrics."""
    layer: int | None = None
    """A per-token task of a sequence model: the encoder layer (1 = the first) whose output
    its tower reads; None: the last."""
    tags: tuple[str, ...] = ()
    """Fitted (by the sentence preprocessor): a tag task's tags by class index, which its
    chunk metrics read."""

    @classmethod
    def of(cls, task: Any) -> TaskSpec:
        """``task`` as a spec: a spec is returned as it is; any other object with the same
        attributes (the run file's validated ``TaskConfig``) is copied field by field."""
        if isinstance(task, TaskSpec):
            return task
        values = {f.name: getattr(task, f.name) for f in fields(cls) if hasattr(task, f.name)}
        values["inputs_from"] = tuple(values.get("inputs_from", ()))
        values["tags"] = tuple(values.get("tags", ()))
        return cls(**values)


WEIGHT_SUFFIX = "@weight"
"""A weighted task's row weights travel beside its labels under ``<task>@weight`` (a task
name cannot contain ``@``)."""


def weight_key(task: str) -> str:
    return task + WEIGHT_SUFFIX


def task_order(sources: Mapping[str, Sequence[str]]) -> list[str]:
    """Task names in an order where every source comes before its target; ``sources`` maps a
    task to its ``inputs_from``. A cycle is a ValueError that spells it out."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ValueError(f"tasks' inputs_from form a cycle: {cycle}")
        state[name] = 1
        for src in sources[name]:
            visit(src, [*path, name])
        state[name] = 2
        order.append(name)

    for name in sources:
        visit(name, [])
    return order
