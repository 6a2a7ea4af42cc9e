"""Random loss weighting (RLW).

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022 (arXiv:2111.10603): at every step draw
``lambda = softmax(z)``, ``z ~ N(0, I_K)``, and minimise ``sum_k lambda_k L_k``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polytask.tasks import TaskSpec
from polytask.weighting.base import NoParams, Weighting

_MIX = 0x9E3779B97F4A7C15  # decorrelates the draws from the weight initialisation's stream


def own_seed() -> int:
    """A seed for a weighting's own generator, derived from torch's global seed (which
    `MultiTaskModel.fit` sets to ``training.seed``): the same on every process of a run."""
    return (torch.initial_seed() ^ _MIX) % 2**63


class RLW(Weighting):
    """``sum_k lambda_k L_k`` with ``lambda = softmax(z)``, ``z ~ N(0, I)`` redrawn every step
    (Lin et al., TMLR 2022).

    The draws come from the weighting's own CPU generator, seeded from ``training.seed``: the
    same seed gives the same weights, and the draws do not depend on what else (dropout) has
    consumed torch's global generator, so every process of a torchrun job draws the same
    weights even when their shares of a batch differ in size. The generator's state is part
    of a checkpoint. The weights sum to 1, so the total is on the scale of the mean loss.
    Nothing is reported: each step's weights are noise by design.
    """

    def __init__(self, *, tasks: Mapping[str, TaskSpec], params: NoParams) -> None:
        super().__init__(tasks=tasks)
        self.generator = torch.Generator().manual_seed(own_seed())

    def forward(self, losses: Tensor) -> Tensor:
        z = torch.randn(losses.shape[0], generator=self.generator)
        weights = torch.softmax(z, dim=0).to(losses.device, losses.dtype, non_blocking=True)
        return (weights * losses).sum()

    def state_for_checkpoint(self) -> dict[str, Any]:
        state = self.generator.get_state().numpy().tobytes()
        return {"generator": base64.b64encode(state).decode("ascii")}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if "generator" in state:
            raw = np.frombuffer(base64.b64decode(state["generator"]), dtype=np.uint8)
            self.generator.set_state(torch.from_numpy(raw.copy()))
