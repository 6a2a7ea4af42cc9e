"""What a loss weighting is: a small module mapping the vector of task losses to one scalar.

A weighting never calls ``backward()`` or steps an optimizer; learnable weightings expose
their parameters (optimized in the ``weighting`` group) and report what they learned for the
training history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from polytask.config import TaskConfig


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Weighting(nn.Module):
    """Base: ``forward(losses [K]) -> scalar``. Tasks are in the order of the ``tasks`` map."""

    needs_gradients: ClassVar[bool] = False

    def __init__(self, *, tasks: Mapping[str, TaskConfig]) -> None:
        super().__init__()
        self.task_names = list(tasks)

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


@dataclass(frozen=True)
class WeightingEntry:
    params: type[BaseModel]
    build: Any  # Callable[..., Weighting]
