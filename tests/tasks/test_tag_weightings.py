"""Every loss weighting and gradient aggregator trains a sequence model with tag tasks at two
depths (POS at layer 1, chunks at layer 2)."""

from __future__ import annotations

import math

import pytest
import torch

from polytask import MultiTaskModel
from polytask.weighting import WEIGHTINGS

from .test_tag import config, sentences


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_every_weighting_trains_tag_tasks_at_two_depths(weighting: str) -> None:
    cfg = config()
    cfg["loss"] = {"weighting": weighting}
    cfg["training"]["epochs"] = 1
    torch.manual_seed(0)
    model = MultiTaskModel(**cfg).fit(sentences(64), sentences(16, seed=1))
    record = model.history_[-1]
    assert all(math.isfinite(v) for v in record["train_loss"].values()), record
    m = model.evaluate(sentences(16, seed=2))
    assert 0 < m["pos"]["accuracy"] <= 1 and math.isfinite(m["chunk"]["loss"])
