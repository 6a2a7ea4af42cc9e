"""``norm: batch`` layers: a one-row training batch (the tail of an epoch) works."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from polytask import MultiTaskModel
from polytask.nn import BatchNorm1d, mlp


def test_one_row_training_batch_uses_running_statistics_and_leaves_them() -> None:
    torch.manual_seed(0)
    bn = BatchNorm1d(4)
    bn.train()
    bn(torch.randn(64, 4) * 3 + 2)  # running stats away from (0, 1)
    mean, var, seen = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    x = torch.randn(1, 4)
    out = bn(x)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == seen
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(out, expected)
    out.sum().backward()  # and it trains the affine parameters
    assert bn.weight.grad is not None and bool(bn.weight.grad.abs().sum() > 0)


def test_larger_batches_match_torch_batch_norm() -> None:
    ours, ref = BatchNorm1d(5), nn.BatchNorm1d(5)
    ref.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for seed in range(3):
        x = torch.randn(2 + seed, 5, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=0, atol=0)
    ours.eval(), ref.eval()
    x = torch.randn(1, 5)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_mlp_batch_norm_layers_are_ours() -> None:
    net = mlp(3, [8, 4], norm="batch")
    assert sum(isinstance(m, BatchNorm1d) for m in net) == 2


def test_fit_with_batch_norm_when_the_last_batch_has_one_row(toy_frame: pd.DataFrame) -> None:
    df = toy_frame.iloc[: 3 * 64 + 1]  # 193 rows: the last batch of each epoch has one row
    model = MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "shared_bottom", "shared_units": [16], "tower_units": [8], "norm": "batch"},
        training={"epochs": 2, "batch_size": 64, "progress": False},
    )
    model.fit(df)  # torch's BatchNorm1d raised here on the 1-row batch
    assert len(model.history_) == 2
    assert all(np.isfinite(v) for h in model.history_ for v in h["train_loss"].values())
    pred = model.predict(df)
    assert len(pred) == 193 and not pred.isna().any().any()
