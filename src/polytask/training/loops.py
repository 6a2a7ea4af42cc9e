"""The evaluation loops as plain functions: raw outputs for every row, gate statistics.

The training step is `polytask.training.step.TrainStep`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from polytask.data import EncodedData
from polytask.models import MultiTaskNet


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in evaluation mode inside the block; its previous mode after it, also when
    the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.inference_mode()
def predict_outputs(
    model: MultiTaskNet, data: EncodedData, batch_size: int
) -> dict[str, np.ndarray]:
    """Raw outputs for every row, in row order, as float32 numpy arrays: one per task and
    one per auxiliary output of the model."""
    names = [*model.task_names, *model.auxiliary_outputs]
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    with evaluating(model):
        for batch in data.batches(batch_size):
            for name, out in model(batch, auxiliary=True).items():
                chunks[name].append(out.float())
    return {
        name: torch.cat(parts).cpu().numpy() if parts else np.zeros((0,), np.float32)
        for name, parts in chunks.items()
    }


@torch.inference_mode()
def gate_statistics(
    model: MultiTaskNet, data: EncodedData, batch_size: int
) -> dict[str, dict[str, list[float] | float]]:
    """Mean gate weight per expert per gate over ``data``, and the entropy of that mean (nats).

    A collapsed gate (all weight on one expert) has entropy near 0; a uniform one log(E).
    """
    sums: dict[str, Tensor] = {}
    with evaluating(model):
        for batch in data.batches(batch_size):
            for name, g in model.gate_weights(batch).items():
                part = g.float().sum(0)
                sums[name] = sums[name] + part if name in sums else part
    out: dict[str, dict[str, list[float] | float]] = {}
    for name, total in sums.items():
        mean = total / max(len(data), 1)
        entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum())
        out[name] = {"mean_weight": mean.tolist(), "entropy": entropy}
    return out
