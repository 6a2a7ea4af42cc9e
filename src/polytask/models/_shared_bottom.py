"""Shared-bottom: hard parameter sharing (Caruana 1997; Ruder 2017 survey).

A shared MLP computes one representation used by every task's tower.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field
from torch import Tensor, nn

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams, mlp_with
from polytask.nn import FeatureInput


class SharedBottomParams(TowerParams):
    shared_units: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)


class SharedMLPNet(MultiTaskNet):
    """``input -> shared MLP (shared_units) -> tower per task``: the body of `shared_bottom`
    and of ESMM. Empty ``shared_units`` (ESMM only) is no MLP: the towers read the feature
    input. Groups: ``input``, ``shared`` (with ``shared_units``), ``towers.*``."""

    def __init__(
        self,
        *,
        inputs: FeatureInput,
        heads: Sequence[Head],
        params: TowerParams,
        shared_units: Sequence[int],
    ) -> None:
        body_dim = shared_units[-1] if shared_units else inputs.out_dim
        super().__init__(inputs=inputs, heads=heads, body_dim=body_dim, params=params)
        self.shared = mlp_with(params, inputs.out_dim, shared_units)

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        return Representation(shared=self.shared(x))

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"shared": list(self.shared.parameters())}

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The shared MLP's last linear layer; without one, the feature input (the embeddings
        and the numeric projection are then all that the tasks share)."""
        linears = [m for m in self.shared if isinstance(m, nn.Linear)]
        return list(linears[-1].parameters()) if linears else list(self.inputs.parameters())


def shared_bottom(
    *, inputs: FeatureInput, heads: Sequence[Head], params: SharedBottomParams
) -> SharedMLPNet:
    """``input -> shared MLP -> tower per task``. Groups: ``input``, ``shared``, ``towers.*``."""
    return SharedMLPNet(inputs=inputs, heads=heads, params=params, shared_units=params.shared_units)
