"""Split metrics: the reported loss is the training loss, computed from the logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polytask.metrics import task_metrics
from polytask.tasks import TaskSpec


def test_binary_loss_is_bce_with_logits_even_for_extreme_logits() -> None:
    task = TaskSpec(**{"type": "binary"})
    logits = np.array([-30.0, 2.0, -1.0, 40.0, 0.0])
    labels = np.array([1.0, 0.0, 1.0, 0.0, np.nan])  # the unlabelled row is left out
    expected = float(
        F.binary_cross_entropy_with_logits(
            torch.tensor(logits[:4], dtype=torch.float64), torch.tensor(labels[:4])
        )
    )
    got = task_metrics(task, logits, labels)
    assert got["loss"] == pytest.approx(expected, rel=1e-12)
    assert got["logloss"] == got["loss"]
    assert got["count"] == 4.0
    one = task_metrics(task, np.array([-30.0]), np.array([1.0]))
    assert one["loss"] == pytest.approx(30.0, rel=1e-12)  # not -log(1e-7) = 16.1


def test_multiclass_loss_is_cross_entropy_from_logits() -> None:
    task = TaskSpec(**{"type": "multiclass"})
    logits = np.array([[-40.0, 40.0, 0.0], [1.0, 2.0, 3.0], [500.0, -500.0, 0.0]])
    labels = np.array([0.0, 2.0, 0.0])
    expected = float(
        F.cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.tensor([0, 2, 0]))
    )
    got = task_metrics(task, logits, labels)
    assert got["loss"] == pytest.approx(expected, rel=1e-12)
    assert got["logloss"] == got["loss"]
    assert got["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_regression_loss_is_the_training_loss(loss: str) -> None:
    task = TaskSpec(**{"type": "regression", "loss": loss, "huber_delta": 0.7})
    out = np.array([0.0, 1.5, -3.0, 10.0])
    y = np.array([0.2, 0.0, 1.0, 10.0])
    fn = F.mse_loss if loss == "mse" else lambda a, b: F.huber_loss(a, b, delta=0.7)
    expected = float(fn(torch.tensor(out), torch.tensor(y)))
    assert task_metrics(task, out, y)["loss"] == pytest.approx(expected, rel=1e-12)
