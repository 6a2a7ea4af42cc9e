"""Building blocks: feature input, MLP, a batched expert bank and softmax gates."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Activation = Literal["relu", "gelu", "silu", "tanh", "leaky_relu"]
Norm = Literal["none", "batch", "layer"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class ListInput:
    """A list-valued categorical column of `FeatureInput` (``[B, L]`` padded indices, 0 the
    padding): embedded and pooled into one ``dim`` vector.

    ``shared_with``/``query`` name single-valued columns of the input: the table the values
    are looked up in (else the column has its own table of ``cardinality`` rows) and the
    column whose embedding the values attend to (``pooling == "attention"``)."""

    name: str
    dim: int
    pooling: Literal["mean", "sum", "max", "attention"] = "mean"
    cardinality: int = 0
    shared_with: str | None = None
    query: str | None = None
    attention_softmax: bool = False
    attention_units: tuple[int, ...] = field(default=(32,))


class TargetAttention(nn.Module):
    """Deep Interest Network's activation unit (Zhou et al., KDD 2018): the weight of each
    history embedding ``h_l`` against the query ``q`` is an MLP over
    ``[h_l, q, h_l - q, h_l * q]``; the pooled vector is ``sum_l w_l h_l``.

    Weights are not normalised by default (the paper's choice, which keeps the intensity of
    interest); ``softmax=True`` normalises them over the row's values. Padded positions
    (``mask`` False) get a weight of exactly 0 either way, and a row with no values pools to
    the zero vector."""

    def __init__(self, dim: int, units: Sequence[int], *, softmax: bool = False) -> None:
        super().__init__()
        if not units:
            raise ValueError("expected at least one hidden layer of attention units")
        self.softmax = softmax
        self.dim = dim
        self.mlp = mlp(4 * dim, units)
        self.out = nn.Linear(units[-1], 1)

    def weights(self, h: Tensor, q: Tensor, mask: Tensor) -> Tensor:
        """``h [B, L, D]``, ``q [B, D]``, ``mask [B, L]`` -> weights ``[B, L]``.

        The first layer ``W [h, q, h - q, h * q] + b`` is computed as ``h (W1 + W3 + diag(q)
        W4) + (W2 - W3) q + b`` (``W = [W1 W2 W3 W4]``): the same value without building the
        ``[B, L, 4D]`` input, and the ``q`` part once per row rather than per position (2.3x
        faster forward and backward than the concatenation at B=512, L=20, D=16; CPU)."""
        first = cast(nn.Linear, self.mlp[0])
        w1, w2, w3, w4 = first.weight.split(self.dim, dim=1)  # each [U, D]
        per_row = (w1 + w3).t().unsqueeze(0) + q.unsqueeze(2) * w4.t().unsqueeze(0)  # [B, D, U]
        z = torch.bmm(h, per_row) + torch.addmm(first.bias, q, (w2 - w3).t()).unsqueeze(1)
        scores = self.out(self.mlp[1:](z)).squeeze(-1)
        if self.softmax:
            scores = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            # a row with no values: softmax of all -inf is NaN; its weights are 0
        return torch.where(mask, scores, scores.new_zeros(()))

    def forward(self, h: Tensor, q: Tensor, mask: Tensor) -> Tensor:
        w = self.weights(h, q, mask)
        # a broadcast product and sum: 3.5x faster than bmm of [B, 1, L] x [B, L, D] (CPU)
        return (w.unsqueeze(-1) * h).sum(1)


class FeatureInput(nn.Module):
    """One embedding per categorical column plus a learned linear projection of the numeric
    columns into the same space, concatenated: ``[B, C] long, [B, M] float -> [B, out_dim]``.

    Categorical columns with the same embedding dimension share one table with per-column
    offsets, so the lookup is one ``embedding`` call per distinct dimension rather than a
    Python loop over columns; each column still has its own rows (its own embedding).

    ``fields`` says where each input sits in the output: ``(name, start, width)`` per
    categorical column (``names``, default ``cat0, cat1, ...``) and, last, ``numeric`` for
    the projection of every numeric column. Models that gate or select inputs by feature
    (PEPNet) read it; `like` builds another input of the same shape with its own parameters
    (STEM's per-task embeddings).

    ``lists`` are the list-valued columns (`ListInput`), each pooled into one vector placed
    after the single-valued columns and before the numeric part: ``mean``/``sum`` as a
    masked sum over the padded ``[B, L, D]`` lookup, ``max`` by ``embedding_bag`` (the
    fastest of each on CPU, docs/features.md), ``attention`` by `TargetAttention`. An empty
    row pools to the zero vector.
    """

    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        embedding_dims: Sequence[int],
        numeric_width: int,
        numeric_dim: int,
        names: Sequence[str] | None = None,
        lists: Sequence[ListInput] = (),
    ) -> None:
        super().__init__()
        if len(cardinalities) != len(embedding_dims):
            raise ValueError(
                f"expected one embedding dim per categorical column ({len(cardinalities)}), "
                f"received {len(embedding_dims)}"
            )
        names = list(names) if names is not None else [f"cat{j}" for j in range(len(cardinalities))]
        if len(names) != len(cardinalities):
            raise ValueError(
                f"expected one name per categorical column ({len(cardinalities)}), "
                f"received {len(names)}"
            )
        self.names = names
        """The categorical columns' names, in input order."""
        self._spec: dict[str, Any] = {
            "cardinalities": list(cardinalities),
            "embedding_dims": list(embedding_dims),
            "numeric_width": numeric_width,
            "numeric_dim": numeric_dim,
            "names": names,
            "lists": list(lists),
        }
        self.embeddings = nn.ModuleList()
        self._groups: list[list[int]] = []
        self._starts: list[list[int]] = []  # the offsets as Python ints
        for dim in sorted(set(embedding_dims)):
            cols = [j for j, d in enumerate(embedding_dims) if d == dim]
            sizes = [cardinalities[j] for j in cols]
            # Python sums, no tensor read back: the module builds on the meta device too
            self._starts.append([0, *itertools.accumulate(sizes)][:-1])
            offsets = torch.tensor(self._starts[-1])
            self.register_buffer(f"_offsets{len(self._groups)}", offsets, persistent=False)
            self.register_buffer(
                f"_columns{len(self._groups)}", torch.tensor(cols), persistent=False
            )
            table = nn.Embedding(sum(sizes), dim)
            nn.init.normal_(table.weight, std=0.05)
            self.embeddings.append(table)
            self._groups.append(cols)
        # Where each single-valued column's rows sit: (group, column offset buffer index,
        # position within the group), for the lists that share its table or attend to it.
        self._where = {
            names[j]: (g, k) for g, cols in enumerate(self._groups) for k, j in enumerate(cols)
        }
        self.lists = list(lists)
        self.list_tables = nn.ModuleDict()
        self.attention = nn.ModuleDict()
        for spec in self.lists:
            for ref in (spec.shared_with, spec.query):
                if ref is not None and ref not in self._where:
                    raise ValueError(
                        f"list column {spec.name!r} refers to {ref!r}, which is not a "
                        f"single-valued categorical column of the input ({names})"
                    )
            if spec.shared_with is None:
                own = nn.Embedding(spec.cardinality, spec.dim)
                nn.init.normal_(own.weight, std=0.05)
                self.list_tables[spec.name] = own
            elif embedding_dims[names.index(spec.shared_with)] != spec.dim:
                raise ValueError(
                    f"list column {spec.name!r} has dim {spec.dim} but shares the table of "
                    f"{spec.shared_with!r}, of dim {embedding_dims[names.index(spec.shared_with)]}"
                )
            if spec.pooling == "attention":
                if spec.query is None:
                    raise ValueError(f"list column {spec.name!r}: attention needs a query")
                self.attention[spec.name] = TargetAttention(
                    spec.dim, spec.attention_units, softmax=spec.attention_softmax
                )
        self.numeric = nn.Linear(numeric_width, numeric_dim) if numeric_width > 0 else None
        # The output is the groups in order, each its columns in order, then the list
        # columns, then the numeric part.
        widths = [(names[j], embedding_dims[j]) for cols in self._groups for j in cols]
        widths += [(spec.name, spec.dim) for spec in self.lists]
        widths += [("numeric", numeric_dim)] if self.numeric is not None else []
        starts = itertools.accumulate((w for _, w in widths), initial=0)
        self.fields = [(name, start, w) for (name, w), start in zip(widths, starts, strict=False)]
        self.out_dim = sum(w for _, w in widths)

    def like(self) -> FeatureInput:
        """A new input of the same shape (columns, dimensions, names), freshly initialised."""
        return FeatureInput(**self._spec)

    def forward(
        self, categorical: Tensor, numeric: Tensor, lists: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """``[B, C]`` indices, ``[B, M]`` numbers and the padded ``[B, L]`` indices of each
        list column (by name) -> ``[B, out_dim]``."""
        parts: list[Tensor] = []
        singles: list[Tensor] = []  # per group [B, columns, dim], for queries
        for g, table in enumerate(self.embeddings):
            offsets: Tensor = getattr(self, f"_offsets{g}")
            if len(self.embeddings) == 1:
                idx = categorical  # one dimension: the group is every column, in order
            else:
                idx = categorical.index_select(1, getattr(self, f"_columns{g}"))
            # index_select rather than table(...): the same rows, but its backward is one
            # index_add_ (deterministic on CPU), 3x faster there than embedding's backward
            # (0.6 vs 1.9 ms for a batch of 1024 x 32 columns; docs/performance.md).
            weight = cast(nn.Embedding, table).weight
            rows = weight.index_select(0, (idx + offsets).view(-1))
            singles.append(rows.view(idx.shape[0], idx.shape[1], weight.shape[1]))
            parts.append(rows.view(idx.shape[0], idx.shape[1] * weight.shape[1]))
        if self.lists:
            if lists is None:
                raise ValueError(
                    f"this input has list columns {[s.name for s in self.lists]}; pass them"
                )
            for spec in self.lists:
                parts.append(self._pool(spec, lists[spec.name], singles))
        if self.numeric is not None:
            parts.append(self.numeric(numeric))
        return concat(parts, dim=1)

    def _table(self, spec: ListInput) -> tuple[Tensor, int]:
        """The weight a list column looks its values up in, and the offset of its rows."""
        if spec.shared_with is None:
            return cast(nn.Embedding, self.list_tables[spec.name]).weight, 0
        g, k = self._where[spec.shared_with]
        return cast(nn.Embedding, self.embeddings[g]).weight, self._starts[g][k]

    def _pool(self, spec: ListInput, idx: Tensor, singles: list[Tensor]) -> Tensor:
        weight, offset = self._table(spec)
        mask = idx != 0
        if spec.pooling == "max":
            # padded positions (0 + offset) are left out of the maximum; an empty row is 0
            return F.embedding_bag(idx + offset, weight, mode="max", padding_idx=offset)
        h = weight.index_select(0, (idx + offset).view(-1)).view(*idx.shape, weight.shape[1])
        if spec.pooling == "attention":
            assert spec.query is not None
            g, k = self._where[spec.query]
            return cast(TargetAttention, self.attention[spec.name])(h, singles[g][:, k], mask)
        m = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1)
        if spec.pooling == "mean":
            pooled = pooled / m.sum(1).clamp(min=1)
        return pooled

    def attention_weights(
        self, name: str, categorical: Tensor, lists: Mapping[str, Tensor]
    ) -> Tensor:
        """The ``[B, L]`` attention weights of list column ``name`` (``pooling ==
        "attention"``) for a batch; 0 at padded positions."""
        spec = next(s for s in self.lists if s.name == name)
        assert spec.query is not None
        weight, offset = self._table(spec)
        idx = lists[name]
        h = weight.index_select(0, (idx + offset).view(-1)).view(*idx.shape, weight.shape[1])
        g, k = self._where[spec.query]
        qtable = cast(nn.Embedding, self.embeddings[g]).weight
        col = self._groups[g][k]
        q = qtable.index_select(0, categorical[:, col] + self._starts[g][k])
        return cast(TargetAttention, self.attention[name]).weights(h, q, idx != 0)


class BatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that accepts a one-row batch in training.

    Batch statistics of one row are undefined (torch raises), and a training set whose size
    is one more than a multiple of ``batch_size`` ends every epoch with such a batch. That
    row is normalised with the running statistics, which it does not update: for that batch
    the layer acts as in evaluation. Same parameters and buffers as ``nn.BatchNorm1d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1 and self.running_mean is not None:
            assert self.running_var is not None
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def mlp(
    in_dim: int,
    units: Sequence[int],
    *,
    activation: Activation = "relu",
    dropout: float = 0.0,
    norm: Norm = "none",
) -> nn.Sequential:
    """Linear -> [norm] -> activation -> [dropout] per hidden layer. Empty ``units`` is the
    identity."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in units:
        layers.append(nn.Linear(prev, width))
        if norm == "batch":
            layers.append(BatchNorm1d(width))
        elif norm == "layer":
            layers.append(nn.LayerNorm(width))
        layers.append(_ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    return nn.Sequential(*layers)


class ExpertBank(nn.Module):
    """``num_experts`` MLPs of the same shape run as one batched op.

    ``[B, in] -> [E, B, units[-1]]``. Weights are stacked ``[E, in, out]``; the first layer is
    one matmul for all experts and each later one a ``baddbmm``: no Python loop over experts.
    Initialisation matches ``nn.Linear`` (Kaiming-uniform, fan-in).

    ``norm="batch"`` puts a batch normalisation between every layer's matmul and its
    activation, separately for each expert and unit (HoME's expert normalisation): in
    training, over the batch, ``(h - mean) / sqrt(var + eps) * gamma + beta``, with the
    running statistics of ``nn.BatchNorm1d`` (momentum 0.1, unbiased running variance) used
    in evaluation and for a one-row training batch.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        num_experts: int,
        units: Sequence[int],
        activation: Activation = "relu",
        dropout: float = 0.0,
        norm: Literal["none", "batch"] = "none",
    ) -> None:
        super().__init__()
        if num_experts < 1 or not units:
            raise ValueError(
                f"expected num_experts >= 1 and non-empty units, received {num_experts}, {units}"
            )
        self.num_experts = num_experts
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        prev = in_dim
        for width in units:
            bound = 1.0 / math.sqrt(prev)
            self.weights.append(
                nn.Parameter(torch.empty(num_experts, prev, width).uniform_(-bound, bound))
            )
            self.biases.append(
                nn.Parameter(torch.empty(num_experts, 1, width).uniform_(-bound, bound))
            )
            prev = width
        self.norm = norm
        self.norm_weights = nn.ParameterList()
        self.norm_biases = nn.ParameterList()
        if norm == "batch":
            for i, width in enumerate(units):
                self.norm_weights.append(nn.Parameter(torch.ones(num_experts, 1, width)))
                self.norm_biases.append(nn.Parameter(torch.zeros(num_experts, 1, width)))
                self.register_buffer(f"running_mean{i}", torch.zeros(num_experts, 1, width))
                self.register_buffer(f"running_var{i}", torch.ones(num_experts, 1, width))
        self.act = _ACTIVATIONS[activation]()
        self._relu = activation == "relu"
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        return ExpertBank.stacked([self], x)

    @staticmethod
    def stacked(banks: Sequence[ExpertBank], x: Tensor) -> Tensor:
        """Several banks of one shape run as a single bank, experts in bank order.

        ``x`` is ``[B, in]`` (one input for every expert) or ``[E, B, in]`` (one per expert,
        ``E`` the banks' total); the result is ``[E, B, units[-1]]``. Each bank keeps its own
        parameters, so a bank left out of ``banks`` stays out of the graph (PLE computes only
        the task experts of the active tasks this way). Activation and dropout are the first
        bank's.
        """
        first = banks[0]
        weights = [concat(ws) for ws in zip(*(b.weights for b in banks), strict=True)]
        biases = [concat(bs) for bs in zip(*(b.biases for b in banks), strict=True)]
        w0 = weights[0]
        if x.dim() == 2:
            # One GEMM, bias included, for every expert's first layer: [B, in] @ [in, E*out],
            # read as [E, B, out] through a transposed view that baddbmm and `mix` take
            # without a copy.
            h = torch.addmm(biases[0].flatten(), x, w0.permute(1, 0, 2).reshape(w0.shape[1], -1))
            h = h.view(x.shape[0], w0.shape[0], w0.shape[2]).transpose(0, 1)
        else:
            h = torch.baddbmm(biases[0], x, w0)
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            if i > 0:
                h = torch.baddbmm(b, h, w)
            if first.norm == "batch":
                h = ExpertBank._normalise(banks, i, h)
            h = first._activate(h)
        return h

    @staticmethod
    def _normalise(banks: Sequence[ExpertBank], layer: int, h: Tensor) -> Tensor:
        """Batch normalisation of ``h [E, B, out]`` per expert and unit (``norm="batch"``)."""
        gamma = concat([b.norm_weights[layer] for b in banks])
        beta = concat([b.norm_biases[layer] for b in banks])
        h = h.float()  # statistics in float32 under bf16 autocast: the running ones are float32
        if banks[0].training and h.shape[1] > 1:
            # Centred once and reused: 1.6x faster forward and backward than var_mean over
            # the batch dimension ([6, 1024, 128] on this CPU).
            mean = h.mean(1, keepdim=True)
            centred = h - mean
            var = centred.square().mean(1, keepdim=True)
            with torch.no_grad():
                unbiased = var * (h.shape[1] / (h.shape[1] - 1))
                start = 0
                for bank in banks:
                    n = bank.num_experts
                    rm: Tensor = getattr(bank, f"running_mean{layer}")
                    rv: Tensor = getattr(bank, f"running_var{layer}")
                    rm.lerp_(mean[start : start + n], 0.1)
                    rv.lerp_(unbiased[start : start + n], 0.1)
                    start += n
        else:
            centred = h - concat([getattr(b, f"running_mean{layer}") for b in banks])
            var = concat([getattr(b, f"running_var{layer}") for b in banks])
        return torch.addcmul(beta, centred * torch.rsqrt(var + 1e-5), gamma)

    def _activate(self, h: Tensor) -> Tensor:
        if self._relu and not torch.is_grad_enabled():
            # Without autograd ReLU can overwrite its input rather than allocate another
            # [E, B, out]: predicting 20k rows in batches of 8192 took 197 instead of 290 ms
            # (8x[128, 64]). With autograd, in place on a view of the GEMM's output would make
            # backward copy the whole gradient (CopySlices): 4% slower, so not then.
            return self.dropout(torch.relu_(h))
        return self.dropout(self.act(h))


class Gates(nn.Module):
    """``num_gates`` softmax gates over ``num_experts``.

    ``[B, in] -> [B, G, E]``, ``softmax(W_g x / temperature)``. A temperature above 1 flattens
    the mixture, below 1 sharpens it (MMoE, Ma et al. KDD 2018, plus a temperature). Each gate
    has its own weight tensor, so computing a subset of gates (``which``) leaves the others
    out of the graph: their gradients stay None and an optimizer step skips them. All gates
    still run as one matmul over the concatenated weights.
    """

    def __init__(
        self, *, in_dim: int, num_gates: int, num_experts: int, temperature: float = 1.0
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"expected gate temperature > 0, received {temperature}")
        self.num_gates = num_gates
        self.num_experts = num_experts
        self.temperature = temperature
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.ParameterList(
            nn.Parameter(torch.empty(in_dim, num_experts).uniform_(-bound, bound))
            for _ in range(num_gates)
        )
        self.bias = nn.ParameterList(
            nn.Parameter(torch.empty(num_experts).uniform_(-bound, bound)) for _ in range(num_gates)
        )

    def forward(self, x: Tensor, which: Sequence[int] | None = None) -> Tensor:
        idx = range(self.num_gates) if which is None else which
        w = concat([self.weight[i] for i in idx], dim=1)
        b = concat([self.bias[i] for i in idx])
        logits = torch.addmm(b, x, w).view(x.shape[0], len(idx), self.num_experts)
        if self.temperature != 1.0:  # x / 1.0 == x: skip an op and its backward per step
            logits = logits / self.temperature
        return torch.softmax(logits, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"num_gates={self.num_gates}, num_experts={self.num_experts}, "
            f"temperature={self.temperature}"
        )


def concat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.cat``, or the one tensor itself: no copy, and a parameter stays a leaf."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=dim)


def mix(gates: Tensor, experts: Tensor) -> Tensor:
    """Gate-weighted sums: ``gates [B, G, E]`` and ``experts [E, B, D]`` -> ``[G, B, D]``.

    The batched matmul einsum("bge,ebd->gbd") resolves to, called directly: the same result
    bit for bit without einsum's per-call parsing (0.35 -> 0.28 ms forward and backward at
    B=256, D=16)."""
    return torch.bmm(gates, experts.transpose(0, 1)).transpose(0, 1)


__all__ = [
    "Activation",
    "ExpertBank",
    "FeatureInput",
    "Gates",
    "ListInput",
    "Norm",
    "TargetAttention",
    "concat",
    "mix",
    "mlp",
]
