"""The fuzz tests share their strategies through ``fuzz_tables`` beside them (the importlib
import mode does not put test folders on ``sys.path``), and one fitted model."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_tables import FEATURES

from polytask import MultiTaskModel


@pytest.fixture(scope="session")
def fuzz_model() -> MultiTaskModel:
    """A model with a binary, a regression and a multiclass task (classes x, y, z), fitted on
    odd values of every kind: the one that generated rows are predicted with."""
    frame = pd.DataFrame(
        {
            "c1": ["a", "b", "😀", None, 3, 3.0] * 4,
            "c2": [True, False, None, "x", "", "\u202eRTL"] * 4,
            "n1": [0.5, None, -1.0, 2.0, float("inf"), 3.0] * 4,
            "n2": ["1", "2.5", "", "nan", "4", "-1e3"] * 4,
            "b": [0, 1, 1, 0, 1, 0] * 4,
            "r": [1.0, 2.0, None, 0.5, 3.0, 1.5] * 4,
            "m": ["x", "y", "z", "x", "y", None] * 4,
        }
    )
    tasks = {"b": {"type": "binary"}, "r": {"type": "regression"}, "m": {"type": "multiclass"}}
    return MultiTaskModel(
        features=FEATURES,
        tasks=tasks,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [4]},
        training={"epochs": 1, "progress": False},
    ).fit(frame)
