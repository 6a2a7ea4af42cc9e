"""Shared-bottom: hard parameter sharing (Caruana 1997; Ruder 2017 survey).

A shared MLP computes one representation used by every task's tower.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import FeatureInput, mlp


class SharedBottomParams(TowerParams):
    shared_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)


class SharedBottom(MultiTaskNet):
    """``input -> shared MLP -> tower per task``. Groups: ``input``, ``shared``, ``towers.*``."""

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], params: SharedBottomParams
    ) -> None:
        super().__init__(
            inputs=inputs, heads=heads, body_dim=params.shared_units[-1], params=params
        )
        self.shared = mlp(
            inputs.out_dim,
            params.shared_units,
            activation=params.activation,
            dropout=params.dropout,
            norm=params.norm,
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        return Representation(shared=self.shared(x))

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"shared": list(self.shared.parameters())}

    def last_shared_layer(self) -> list[nn.Parameter]:
        last = [m for m in self.shared if isinstance(m, nn.Linear)][-1]
        return list(last.parameters())
