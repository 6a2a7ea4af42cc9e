"""User mistakes through `MultiTaskModel`: each fails before training with a `PolytaskError`
that names the thing, what was expected and what was found."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from polytask import ConfigError, DataError, MultiTaskModel, NotFittedError

TINY = {"name": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [4]}


def model(features: Any, tasks: Any, **kw: Any) -> MultiTaskModel:
    return MultiTaskModel(
        features=features,
        tasks=tasks,
        model=kw.pop("model", TINY),
        training={"epochs": 1, "batch_size": 256, "progress": False, **kw},
    )


def test_missing_column(toy_frame, toy_features, toy_tasks):
    with pytest.raises(DataError, match=r"^training set: missing column\(s\) \['z'\]"):
        model(toy_features, toy_tasks).fit(toy_frame.drop(columns="z"))


def test_missing_column_in_validation(toy_frame, toy_features, toy_tasks):
    with pytest.raises(DataError, match=r"^validation set: missing column\(s\) \['kind'\]"):
        model(toy_features, toy_tasks).fit(toy_frame, validation=toy_frame.drop(columns="kind"))


def test_non_binary_label(toy_frame, toy_features, toy_tasks):
    frame = toy_frame.assign(click=toy_frame["size"])
    with pytest.raises(DataError) as err:
        model(toy_features, toy_tasks).fit(frame)
    assert str(err.value) == (
        "training set: task 'click': label column 'click' has values {0, 1, 2, 3, 4, 5}; a "
        "binary task needs 0/1, booleans or a `positive:` value"
    )


def test_empty_training_set(toy_frame, toy_features, toy_tasks):
    with pytest.raises(DataError, match=r"^training set is empty: expected at least one row"):
        model(toy_features, toy_tasks).fit(toy_frame.iloc[:0])


def test_empty_validation_set(toy_frame, toy_features, toy_tasks):
    with pytest.raises(DataError, match=r"^validation set is empty: expected at least one row"):
        model(toy_features, toy_tasks).fit(toy_frame, validation=toy_frame.iloc[:0])


def test_validation_set_with_a_column_the_training_set_lacks(toy_frame, toy_features, toy_tasks):
    valid = toy_frame.assign(weight=1.0)
    with pytest.raises(DataError) as err:
        model(toy_features, toy_tasks).fit(toy_frame, validation=valid)
    assert str(err.value).startswith(
        "validation set has column(s) ['weight'] that the training set and the schema lack"
    )


def test_unseen_class_in_multiclass_validation(toy_frame, toy_features, toy_tasks):
    valid = toy_frame.iloc[:10].assign(kind=["a"] * 9 + ["zz"])
    with pytest.raises(DataError) as err:
        model(toy_features, toy_tasks).fit(toy_frame, validation=valid)
    assert str(err.value) == (
        "validation set: task 'kind': label column 'kind' has class(es) ['zz'] not seen in "
        "training; known classes are ['a', 'b', 'c']"
    )


def test_positive_that_never_occurs(toy_frame, toy_features):
    tasks = {"kind": {"type": "binary", "positive": "d"}}
    with pytest.raises(DataError, match=r"positive value 'd' never occurs in label column 'kind'"):
        model(toy_features, tasks).fit(toy_frame)


def test_numeric_column_with_text(toy_frame, toy_features, toy_tasks):
    frame = toy_frame.astype({"x": object})
    frame.loc[7, "x"] = "3,5"
    with pytest.raises(
        DataError, match=r"numeric column 'x' has non-numeric values such as \['3,5'\]"
    ):
        model(toy_features, toy_tasks).fit(frame)


def test_label_listed_as_a_feature(toy_features, toy_tasks):
    features = {**toy_features, "numeric": ["x", "dwell"]}
    with pytest.raises(ConfigError, match="label column 'dwell' is also listed as a feature"):
        model(features, toy_tasks)


def test_unknown_model(toy_features, toy_tasks):
    with pytest.raises(ConfigError, match=r"unknown model 'mmeo'.*did you mean 'mmoe'\?"):
        model(toy_features, toy_tasks, model="mmeo")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"epochs": 0},
            "fit: training.epochs: Input should be greater than or equal to 1 (found 0)",
        ),
        ({"batch_size": "all"}, "fit: training.batch_size: Input should be a valid integer"),
    ],
)
def test_bad_fit_arguments(toy_frame, toy_features, toy_tasks, kwargs, message):
    with pytest.raises(ConfigError) as err:
        model(toy_features, toy_tasks).fit(toy_frame, **kwargs)
    assert str(err.value).startswith(message)


def test_unknown_device(toy_frame, toy_features, toy_tasks):
    with pytest.raises(ConfigError, match=r"training.device: expected 'cpu'.*found 'gpu'"):
        model(toy_features, toy_tasks, device="gpu").fit(toy_frame)


@pytest.mark.parametrize("method", ["predict", "evaluate", "gate_statistics", "save"])
def test_use_before_fit(toy_frame, toy_features, toy_tasks, method, tmp_path):
    arg = tmp_path / "m" if method == "save" else toy_frame
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        getattr(model(toy_features, toy_tasks), method)(arg)


@pytest.fixture(scope="module")
def fitted() -> MultiTaskModel:
    frame = pd.DataFrame(
        {
            "color": ["red", "blue", "green", "red"] * 5,
            "x": range(20),
            "click": [0, 1] * 10,
            "kind": ["a", "b", "c", "a"] * 5,
        }
    )
    tasks = {"click": {"type": "binary"}, "kind": {"type": "multiclass"}}
    return model({"categorical": ["color"], "numeric": ["x"]}, tasks).fit(frame)


def test_predict_missing_column(fitted):
    with pytest.raises(DataError, match=r"^prediction data: missing column\(s\) \['x'\]"):
        fitted.predict(pd.DataFrame({"color": ["red"]}))


def test_predict_unseen_categories_map_to_unknown(fitted):
    rows = pd.DataFrame({"color": ["purple", None, 3], "x": [1.0, None, float("inf")]})
    out = fitted.predict(rows)
    encoded = fitted.encode(rows, labels=False)
    assert encoded.categorical[:, 0].tolist() == [1, 0, 1]
    assert out["click"].between(0, 1).all()
    assert set(out["kind"]) <= {"a", "b", "c"}


def test_predict_empty_table_gives_empty_predictions(fitted):
    out = fitted.predict(pd.DataFrame({"color": [], "x": []}))
    assert len(out) == 0
    assert list(out.columns) == ["click", "kind", "kind.proba.a", "kind.proba.b", "kind.proba.c"]


def test_evaluate_with_an_unseen_class(fitted):
    rows = pd.DataFrame({"color": ["red"], "x": [1.0], "click": [1], "kind": ["z"]})
    with pytest.raises(DataError, match=r"evaluation data: task 'kind'.*class\(es\) \['z'\]"):
        fitted.evaluate(rows)


@pytest.mark.parametrize("as_mapping", [False, True])
def test_streaming_needs_a_parquet_path(toy_frame, toy_features, toy_tasks, as_mapping):
    train = {t: toy_frame for t in toy_tasks} if as_mapping else toy_frame
    found = "a mapping {task: table}" if as_mapping else "a DataFrame"
    with pytest.raises(ConfigError) as err:
        model(toy_features, toy_tasks, stream={}).fit(train)
    assert str(err.value) == (
        "training.stream reads the training set from a Parquet file: pass its path "
        f"(fit('train.parquet', ...)); found {found}"
    )


def test_alternate_refuses_a_combining_weighting_without_building_it(
    toy_frame, toy_features, toy_tasks, monkeypatch
):
    from polytask.weighting import RLW

    def constructed(*args, **kwargs):
        raise AssertionError("the weighting was built only to look at its class")

    monkeypatch.setattr(RLW, "__init__", constructed)
    settings = model(toy_features, toy_tasks, schedule="alternate").config.model_dump()
    settings["loss"] = "rlw"
    # refused by the constructor, as `polytask train` refuses the run file: before any data
    with pytest.raises(ConfigError, match=r"\nloss\.weighting 'rlw' combines tasks within a step"):
        MultiTaskModel(**settings)
