"""training.precision (bf16 autocast) and training.compile."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import MultiTaskModel
from polytask.training.precision import TrainNet, autocast_context


def _toy(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    c = rng.choice(["a", "b", "c", "d"], n)
    shift = pd.Series(c).map({"a": -1.0, "b": 0.0, "c": 0.5, "d": 1.5}).to_numpy()
    return pd.DataFrame(
        {
            "c": c,
            "x": x,
            "y1": (x + shift + rng.normal(scale=0.5, size=n) > 0).astype(float),
            "y2": (x - shift + rng.normal(scale=0.5, size=n) > 0).astype(float),
        }
    )


def _model(**training: object) -> MultiTaskModel:
    return MultiTaskModel(
        features={"categorical": ["c"], "numeric": ["x"], "embedding_dim": 4},
        tasks={"t1": {"type": "binary", "label": "y1"}, "t2": {"type": "binary", "label": "y2"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [16], "tower_units": [8]},
        optimizer={"lr": 1e-2},
        training={"epochs": 3, "batch_size": 128, "progress": False, "seed": 0, **training},
    )


@contextlib.contextmanager
def _linear_output_dtypes() -> Iterator[set[torch.dtype]]:
    """The dtypes every ``nn.Linear`` returns inside the block."""
    seen: set[torch.dtype] = set()
    forward = torch.nn.Linear.forward

    def recording(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        y = forward(self, x)
        seen.add(y.dtype)
        return y

    torch.nn.Linear.forward = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        torch.nn.Linear.forward = forward  # type: ignore[method-assign]


def test_bf16_trains_and_predicts_close_to_fp32() -> None:
    df = _toy()
    with _linear_output_dtypes() as seen32:
        fp32 = _model().fit(df)
    with _linear_output_dtypes() as seen16:
        bf16 = _model(precision="bf16").fit(df)
    # The training forward ran its matmuls in bfloat16 (and only with precision: bf16).
    assert torch.bfloat16 in seen16
    assert seen32 == {torch.float32}
    assert all(np.isfinite(list(r["train_loss"].values())).all() for r in bf16.history_)
    p32, p16 = fp32.predict(df), bf16.predict(df)
    assert float((p32 - p16).abs().max().max()) < 0.1
    a32, a16 = fp32.evaluate(df), bf16.evaluate(df)
    for t in ("t1", "t2"):
        assert a16[t]["auc"] == pytest.approx(a32[t]["auc"], abs=0.01)
    # parameters stay float32
    assert all(p.dtype == torch.float32 for p in bf16.network_.parameters())


def test_autocast_wrapper_outputs_float32() -> None:
    df = _toy(200)
    net = _model().fit(df, epochs=1).network_
    wrapped = TrainNet(net, precision="bf16")
    batch = _model().fit(df, epochs=1).encode(df).slice(0, 16)
    out = wrapped(batch)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert wrapped.task_names == net.task_names
    assert wrapped.state_dict().keys() == net.state_dict().keys()
    with autocast_context("bf16", "cpu")():
        assert torch.is_autocast_enabled("cpu")


def _graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_compile_matches_eager_and_saves(tmp_path: Path) -> None:
    df = _toy(1500)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # No validation: only the training steps run the network before the counts are read.
    eager = _model(epochs=1).fit(df)
    assert _graphs_compiled() == 0
    compiled = _model(epochs=1, compile=True).fit(df)
    assert _graphs_compiled() > 0  # the training forward went through torch.compile
    pe, pc = eager.predict(df), compiled.predict(df)
    assert float((pe - pc).abs().max().max()) < 1e-3
    compiled.save(tmp_path / "m")
    loaded = MultiTaskModel.load(tmp_path / "m")
    assert not any("_orig_mod" in k for k in loaded.network_.state_dict())
    np.testing.assert_allclose(loaded.predict(df).to_numpy(), pc.to_numpy(), atol=1e-6)
