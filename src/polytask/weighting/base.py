"""What a loss weighting is: a small module mapping the vector of task losses to one scalar.

A weighting never calls ``backward()`` or steps an optimizer; learnable weightings expose
their parameters (optimized in the ``weighting`` group) and report what they learned for the
training history. Weightings that need per-task gradients (`GradientWeighting`) get them
from the training step, which owns every backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from polytask.tasks import TaskSpec


class NoParams(BaseModel):
    """No parameters; also the base of every weighting's parameters (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")


class Weighting(nn.Module):
    """Base: ``forward(losses [K]) -> scalar``. Tasks are in the order of the ``tasks`` map."""

    def __init__(self, *, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__()
        self.task_names = list(tasks)
        self.task_index = {name: k for k, name in enumerate(self.task_names)}
        """Each task's position ``k`` (in `single`, and in the losses ``[K]``)."""
        self.name = type(self).__name__
        """What messages call it (a preset names its registry entry)."""

    def forward(self, losses: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def single(self, k: int, loss: Tensor) -> Tensor:
        """The objective for a step that trains task ``k`` alone (alternate training). It may
        only touch task ``k``'s own weighting parameters."""
        raise NotImplementedError(
            f"weighting {type(self).__name__} combines tasks within a step and cannot be used "
            "with training.schedule: alternate; use sum, weighted or uncertainty"
        )

    def epoch_end(self, mean_losses: Tensor) -> None:
        """Called once per epoch with the epoch's mean task losses ``[K]`` (for DWA-style
        methods); most weightings ignore it."""

    def report(self) -> dict[str, float]:
        """Learned quantities for the history, e.g. ``{"sigma.income": 0.8}``."""
        return {}

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Non-parameter state (e.g. loss history) that resuming must restore."""
        return {}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        pass


class GradientUpdate(NamedTuple):
    """What a `GradientWeighting` makes of the losses and their Jacobian."""

    direction: Tensor
    """``[n]``: the ``.grad`` of the ``jacobian_on`` parameters, flattened and concatenated."""
    objective: Tensor
    """Scalar whose gradient is the ``.grad`` of every other parameter: the rest of the model
    and the weighting's own parameters."""


class GradientWeighting(Weighting):
    """A weighting whose update needs per-task gradients, not only the losses.

    The training step (`polytask.training.TrainStep`) keeps every backward pass and the
    optimizer step. It computes the Jacobian ``J [K, n]`` of the task losses with respect to
    the parameters ``jacobian_on`` names (``"shared"``: every parameter outside the towers;
    ``"last_shared"``: the model's last shared layer), calls `combine`, writes the returned
    direction into those parameters' ``.grad``, backpropagates the returned objective into all
    other parameters, steps the optimizer and calls `after_step`.
    """

    jacobian_on: ClassVar[Literal["shared", "last_shared"]] = "shared"

    def forward(self, losses: Tensor) -> Tensor:
        raise RuntimeError(
            f"{type(self).__name__} needs per-task gradients, not only losses: train with "
            "polytask.training.TrainStep, which combines per-task gradients for a "
            "GradientWeighting"
        )

    def combine(self, losses: Tensor, jacobian: Tensor) -> GradientUpdate:
        """``losses [K]`` (attached to the graph) and ``jacobian [K, n]`` (detached; row k is
        the gradient of task k's loss) -> the update."""
        raise NotImplementedError  # pragma: no cover - abstract

    def after_step(self) -> None:
        """Called after each optimizer step, e.g. to project learned weights back onto their
        constraint set."""


@dataclass(frozen=True)
class WeightingEntry:
    params: type[BaseModel]
    build: Callable[..., Weighting]
    """Called as ``build(tasks=..., params=...)``: a `Weighting` subclass or a preset function.
    For a class the config tells from its ``single`` (without building one) whether it mixes
    tasks within a step; a function (the gradient aggregators) always does."""
