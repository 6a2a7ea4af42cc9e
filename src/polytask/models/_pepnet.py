"""Parameter and Embedding Personalized Network (PEPNet).

Chang, Zhang, Fu, Zang, Guan, Lu, Hui, Leng, Niu, Song, Gai (Kuaishou), "PEPNet: Parameter
and Embedding Personalized Network for Infusing with Personalized Prior Information", KDD 2023.
A Gate Neural Unit is ``delta = gamma * sigmoid(W2 relu(W1 x + b1) + b2)``, in ``(0, gamma)``
with ``gamma = 2``. EPNet scales each feature's embedding by a gate on the prior features'
embeddings and the stop-gradient of all embeddings,
``delta_domain = U_ep(E(F_d) + sg(E))``, ``O_ep = delta_domain * E``. PPNet scales the input of
every layer of each task's tower by a gate on the prior features and the stop-gradient of
``O_ep``, ``delta_task = U_pp(O_prior + sg(O_ep))``, ``H_(l+1) = f((delta_task^l * H_l) W_l)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from pydantic import Field
from torch import Tensor, nn

from polytask.errors import ConfigError, closest
from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn import FeatureInput


class PEPNetParams(TowerParams):
    tower_units: list[int] = Field(default_factory=lambda: [128, 64])
    gate_features: list[str] | None = Field(default=None, min_length=1)
    gate_units: int = Field(default=64, ge=1)
    gate_scale: float = Field(default=2.0, gt=0)
    gate_context: bool = True


def check_pepnet_features(params: PEPNetParams, categorical: Sequence[str]) -> None:
    """Raise ValueError unless every ``gate_features`` name is a categorical column."""
    if not categorical and params.gate_features is None:
        raise ValueError("gate_features: PEPNet's gates need a categorical feature; there is none")
    for name in params.gate_features or ():
        if name not in categorical:
            raise ValueError(
                f"gate_features: expected categorical feature names, found {name!r}, which is "
                f"not one of {list(categorical)}{closest(name, categorical)}"
            )


class GateNU(nn.Module):
    """Gate Neural Unit (PEPNet eq. 1): ``gamma * sigmoid(W2 relu(W1 x + b1) + b2)``,
    ``[B, in] -> [B, out]`` in ``(0, gamma)``; 1 everywhere when ``W2 = 0, b2 = 0`` and
    ``gamma = 2``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, scale: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, out_dim)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * torch.sigmoid(self.out(torch.relu(self.hidden(x))))


class PEPNet(MultiTaskNet):
    """PEPNet (Chang et al., KDD 2023): EPNet on the feature input, then one tower per task
    whose every layer input is scaled by that task's PPNet gate.

    The prior features are ``gate_features`` (categorical columns; default every one): their
    embeddings are the gates' own input, and with ``gate_context`` (the paper's form) the
    gates also read the whole input (EPNet) or EPNet's output (PPNet) under stop-gradient.
    EPNet has one scale per input field (each categorical column and the numeric projection,
    `FeatureInput.fields`); task k's PPNet gate (one Gate NU per task) gives one scale per
    input unit of every linear layer of task k's tower, output layer included. Without
    ``gate_context`` the gates are functions of the prior features alone.

    Parameter groups: ``input``; ``gates`` (EPNet's Gate NU); ``gates.<task>`` (task k's
    PPNet Gate NU); ``towers.<task>``. Gate weights: ``embedding``, EPNet's scales
    ``[B, fields]`` in ``(0, gate_scale)``, fields in `FeatureInput.fields` order.
    """

    def __init__(
        self, *, inputs: FeatureInput, heads: Sequence[Head], params: PEPNetParams
    ) -> None:
        super().__init__(inputs=inputs, heads=heads, body_dim=inputs.out_dim, params=params)
        categorical = list(inputs.names)
        try:
            check_pepnet_features(params, categorical)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        chosen = params.gate_features if params.gate_features is not None else categorical
        self.gate_features = list(chosen)
        self.gate_context = params.gate_context
        # Which field each input column belongs to, and the prior features' columns.
        field_of = torch.cat(
            [torch.full((w,), f, dtype=torch.long) for f, (_, _, w) in enumerate(inputs.fields)]
        )
        by_name = {name: (start, width) for name, start, width in inputs.fields}
        prior = torch.cat(
            [torch.arange(by_name[n][0], by_name[n][0] + by_name[n][1]) for n in chosen]
        )
        self.register_buffer("_field_of", field_of, persistent=False)
        self.register_buffer("_prior", prior, persistent=False)
        gate_in = len(prior) + (inputs.out_dim if params.gate_context else 0)
        hidden, scale = params.gate_units, params.gate_scale
        self.epnet = GateNU(gate_in, hidden, len(inputs.fields), scale)
        self.ppnet = nn.ModuleDict()
        for name, tower in self.towers.items():  # a scale per input unit of each linear layer
            width = sum(m.in_features for m in tower.modules() if isinstance(m, nn.Linear))
            self.ppnet[name] = GateNU(gate_in, hidden, width, scale)

    _field_of: Tensor
    _prior: Tensor

    def _gate_input(self, prior: Tensor, context: Tensor) -> Tensor:
        return torch.cat([prior, context.detach()], dim=1) if self.gate_context else prior

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        prior = x.index_select(1, self._prior)
        delta = self.epnet(self._gate_input(prior, x))  # [B, fields]
        o_ep = x * delta.index_select(1, self._field_of)
        gate_in = self._gate_input(prior, o_ep)
        tower_gates = {self.task_names[k]: self.ppnet[self.task_names[k]](gate_in) for k in active}
        return Representation(
            shared=o_ep, gates={"embedding": delta}, context={"tower_gates": tower_gates}
        )

    def tower(self, name: str, h: Tensor, rep: Representation) -> Tensor:
        gates = cast(Tensor, rep.context["tower_gates"][name])
        start = 0
        for module in self.towers[name].modules():
            if isinstance(module, nn.Sequential):
                continue
            if isinstance(module, nn.Linear):
                width = module.in_features
                h = module(h * gates[:, start : start + width])
                start += width
            else:
                h = module(h)
        return h

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        ppnet = {f"gates.{n}": list(self.ppnet[n].parameters()) for n in self.task_names}
        return {"gates": list(self.epnet.parameters()), **ppnet}

    def last_shared_layer(self) -> list[nn.Parameter]:
        """EPNet's output layer: the last parameters every task's loss reaches."""
        return list(self.epnet.out.parameters())

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, gate_features={self.gate_features}, "
            f"gate_context={self.gate_context}"
        )
