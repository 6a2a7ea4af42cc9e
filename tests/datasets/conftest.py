"""Locating ``shared/data``, the read-only data directory that sits beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "POLYTASK_SHARED_DATA"


def shared_data_dir() -> Path:
    """``<repo root>/../shared/data``, or ``$POLYTASK_SHARED_DATA`` when set.

    A git worktree nested in the main checkout (``<main>/.worktrees/<branch>``) has no
    ``shared/`` beside it, so the ancestors of the repository root are tried after its parent.
    The tests fail, rather than skip, when the directory cannot be found: CI must not go green
    without having read the real data.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        candidates = [Path(override)]
    else:
        candidates = [parent / "shared" / "data" for parent in REPO_ROOT.parents]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if override:
        pytest.fail(f"${ENV_VAR} is {override!r}, which is not a directory", pytrace=False)
    pytest.fail(
        f"shared data directory not found: expected {candidates[0]}, the 'shared/data' "
        f"directory beside the repository root {REPO_ROOT} (or set ${ENV_VAR}); also tried "
        f"{[str(c) for c in candidates[1:]]}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def census_test_file() -> Path:
    """The official UCI Census-Income (KDD) test file, 99,762 rows."""
    path = shared_data_dir() / "census-income-kdd" / "census-income.test.gz"
    if not path.is_file():
        pytest.fail(f"census-income test file not found: expected {path}", pytrace=False)
    return path
