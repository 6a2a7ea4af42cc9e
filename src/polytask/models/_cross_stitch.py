"""Cross-stitch networks: one network per task, linearly mixed after every layer.

Misra, Shrivastava, Gupta, Hebert, "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
After each layer the activations of the task networks are recombined by a learned matrix,
``x~_k = sum_j alpha_kj x_j`` (for two tasks, ``[x~_A; x~_B] = [[a_AA, a_AB], [a_BA, a_BB]]
[x_A; x_B]``); the paper initialises the units as convex combinations, ``alpha_S = 0.9`` on
a task's own network and ``alpha_D = 0.1`` across, which worked best in its sec. 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams, experts_with
from polytask.nn import ExpertBank, FeatureInput


class CrossStitchParams(TowerParams):
    column_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    self_weight: float = Field(default=0.9, ge=0, le=1)


class CrossStitch(MultiTaskNet):
    """Cross-stitch networks (Misra et al., CVPR 2016) over MLP columns.

    Each task has a column, an MLP of ``column_units``; after every layer a cross-stitch unit,
    a ``K x K`` matrix per layer, mixes the K columns' activations, and task k's tower reads
    its column's last mixed output. A layer of every column runs as one batched op
    (`ExpertBank.stacked`) and a stitch as one matmul. The units start at ``self_weight``
    (0.9, the paper's ``alpha_S``) on the diagonal and ``(1 - self_weight) / (K - 1)`` off
    it (the paper's ``alpha_D = 0.1`` for two tasks), so each row is a convex combination;
    they are then free parameters. The paper trains them with a larger learning rate than the
    columns: ``optimizer.group_lr: {stitch: ...}``. With identity units the columns are
    independent networks.

    Every column is computed whichever tasks a call needs: through the units each feeds the
    others (a loss on task A reaches B's column unless the units across are 0).

    Parameter groups: ``input``; ``columns.<task>``; ``stitch`` (the units of every layer);
    ``towers.<task>``. No gates.
    """

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], params: CrossStitchParams
    ) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.column_units[-1], params=params
        )
        k = len(self.heads)
        dims = [inputs.out_dim, *params.column_units]
        # columns[layer][task]: one bank with one expert, so each task's column is its own
        # parameters (its own group) while a layer of all columns is still one batched op.
        self.columns = nn.ModuleList(
            nn.ModuleList(experts_with(params, dims[i], 1, [dims[i + 1]]) for _ in range(k))
            for i in range(len(params.column_units))
        )
        # The same banks, typed: [layer][task].
        self._banks = [
            [cast(ExpertBank, b) for b in cast(nn.ModuleList, layer)] for layer in self.columns
        ]
        across = (1.0 - params.self_weight) / (k - 1) if k > 1 else 0.0
        init = torch.full((k, k), across) + torch.eye(k) * (params.self_weight - across)
        if k == 1:
            init = torch.ones(1, 1)
        self.stitch = nn.ParameterList(
            nn.Parameter(init.clone()) for _ in range(len(params.column_units))
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        h = x
        last = len(self.columns) - 1
        for i, banks in enumerate(self._banks):
            h = ExpertBank.stacked(banks, h)  # [K, B, D]; layer 1 reads x once for all
            k, b, d = h.shape
            # The last unit only for the active tasks' rows: the towers read nothing else.
            alpha = self.stitch[i] if i < last else self.stitch[i][list(active)]
            h = (alpha @ h.reshape(k, b * d)).view(-1, b, d)
        return Representation(per_task=h)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {
            f"columns.{name}": [p for banks in self._banks for p in banks[k].parameters()]
            for k, name in enumerate(self.task_names)
        }
        groups["stitch"] = list(self.stitch)
        return groups

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last cross-stitch unit: the last parameters every task's output depends on."""
        return [self.stitch[-1]]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layers={len(self.columns)}"
