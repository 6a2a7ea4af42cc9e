"""Dynamic Weight Average.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019:

    lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T),  w_k(t-1) = L_k(t-1) / L_k(t-2)

with ``L_k`` the epoch-mean loss of task k and ``T = 2``; every weight is 1 for the first two
epochs. The weights sum to K, so the total has the scale of the plain sum.

torchjd has this as ``torchjd.scalarization.DWA``, but that scalarizer averages the losses it is
called with itself (batches our step then skips as non-finite included) and keeps its history
and weights in private attributes, which history reports and checkpoints would have to reach
into. The trainer already hands the epoch means to `epoch_end`, so the rule is written out here;
a test checks it against torchjd's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from polytask.tasks import TaskSpec
from polytask.weighting.base import NoParams, Weighting


class DWAParams(NoParams):
    temperature: float = Field(
        default=2.0, gt=0, description="T: larger spreads the weights less (paper: 2)"
    )


class DWA(Weighting):
    """``sum_k lambda_k L_k`` with ``lambda`` from the last two epochs' mean losses (Liu et al.,
    CVPR 2019). A task whose loss fell more slowly gets more weight.

    `report` gives ``weight.<task>``: the weights in force now, i.e. after `epoch_end`, those of
    the next epoch."""

    weights: Tensor

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: DWAParams) -> None:
        super().__init__(tasks=tasks)
        self.temperature = params.temperature
        self._history: list[list[float]] = []  # mean losses of the last (up to) two epochs
        # Not persistent: derived from the history, which resuming restores.
        self.register_buffer("weights", torch.ones(len(tasks)), persistent=False)

    def forward(self, losses: Tensor) -> Tensor:
        return (self.weights * losses).sum()

    def epoch_end(self, mean_losses: Tensor) -> None:
        self._history = [*self._history, mean_losses.detach().cpu().tolist()][-2:]
        self._update_weights()

    def _update_weights(self) -> None:
        k = len(self.task_names)
        if len(self._history) < 2:
            weights = torch.ones(k)
        else:
            older, newer = (torch.tensor(h, dtype=torch.float64) for h in self._history)
            # A task with zero loss two epochs ago (no labelled row) has no rate: treat it as
            # steady (1) rather than dividing by zero.
            rates = torch.where(older > 0, newer / older.clamp_min(1e-300), 1.0)
            weights = k * torch.softmax(rates / self.temperature, dim=0)
        self.weights.copy_(weights.to(self.weights.dtype))

    def report(self) -> dict[str, float]:
        values = self.weights.tolist()
        return {f"weight.{n}": w for n, w in zip(self.task_names, values, strict=True)}

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self._history]}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        history = [[float(v) for v in h] for h in state.get("history", [])]
        bad = [h for h in history if len(h) != len(self.task_names)]
        if bad or len(history) > 2:
            raise ValueError(
                f"DWA checkpoint: expected at most 2 epochs of {len(self.task_names)} mean "
                f"losses, found {history}"
            )
        self._history = history
        self._update_weights()
