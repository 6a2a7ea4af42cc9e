"""Shared fixtures: seeded RNGs and the location of ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "POLYTASK_SHARED_DATA"


def shared_data_dir() -> Path:
    """``<repo>/../shared/data``, or ``$POLYTASK_SHARED_DATA`` when set.

    A git worktree nested in a checkout (``<main>/.worktrees/<branch>``) has no ``shared/``
    beside it, so the repository's further ancestors are tried too. A missing directory fails
    the test: CI must never go green without having read the real data.
    """
    override = os.environ.get(ENV_VAR)
    candidates = [Path(override)] if override else [p / "shared" / "data" for p in REPO.parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    pytest.fail(
        f"shared data directory not found: expected {candidates[0]} (the 'shared/data' folder "
        f"beside the repository), or set ${ENV_VAR}",
        pytrace=False,
    )


def shared_data(*parts: str) -> Path:
    """A path under shared/data; a missing file fails the test (never a silent skip)."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data {path} is missing", pytrace=False)
    return path


@pytest.fixture(scope="session")
def census_test_file() -> Path:
    """The official UCI Census-Income (KDD) test file, 99,762 rows."""
    return shared_data("census-income-kdd", "census-income.test.gz")


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The ml-100k folder (u.data, u.item, u.user, ...)."""
    return shared_data("movielens-100k")


@pytest.fixture(scope="session")
def conll2000() -> Path:
    """The CoNLL-2000 chunking corpus folder (train.txt, test.txt)."""
    return shared_data("conll2000")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def toy_frame() -> pd.DataFrame:
    """2,000 rows: two categorical and two numeric features, a binary, a regression and a
    multiclass label that depend on them."""
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.integers(0, 6, n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n) * 3 + 1,
        }
    )
    logit = 1.5 * df.x + (df.color == "red") - 0.5 + 0.3 * rng.normal(size=n)
    df["click"] = (logit > 0).astype(int)
    df["dwell"] = 2.0 * df.x + 0.5 * df["size"] + rng.normal(size=n)
    df["kind"] = np.where(df.x > 0.5, "a", np.where(df.x < -0.5, "c", "b"))
    return df


@pytest.fixture
def toy_features() -> dict[str, list[str]]:
    return {"categorical": ["color", "size"], "numeric": ["x", "z"]}


@pytest.fixture
def toy_tasks() -> dict[str, dict[str, str]]:
    """A binary, a regression and a multiclass task on `toy_frame`."""
    return {
        "click": {"type": "binary"},
        "dwell": {"type": "regression"},
        "kind": {"type": "multiclass"},
    }


# Fuzz tests (tests/fuzz): reproducible by default (derandomized, no example database), so CI
# sees the same examples on every run; `pytest --hypothesis-profile=thorough` explores more.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", settings.get_profile("ci"), derandomize=False, max_examples=1000
)
settings.load_profile(os.environ.get("POLYTASK_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test, restored after it.

    Tiny models gain nothing from a second thread, and on a loaded machine the threads'
    spin-waits make each step an order of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
