"""Random loss weighting (RLW).

Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022 (arXiv:2111.10603): at every step draw
``lambda = softmax(z)``, ``z ~ N(0, I_K)``, and minimise ``sum_k lambda_k L_k``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor
from torchjd.scalarization import Random

from polytask.config import TaskConfig
from polytask.weighting.base import NoParams, Weighting


class RLW(Weighting):
    """``sum_k lambda_k L_k`` with ``lambda ~ softmax(N(0, I))`` redrawn every step (Lin et al.,
    TMLR 2022), via torchjd's ``Random`` scalarizer.

    The draws come from torch's global generator, which `MultiTaskModel.fit` seeds with
    ``training.seed``: the same seed gives the same weights. The weights sum to 1, so the
    total is on the scale of the mean loss. Nothing is reported: each step's weights are noise
    by design.
    """

    def __init__(self, *, tasks: Mapping[str, TaskConfig], params: NoParams) -> None:
        super().__init__(tasks=tasks)
        self.scalarizer = Random()

    def forward(self, losses: Tensor) -> Tensor:
        total: Tensor = self.scalarizer(losses)
        return total
