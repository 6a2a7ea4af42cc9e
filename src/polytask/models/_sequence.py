"""Sequence encoders for per-token tasks: a stack of layers over a sentence's token
embeddings, each task's tower reading the layer its spec names (``layer: k``; default the
last), as Søgaard & Goldberg (ACL 2016) supervise POS at an inner layer and chunking at the
outer one.

A batch holds padded sentences (`polytask.data.tokens`); the model cuts it to its longest
sentence, runs the layers the active tasks need (a task at layer 1 computes nothing above
it, and its loss reaches no parameter above it), pads the result back to the batch's width
and zeroes every output at padding positions. Towers are per-token (default: one linear
layer); ``inputs_from`` feeds a source task's per-token tag distribution into the target's
tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.func import functional_call

from polytask.models.base import Head, MultiTaskNet, Representation, TowerParams
from polytask.nn.tokens import WORD, TokenInput


class SequenceParams(TowerParams):
    """Every sequence model's parameters: ``layers`` of the encoder and the towers (default
    none: one linear layer per task on the token's representation)."""

    layers: int = Field(default=2, ge=1)
    tower_units: list[int] = Field(default_factory=list)
    input_dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the token embeddings."""

    @model_validator(mode="after")
    def _no_batch_norm(self) -> SequenceParams:
        if self.norm == "batch":
            raise ValueError("norm: batch normalises rows; use 'layer' or 'none' for tokens")
        return self


def check_layers(params: Any, heads: Sequence[Head]) -> None:
    """A task's ``layer`` must exist in the encoder."""
    for h in heads:
        if h.layer is not None and not 1 <= h.layer <= params.layers:
            raise ValueError(
                f"task {h.name!r}: layer {h.layer} is deeper than the encoder, which has "
                f"{params.layers} layer(s) (model.layers); expected 1..{params.layers}"
            )


