"""The torchjd aggregators as polytask weightings: wiring, closed forms, optional extras."""

from __future__ import annotations

import math
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from polytask import MultiTaskModel
from polytask.errors import ConfigError
from polytask.tasks import TaskSpec
from polytask.weighting import GradientWeighting, Weighting

pytestmark = pytest.mark.filterwarnings("ignore:.*not DPP:UserWarning")

TASKS = {"a": TaskSpec(type="binary"), "b": TaskSpec(type="regression")}
ORTHOGONAL = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
"""g_a = (3, 0), g_b = (0, 4): no conflict, different norms; every method has a closed form."""

SQRT_HALF = math.sqrt(0.5)

CLOSED_FORMS: list[tuple[str, dict[str, Any], tuple[float, float]]] = [
    # No conflict: the projections are identities, the mean is kept.
    ("upgrad", {}, (1.5, 2.0)),
    ("dualproj", {}, (1.5, 2.0)),
    # Min-norm point of the hull: w = (16, 9) / 25.
    ("mgda", {}, (48 / 25, 36 / 25)),
    # Nothing to project: the sum.
    ("pcgrad", {}, (3.0, 4.0)),
    # Every coordinate has one sign: nothing dropped, the sum.
    ("graddrop", {}, (3.0, 4.0)),
    # c = 0: the mean gradient g0 = (1.5, 2). c = 0.4: the ball of radius c ||g0|| = 1 around
    # g0, worst task a (g_a . g0 = 4.5 < 8), so the step is g0 + (1, 0).
    ("cagrad", {"c": 0.0}, (1.5, 2.0)),
    ("cagrad", {"c": 0.4}, (2.5, 2.0)),
    # Equal projections on the unit gradients: 3 w_a = 4 w_b, w summing to 1.
    ("imtl_g", {}, (12 / 7, 12 / 7)),
    # Rows rescaled to the smallest singular value (3), mean preference.
    ("aligned_mtl", {}, (1.5, 1.5)),
    # (J J^T) w = 1 / w: w = (1/3, 1/4), J^T w = (1, 1); clipped to norm max_norm = 1.
    ("nash_mtl", {"max_norm": 0.0}, (1.0, 1.0)),
    ("nash_mtl", {}, (SQRT_HALF, SQRT_HALF)),
    # alpha = 1 (proportional fairness): the same equation as Nash-MTL, unclipped.
    ("fairgrad", {"alpha": 1.0}, (1.0, 1.0)),
    # Equal cosine to both: along (1, 1), length 3/sqrt2 + 4/sqrt2.
    ("config", {}, (3.5, 3.5)),
    # Preferences in task order, whatever the order of the mapping.
    ("upgrad", {"pref_vector": {"b": 1.0, "a": 0.0}}, (0.0, 4.0)),
    ("dualproj", {"pref_vector": {"b": 0.0, "a": 1.0}}, (3.0, 0.0)),
    ("config", {"pref_vector": {"b": 1.0, "a": 1.0}}, (3.5, 3.5)),
]


@pytest.mark.parametrize(("name", "params", "expected"), CLOSED_FORMS)
def test_closed_forms_on_orthogonal_gradients(
    name: str,
    params: dict[str, Any],
    expected: tuple[float, float],
    build_weighting: Callable[..., Weighting],
) -> None:
    weighting = build_weighting(name, TASKS, **params)
    assert isinstance(weighting, GradientWeighting)
    update = weighting.combine(torch.tensor([1.0, 1.0], requires_grad=True), ORTHOGONAL)
    assert update.direction.tolist() == pytest.approx(list(expected), rel=1e-4, abs=1e-5)
    # The towers' objective is the plain sum of the losses.
    assert float(update.objective.detach()) == 2.0


