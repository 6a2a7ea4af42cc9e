"""A small two-task problem and builders shared by the weighting tests.

Fixtures rather than importable helpers: under ``--import-mode=importlib`` test modules cannot
import each other or a conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch

from polytask.config import OptimizerConfig, TrainingConfig
from polytask.data import LABEL_PREFIX, EncodedData
from polytask.losses import task_losses
from polytask.models import MODELS, Head, MultiTaskNet
from polytask.nn import FeatureInput
from polytask.tasks import TaskSpec
from polytask.training import build_optimizer, fit_loop
from polytask.weighting import WEIGHTINGS, Weighting


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These models are tiny: a second intra-op thread only adds synchronisation, and on a
    busy 2-core machine spinning threads made each test up to 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def two_tasks() -> dict[str, TaskSpec]:
    """A binary and a regression task (different loss scales)."""
    return {"click": TaskSpec(type="binary"), "dwell": TaskSpec(type="regression")}


@pytest.fixture
def two_task_data() -> EncodedData:
    """256 rows, 2 categorical and 3 numeric columns; ``click`` depends on x0 and a category,
    ``dwell`` (scale ~3) on x1 - x2 and on x0: the tasks share some signal and conflict on the
    rest."""
    g = torch.Generator().manual_seed(0)
    n = 256
    cat = torch.randint(0, 5, (n, 2), generator=g)
    num = torch.randn(n, 3, generator=g)
    u = num[:, 0] + 0.5 * (cat[:, 0] == 1).float()
    click = (u + 0.3 * torch.randn(n, generator=g) > 0).float()
    dwell = 3 * (num[:, 1] - num[:, 2]) + 0.5 * u
    return EncodedData(categorical=cat, numeric=num, labels={"click": click, "dwell": dwell})


def _make_model(name: str, task_names: list[str], types: Mapping[str, str]) -> MultiTaskNet:
    inputs = FeatureInput(
        cardinalities=[5, 5], embedding_dims=[4, 4], numeric_width=3, numeric_dim=4
    )
    body: dict[str, Any] = (
        {"shared_units": [16]}
        if name == "shared_bottom"
        else {"num_experts": 3, "expert_units": [8]}
    )
    entry = MODELS[name]
    params = entry.params.model_validate({**body, "tower_units": [8]})
    heads = [Head(name=t, type=types[t]) for t in task_names]
    model: MultiTaskNet = entry.build(inputs=inputs, heads=heads, params=params)
    return model


@pytest.fixture
def make_model(two_tasks: dict[str, TaskSpec]) -> Callable[..., MultiTaskNet]:
    """``make_model("shared_bottom" | "moe" | "mmoe")``: a tiny model for ``two_tasks``,
    seeded."""

    def make(name: str = "shared_bottom", *, seed: int = 0) -> MultiTaskNet:
        torch.manual_seed(seed)
        types = {n: t.type for n, t in two_tasks.items()}
        return _make_model(name, list(two_tasks), types)

    return make


@pytest.fixture
def build_weighting() -> Callable[..., Weighting]:
    """``build_weighting(name, tasks, **params)`` through the registry, as the estimator does."""

    def build(name: str, tasks: Mapping[str, TaskSpec], **params: Any) -> Weighting:
        entry = WEIGHTINGS[name]
        weighting: Weighting = entry.build(tasks=tasks, params=entry.params.model_validate(params))
        return weighting

    return build


@pytest.fixture
def full_losses(two_tasks: dict[str, TaskSpec]) -> Callable[[MultiTaskNet, EncodedData], Any]:
    """Task losses ``[K]`` of a model on a whole split, in eval mode, without gradient."""

    @torch.no_grad()
    def losses(model: MultiTaskNet, data: EncodedData) -> torch.Tensor:
        was = model.training
        model.eval()
        batch = data.slice(0, len(data))
        out = model(batch)
        labels = {n: batch[LABEL_PREFIX + n] for n in two_tasks}
        result = task_losses(two_tasks, out, labels)
        model.train(was)
        return result

    return losses


@pytest.fixture
def train_briefly(two_tasks: dict[str, TaskSpec]) -> Callable[..., Any]:
    """``train_briefly(model, weighting, data, epochs=6)``: Adam at 0.01, batches of 64,
    through `fit_loop` (whose step combines per-task gradients for a `GradientWeighting`)."""

    def train(
        model: MultiTaskNet, weighting: Weighting, data: EncodedData, *, epochs: int = 6
    ) -> Any:
        groups = model.parameter_groups()
        if any(True for _ in weighting.parameters()):
            groups["weighting"] = list(weighting.parameters())
        optimizer = build_optimizer(groups, OptimizerConfig(name="adam", lr=0.01))
        cfg = TrainingConfig(epochs=epochs, batch_size=64, progress=False)
        return fit_loop(
            model=model,
            weighting=weighting,
            tasks=two_tasks,
            optimizer=optimizer,
            scheduler=None,
            train=data,
            validation=None,
            cfg=cfg,
        )

    return train