class SequenceNet(MultiTaskNet):
    """Base of the sequence encoders: `encode` runs the layers; groups ``input``,
    ``encoder``, ``towers.*``."""

    encoder: nn.ModuleList

    def __init__(
        self, *, inputs: nn.Module, heads: Sequence[Head], params: SequenceParams, width: int
    ) -> None:
        if not isinstance(inputs, TokenInput):
            raise ValueError("a sequence model needs features.tokens (sentences as input)")
        super().__init__(inputs=inputs, heads=heads, body_dim=width, params=params)  # type: ignore[arg-type]
        self.layer_of = [h.layer or params.layers for h in self.heads]
        self.input_dropout = nn.Dropout(params.input_dropout)

    def encode(self, x: Tensor, lengths: Tensor, mask: Tensor, depth: int) -> list[Tensor]:
        """The outputs ``[B, T, width]`` of layers 1..``depth`` for embeddings ``x``."""
        raise NotImplementedError

    def body(self, batch: dict[str, Tensor], active: Sequence[int]) -> Representation:
        tokens = batch["categorical"]
        full = tokens.shape[1]
        lengths = (tokens[..., WORD] > 0).sum(1)
        longest = int(lengths.max()) if tokens.shape[0] else 0  # the step's one host read
        tokens = tokens[:, :longest]
        mask = tokens[..., WORD] > 0
        x = self.input_dropout(self.inputs(tokens))
        depth = max(self.layer_of[k] for k in active)
        outputs = self.encode(x, lengths, mask, depth)
        keep = mask.unsqueeze(-1)
        padded = [F.pad(h * keep, (0, 0, 0, full - longest)) for h in outputs]
        per_task = [padded[self.layer_of[k] - 1] for k in active]
        return Representation(
            per_task=per_task, context={"mask": F.pad(keep, (0, 0, 0, full - longest))}
        )

    def represent(self, x: Tensor, active: Sequence[int]) -> Representation:
        raise NotImplementedError("a sequence model reads the batch: see body()")

    def tower(self, name: str, h: Tensor, rep: Representation) -> Tensor:
        out: Tensor = self.towers[name](h)
        return out * rep.context["mask"]  # exactly 0 at padding (`Tag.predict_columns`)

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"encoder": [p for n, p in self.named_parameters() if n.startswith("encoder.")]}

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The deepest encoder layer every task reads (GradNorm's ``W``): with POS at layer
        1, layer 1, as a loss at layer 1 has no gradient above it."""
        return list(self.encoder[min(self.layer_of) - 1].parameters())


class BiLSTMParams(SequenceParams):
    hidden: int = Field(default=128, ge=1)
    """Units per direction: a layer's output is ``2 * hidden`` wide."""
    dropout_between: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on each layer's output (the next layer's and the towers' input)."""
    packed: bool = False
    """Run the LSTMs on packed sequences (only real tokens); false (the default, about 1.45x
    faster on CPU here, docs/sequence_tagging.md): on the batch padded to its longest
    sentence, the backward direction on each sentence reversed within its length. The same
    weights and outputs either way."""


class BiLSTM(SequenceNet):
    """A stack of bidirectional LSTM layers (Søgaard & Goldberg 2016; Plank et al. 2016)."""

    def __init__(self, *, inputs: TokenInput, heads: Sequence[Head], params: BiLSTMParams) -> None:
        super().__init__(inputs=inputs, heads=heads, params=params, width=2 * params.hidden)
        self.packed = params.packed
        dims = [inputs.out_dim] + [2 * params.hidden] * (params.layers - 1)
        self.encoder = nn.ModuleList(
            nn.LSTM(d, params.hidden, batch_first=True, bidirectional=True) for d in dims
        )
        self.between = nn.Dropout(params.dropout_between)
        # shapes only (the weights come from `encoder`): kept out of the module's parameters
        with torch.device("meta"):
            self._unidirectional = [nn.LSTM(d, params.hidden, batch_first=True) for d in dims]

    def encode(self, x: Tensor, lengths: Tensor, mask: Tensor, depth: int) -> list[Tensor]:
        outputs: list[Tensor] = []
        if self.packed:
            packed = nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            for lstm in list(self.encoder)[:depth]:
                packed, _ = lstm(packed)
                data = self.between(packed.data)
                packed = nn.utils.rnn.PackedSequence(
                    data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
                )
                h, _ = nn.utils.rnn.pad_packed_sequence(
                    packed, batch_first=True, total_length=x.shape[1]
                )
                outputs.append(h)
            return outputs
        # masked: each direction on the padded batch, the backward one on every sentence
        # reversed within its length, with the bidirectional layer's own weights
        t = torch.arange(x.shape[1], device=x.device)
        rev = torch.where(mask, (lengths.unsqueeze(1) - 1 - t).clamp(min=0), t).unsqueeze(-1)
        h = x
        for lstm, uni in zip(list(self.encoder)[:depth], self._unidirectional, strict=False):
            names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
            fwd, _ = functional_call(uni, {n: getattr(lstm, n) for n in names}, (h,))
            back = {n: getattr(lstm, n + "_reverse") for n in names}
            bwd, _ = functional_call(uni, back, (h.gather(1, rev.expand_as(h)),))
            bwd = bwd.gather(1, rev.expand_as(bwd))
            h = self.between(torch.cat([fwd, bwd], dim=-1))
            outputs.append(h)
        return outputs


class TransformerParams(SequenceParams):
    width: int = Field(default=128, ge=1)
    heads: int = Field(default=4, ge=1)
    feedforward: int = Field(default=256, ge=1)
    attention_dropout: float = Field(default=0.1, ge=0, lt=1)
    positions: str = Field(default="sinusoidal", pattern="^(sinusoidal|learned)$")
    """Position information added to the projected embeddings: fixed sinusoids (any length)
    or a learned table of ``max_positions`` rows."""
    max_positions: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        return self


class Transformer(SequenceNet):
    """A stack of transformer encoder layers (pre-norm) over the projected token embeddings
    plus positions; padding is masked out of attention."""

    def __init__(
        self, *, inputs: TokenInput, heads: Sequence[Head], params: TransformerParams
    ) -> None:
        super().__init__(inputs=inputs, heads=heads, params=params, width=params.width)
        self.project = nn.Linear(inputs.out_dim, params.width)
        self.max_positions = params.max_positions
        learned = params.positions == "learned"
        self.positions = nn.Embedding(params.max_positions, params.width) if learned else None
        self.width = params.width
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(
                params.width,
                params.heads,
                params.feedforward,
                params.attention_dropout,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(params.layers)
        )

    def body_groups(self) -> dict[str, list[nn.Parameter]]:
        parts = [self.encoder, self.project, self.positions]
        return {"encoder": [p for m in parts if m is not None for p in m.parameters()]}

    def _positions(self, t: int, device: torch.device) -> Tensor:
        if self.positions is not None:
            if t > self.max_positions:
                raise ValueError(
                    f"a sentence has {t} tokens, more than model.max_positions = "
                    f"{self.max_positions} (learned positions)"
                )
            return self.positions.weight[:t]
        pos = torch.arange(t, device=device, dtype=torch.float32).unsqueeze(1)
        i = torch.arange(0, self.width, 2, device=device, dtype=torch.float32)
        angle = pos / torch.pow(10000.0, i / self.width)
        table = torch.zeros(t, self.width, device=device)
        table[:, 0::2] = torch.sin(angle)
        table[:, 1::2] = torch.cos(angle[:, : self.width // 2])
        return table

    def encode(self, x: Tensor, lengths: Tensor, mask: Tensor, depth: int) -> list[Tensor]:
        h = self.project(x) + self._positions(x.shape[1], x.device)
        outputs = []
        for layer in list(self.encoder)[:depth]:
            h = layer(h, src_key_padding_mask=~mask)
            outputs.append(h)
        return outputs