def test_report_is_the_epoch_mean_of_the_weights(
    build_weighting: Callable[..., Weighting],
) -> None:
    mgda = build_weighting("mgda", TASKS)
    assert mgda.report() == {}
    assert isinstance(mgda, GradientWeighting)
    # The step calls after_step once the update is applied: only applied steps count.
    mgda.combine(torch.ones(2), ORTHOGONAL)  # w = (16, 9) / 25
    mgda.after_step()
    mgda.combine(torch.ones(2), torch.diag(torch.tensor([1.0, 10.0])))  # skipped: no after_step
    mgda.combine(torch.ones(2), torch.eye(2))  # w = (1/2, 1/2)
    mgda.after_step()
    mgda.epoch_end(torch.ones(2))
    assert mgda.report() == pytest.approx(
        {"weight.a": (16 / 25 + 0.5) / 2, "weight.b": (9 / 25 + 0.5) / 2}
    )
    mgda.combine(torch.ones(2), torch.eye(2))
    mgda.after_step()
    mgda.epoch_end(torch.ones(2))  # a new epoch starts from scratch
    assert mgda.report() == pytest.approx({"weight.a": 0.5, "weight.b": 0.5})


def test_methods_that_are_not_weighted_sums_report_nothing(
    build_weighting: Callable[..., Weighting],
) -> None:
    for name in ("graddrop", "config"):
        weighting = build_weighting(name, TASKS)
        assert isinstance(weighting, GradientWeighting)
        weighting.combine(torch.ones(2), ORTHOGONAL)
        weighting.epoch_end(torch.ones(2))
        assert weighting.report() == {}


def test_per_task_values_must_name_every_task(build_weighting: Callable[..., Weighting]) -> None:
    with pytest.raises(
        ValueError, match=r"upgrad pref_vector: .* \(missing \['b'\], unknown \['c'\]\)"
    ):
        build_weighting("upgrad", TASKS, pref_vector={"a": 1.0, "c": 2.0})


EXTRAS = [
    ("upgrad", "quadprog", "quadprog"),
    ("dualproj", "qpsolvers", "quadprog"),
    ("cagrad", "cvxpy", "cagrad"),
    ("nash_mtl", "ecos", "nash-mtl"),
]


@pytest.mark.parametrize(("name", "module", "extra"), EXTRAS)
def test_missing_extra_names_the_pip_install(
    name: str,
    module: str,
    extra: str,
    build_weighting: Callable[..., Weighting],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(ConfigError) as info:
        build_weighting(name, TASKS)
    message = str(info.value)
    assert f"weighting {name!r} needs [{module!r}]" in message
    assert f"pip install 'polytask[{extra}]'" in message
    assert f"from a source checkout: pip install -e '.[{extra}]'" in message


def test_extras_named_in_errors_are_declared_in_pyproject() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    expected = {"quadprog": "quadprog-projector", "cagrad": "cagrad", "nash-mtl": "nash-mtl"}
    for extra, torchjd_extra in expected.items():
        assert any(f"torchjd[{torchjd_extra}]" in req for req in extras[extra]), extra
    # The test suite runs every method, so the development install brings every extra.
    dev = " ".join(extras["dev"])
    for torchjd_extra in expected.values():
        assert torchjd_extra in dev, torchjd_extra


def test_missing_extra_fails_fit_with_a_config_error(
    toy_frame: Any, toy_features: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        loss={"weighting": "cagrad", "c": 0.5},
        training={"epochs": 1, "progress": False},
    )
    with pytest.raises(ConfigError, match=r"^loss: weighting 'cagrad' needs \['cvxpy'\]"):
        model.fit(toy_frame)


def test_fit_save_load_with_an_aggregator(
    toy_frame: Any, toy_features: dict[str, list[str]], tmp_path: Path
) -> None:
    model = MultiTaskModel(
        features=toy_features,
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [8]},
        loss={"weighting": "upgrad", "pref_vector": {"click": 0.5, "dwell": 0.5}},
        training={"epochs": 2, "batch_size": 256, "progress": False},
    ).fit(toy_frame)
    first, last = model.history_[0], model.history_[-1]
    assert {"weight.click", "weight.dwell"} <= set(last)
    assert all(last["train_loss"][t] < first["train_loss"][t] for t in ("click", "dwell"))
    loaded = MultiTaskModel.load(model.save(tmp_path / "m"))
    assert loaded.predict(toy_frame.head(50)).equals(model.predict(toy_frame.head(50)))
