"""Config mistakes fail before any data is read, one line per problem, each naming the key,
what was expected and what was found (and the closest valid key for a typo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polytask import ConfigError, MultiTaskModel
from polytask.config import EstimatorConfig, RunConfig, apply_overrides, load_run_file, validate

FEATURES = {"categorical": ["color"], "numeric": ["x"]}
TASKS: dict[str, Any] = {"click": {"type": "binary"}, "dwell": {"type": "regression"}}


def settings(**sections: Any) -> dict[str, Any]:
    return {"features": FEATURES, "tasks": TASKS, **sections}


def problems(raw: dict[str, Any], model: type = EstimatorConfig) -> list[str]:
    """The problem lines of the `ConfigError` that validating ``raw`` raises."""
    with pytest.raises(ConfigError) as info:
        validate(model, raw)
    header, *lines = str(info.value).splitlines()
    assert header == "invalid config:"
    return lines


def test_misspelt_top_level_section_names_the_closest():
    (line,) = problems(settings(trainig={"epochs": 1}))
    assert line.startswith("trainig: unknown key")
    assert "did you mean 'training'?" in line


def test_misspelt_training_key():
    (line,) = problems(settings(training={"epcohs": 3}))
    assert line.startswith("training.epcohs: unknown key")
    assert "did you mean 'epochs'?" in line
    assert "'batch_size'" in line  # the valid keys are listed


def test_misspelt_model_parameter_is_checked_by_that_models_schema():
    (line,) = problems(settings(model={"name": "mmoe", "num_expert": 4}))
    assert line.startswith("model: model 'mmoe': num_expert: unknown key")
    assert "did you mean 'num_experts'?" in line


def test_misspelt_weighting_parameter():
    (line,) = problems(settings(loss={"weighting": "uncertainty", "clmap": [-2, 2]}))
    assert line.startswith("loss: weighting 'uncertainty': clmap: unknown key")
    assert "did you mean 'clamp'?" in line


def test_several_problems_are_reported_at_once_one_line_each():
    lines = problems(settings(trainig={}, optimizer={"lr": -1}, model="mmeo"))
    assert len(lines) == 3
    assert any(x.startswith("trainig: unknown key") for x in lines)
    assert any(x.startswith("optimizer.lr:") and "(found -1)" in x for x in lines)
    assert any(x.startswith("model: unknown model 'mmeo'") for x in lines)


def test_unknown_model_lists_the_models_and_the_closest():
    from polytask.models import MODELS

    (line,) = problems(settings(model="mmeo"))
    assert line == (
        f"model: unknown model 'mmeo'; expected one of {sorted(MODELS)}; did you mean 'mmoe'?"
    )
    assert {"shared_bottom", "moe", "mmoe"} <= set(MODELS)


def test_unknown_weighting_lists_the_weightings_and_the_closest():
    (line,) = problems(settings(loss="uncertanty"))
    assert "unknown weighting 'uncertanty'" in line
    assert "'sum'" in line and "'weighted'" in line
    assert line.endswith("did you mean 'uncertainty'?")


def test_wrong_value_type_shows_what_was_found():
    (line,) = problems(settings(training={"epochs": "many"}))
    assert line.startswith("training.epochs:")
    assert "integer" in line and "(found 'many')" in line


def test_unknown_task_type():
    tasks = {"click": {"type": "binery"}}
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert line.startswith("tasks.click.type:")
    assert "'binary'" in line and "(found 'binery')" in line


def test_inputs_from_an_unknown_task():
    tasks = {**TASKS, "cvr": {"type": "binary", "inputs_from": ["clik"]}}
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert line == (
        "task 'cvr': inputs_from names unknown task 'clik'; expected one of "
        "['click', 'cvr', 'dwell']; did you mean 'click'?"
    )


def test_inputs_from_cycle_is_spelled_out():
    tasks = {
        "a": {"type": "binary", "inputs_from": ["c"]},
        "b": {"type": "binary", "inputs_from": ["a"]},
        "c": {"type": "binary", "inputs_from": ["b"]},
    }
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert line == "tasks' inputs_from form a cycle: a -> c -> b -> a"


def test_label_listed_as_a_feature():
    tasks = {"income": {"type": "binary", "label": "x"}}
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert "task 'income': label column 'x' is also listed as a feature" in line


def test_loss_that_does_not_fit_the_task_type():
    tasks = {"click": {"type": "binary", "loss": "mse"}}
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert line.startswith("tasks.click:")
    assert "loss 'mse' does not fit a binary task; expected one of ['bce']" in line


def test_positive_on_a_non_binary_task():
    tasks = {"dwell": {"type": "regression", "positive": 1}}
    (line,) = problems({"features": FEATURES, "tasks": tasks})
    assert "'positive' is only for binary tasks, found type 'regression'" in line


def test_run_file_without_data_section():
    (line,) = problems(settings(), RunConfig)
    assert line == "data: required key is missing"


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping of sections, found list"):
        validate(EstimatorConfig, ["features"])  # type: ignore[arg-type]


def test_estimator_constructor_raises_the_same_errors():
    with pytest.raises(ConfigError, match=r"training\.epcohs: unknown key.*'epochs'"):
        MultiTaskModel(features=FEATURES, tasks=TASKS, training={"epcohs": 1})


def test_unknown_monitor():
    with pytest.raises(ConfigError) as info:
        MultiTaskModel(features=FEATURES, tasks=TASKS, training={"monitor": "clik.auc"})
    header, line = str(info.value).splitlines()
    assert header == "invalid MultiTaskModel settings:"
    assert line.startswith("training.monitor: unknown monitor 'clik.auc'; expected one of")
    assert line.endswith("did you mean 'click.auc'?")


def test_unknown_monitor_in_a_run_file_fails_before_the_data_is_read(tmp_path):
    path = write(
        tmp_path,
        "features: {numeric: [x]}\ntasks: {y: {type: regression}}\ndata: {train: missing.csv}\n"
        "training: {monitor: y.auc}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    (line,) = str(info.value).splitlines()[1:]
    assert line.startswith("training.monitor: unknown monitor 'y.auc'; expected one of ['loss', ")


def test_weights_for_an_unknown_task(toy_frame):
    with pytest.raises(ConfigError, match=r"loss\.weights names unknown task\(s\) \['clik'\]"):
        MultiTaskModel(
            features=FEATURES,
            tasks=TASKS,
            loss={"weighting": "weighted", "weights": {"clik": 2.0}},
            training={"epochs": 1, "progress": False},
        ).fit(toy_frame)


# ------------------------------------------------------------------------------ overrides


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs", "override 'training.epochs' needs key=value (e.g. training.epochs=3)"),
        ("=3", "override '=3': empty key segment in ''"),
        ("training..epochs=3", "empty key segment in 'training..epochs'"),
        ("features.numeric.x=1", "override 'features.numeric.x=1': 'numeric' is not a section"),
        ("training.epochs=[", "override 'training.epochs=[': value '[' is not valid YAML (line 1"),
    ],
)
def test_bad_override(override, message):
    raw = {"features": {"numeric": ["x"]}, "training": {"epochs": 2}}
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_override_does_not_touch_its_input():
    raw = {"training": {"epochs": 2}}
    out = apply_overrides(raw, ["training.epochs=5", "model.num_experts=3"])
    assert out == {"training": {"epochs": 5}, "model": {"num_experts": 3}}
    assert raw == {"training": {"epochs": 2}}


# ------------------------------------------------------------------------------ run files


def write(tmp_path: Path, text: str | bytes, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_run_file_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"run file '.*nope\.yaml' does not exist"):
        load_run_file(tmp_path / "nope.yaml")


def test_run_file_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"run file '.*' is not a file"):
        load_run_file(tmp_path)


def test_run_file_invalid_yaml_is_one_line_with_its_position(tmp_path):
    path = write(tmp_path, "features:\n  numeric: [x\ntasks: {}\n")
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert "is not valid YAML: line 3, column" in message


def test_run_file_not_utf8(tmp_path):
    path = write(tmp_path, b"features: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8 text"):
        load_run_file(path)


def test_run_file_not_a_mapping(tmp_path):
    path = write(tmp_path, "- features\n- tasks\n")
    with pytest.raises(ConfigError, match=r"expected a mapping of sections, found \['features'"):
        load_run_file(path)


def test_run_file_problems_name_the_file(tmp_path):
    path = write(
        tmp_path,
        "features: {numeric: [x]}\ntasks: {y: {type: regression}}\ndata: {train: t.csv}\n"
        "training: {epcohs: 2}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_run_file(path, ["model.name=mmeo"])
    header, *lines = str(info.value).splitlines()
    assert header == f"invalid run file {str(path)!r} with its overrides:"
    assert sorted(x.split(": ")[0] for x in lines) == [
        "override 'model.name=mmeo'",  # the command line's mistake names the override
        "training.epcohs",  # the file's does not
    ]


RUN_BASE = settings()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"path": "t.csv", "split": {"train": 0.8, "validation": 0.3}},
            "data.split: fractions must sum to 1, found 1.2",
        ),
        (
            {"path": "t.csv", "test": "test.csv"},
            "data: 'path' is cut into train/validation/test by 'split'; ['test'] would be ignored: "
            "give 'train' with 'validation'/'test', or 'path' with 'split' (and 'test' only "
            "with split.test: 0)",
        ),
        (
            {"path": "t.csv", "validation": "v.csv", "test": "test.csv"},
            "data: 'path' is cut into train/validation/test by 'split'; ['validation', 'test'] "
            "would be ignored: give 'train' with 'validation'/'test', or 'path' with 'split' "
            "(and 'test' only with split.test: 0)",
        ),
        (
            {
                "path": "t.csv",
                "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
                "test": "test.csv",
            },
            "data: 'path' is cut into train/validation/test by 'split'; ['test'] would be ignored: "
            "give 'train' with 'validation'/'test', or 'path' with 'split' (and 'test' only "
            "with split.test: 0)",
        ),
        (
            {"train": "t.csv", "split": {"train": 0.5, "validation": 0.5, "test": 0}},
            "data: 'split' cuts 'path' and would be ignored with 'train': give 'path' with "
            "'split', or 'train' with 'validation'/'test'",
        ),
    ],
)
def test_data_section_that_would_be_partly_ignored(data, message):
    assert problems({**RUN_BASE, "data": data}, RunConfig) == [message]


# ------------------------------------------------------------ numbers and sizes (issue 17.5)


_FINITE = "expected a finite number, found"


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ({"optimizer": {"lr": float("inf")}}, f"optimizer.lr: {_FINITE} inf"),
        ({"optimizer": {"momentum": float("inf")}}, f"optimizer.momentum: {_FINITE} inf"),
        (
            {"optimizer": {"group_lr": {"towers.*": float("inf")}}},
            f"optimizer.group_lr.towers.*: {_FINITE} inf",
        ),
        (
            {"tasks": {"click": {"type": "binary", "weight": float("inf")}}},
            f"tasks.click.weight: {_FINITE} inf",
        ),
        (
            {"model": {"name": "mmoe", "gate_temperature": float("inf")}},
            f"model.gate_temperature: {_FINITE} inf",
        ),
        (
            {"loss": {"weighting": "weighted", "weights": {"click": float("nan")}}},
            f"loss.weights.click: {_FINITE} nan",
        ),
        (
            {"training": {"seed": 2**70}},
            "training.seed: 22-digit integer; expected one below 2**63",
        ),
    ],
)
def test_non_finite_numbers_and_huge_integers_are_refused(section, line):
    raw = {**settings(), **section}
    assert problems(raw) == [line]


def test_a_5000_digit_override_is_one_line():
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, ["model.num_experts=" + "9" * 5000])
    assert str(err.value).startswith(
        "override model.num_experts: value cannot be read (Exceeds the limit (4300 digits)"
    )
    assert "\n" not in str(err.value)


def test_a_5000_digit_number_in_a_run_file_is_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {num_experts: " + "9" * 5000 + "}\n")
    with pytest.raises(ConfigError, match=r"a value cannot be read \(Exceeds the limit"):
        load_run_file(path)


def test_an_integer_too_large_for_torch_is_refused_before_building():
    with pytest.raises(ConfigError) as err:
        MultiTaskModel(features=FEATURES, tasks=TASKS, model={"name": "mmoe", "num_experts": 2**62})
    assert str(err.value).startswith("model 'mmoe': ")
    assert "more than model.max_parameters" in str(err.value) or "cannot be built" in str(err.value)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "shared_bottom", "tower_units": [100_000_000_000]},
        {"name": "mmoe", "expert_units": [2_000_000_000]},
        {"name": "ple", "num_shared_experts": 100_000, "expert_units": [100_000]},
    ],
)
def test_a_model_past_the_parameter_budget_is_refused_with_the_figure(model, monkeypatch):
    import torch

    allocated = []
    real_empty = torch.empty

    def empty(*args, **kwargs):
        if kwargs.get("device") is None and torch.get_default_device().type != "meta":
            allocated.append(args)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    with pytest.raises(ConfigError) as err:
        MultiTaskModel(features=FEATURES, tasks=TASKS, model=model)
    message = str(err.value)
    assert message.startswith(f"model {model['name']!r}: ")
    assert "parameters (" in message and "GiB of float32 weights), more than " in message
    assert "model.max_parameters = 500,000,000" in message
    assert allocated == []  # planned on the meta device only


def test_the_parameter_budget_counts_exactly_and_can_be_raised():
    small = {"name": "shared_bottom", "shared_units": [4], "tower_units": [2]}
    # 2 embedding rows x 8 + numeric 1->8 (16) + shared 16->4 (68) + 2 towers 4->2->1 (13 each)
    with pytest.raises(ConfigError, match=r"model 'shared_bottom': 126 parameters"):
        MultiTaskModel(features=FEATURES, tasks=TASKS, model={**small, "max_parameters": 125})
    MultiTaskModel(features=FEATURES, tasks=TASKS, model={**small, "max_parameters": 126})


def test_the_budget_is_checked_again_once_the_vocabulary_is_known(toy_frame):
    frame = toy_frame.iloc[:200]
    small = {"name": "shared_bottom", "shared_units": [4], "tower_units": [2]}
    colors = frame["color"].nunique()  # each adds one embedding row of 8 after fit
    assert colors >= 2
    estimator = MultiTaskModel(
        features=FEATURES, tasks=TASKS, model={**small, "max_parameters": 126 + 8 * colors - 1}
    )  # fits with the smallest vocabulary
    with pytest.raises(ConfigError, match=rf"model 'shared_bottom': {126 + 8 * colors} param"):
        estimator.fit(frame)
