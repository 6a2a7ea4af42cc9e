"""Saved model folders: a faithful round trip, atomic saves, and loads that refuse anything
but plain data (safetensors, JSON, safe YAML) without ever running code from the folder."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest
import safetensors.torch
import torch
import yaml

import polytask
import polytask.estimator
from polytask import ModelFileError, MultiTaskModel
from polytask.estimator import FORMAT_VERSION, READABLE_FORMATS

FILES = ["config.yaml", "history.json", "polytask.json", "preprocessor.json", "weights.safetensors"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[MultiTaskModel, Path, pd.DataFrame]:
    frame = pd.DataFrame(
        {
            "color": ["red", "blue", "green", None, "red", "blue"] * 10,
            "x": [0.5, None, -1.0, 2.0, float("inf"), 3.0] * 10,
            "click": [0, 1, 1, 0, 1, 0] * 10,
            "dwell": [1.0, 2.0, None, 0.5, 3.0, 1.5] * 10,
            "kind": ["a", "b", "c", "a", "b", None] * 10,
        }
    )
    model = MultiTaskModel(
        features={"categorical": ["color"], "numeric": ["x"]},
        tasks={
            "click": {"type": "binary"},
            "dwell": {"type": "regression"},
            "kind": {"type": "multiclass"},
        },
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        loss="uncertainty",
        training={"epochs": 2, "batch_size": 16, "progress": False},
    ).fit(frame)
    folder = model.save(tmp_path_factory.mktemp("models") / "model")
    return model, folder, frame


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    """A fresh copy of the saved folder, free to damage."""
    return Path(shutil.copytree(saved[1], tmp_path / "model"))


def test_folder_holds_exactly_the_documented_files(saved):
    assert sorted(p.name for p in saved[1].iterdir()) == FILES
    meta = json.loads((saved[1] / "polytask.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION


def test_round_trip_gives_identical_predictions(saved):
    model, folder, frame = saved
    loaded = MultiTaskModel.load(folder)
    new_rows = frame.assign(color=["purple", None, "red"] * 20).iloc[::-1]  # unseen, reordered
    for rows in (frame, new_rows):
        pdt.assert_frame_equal(loaded.predict(rows), model.predict(rows), check_exact=True)
    assert loaded.evaluate(frame) == model.evaluate(frame)
    assert loaded.preprocessor_.state_dict() == model.preprocessor_.state_dict()
    assert loaded.config == model.config


class _RunsCode:
    """Pickling this object records a call that touches ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_refused_without_running_them(copy, tmp_path):
    marker = tmp_path / "code-ran"
    weights = copy / "weights.safetensors"
    torch.save({"network.weight": _RunsCode(marker)}, weights)
    # the payload is live: unpickling it the unsafe way does run it
    torch.load(io.BytesIO(weights.read_bytes()), weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{weights}: not a readable safetensors file")
    assert "looks like a torch.save/pickle file" in message


@pytest.mark.parametrize("keep", [0, 7, 100, -16])
def test_truncated_weights(copy, keep):
    weights = copy / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep])
    with pytest.raises(ModelFileError, match=f"^{weights}: not a readable safetensors file"):
        MultiTaskModel.load(copy)


def test_weights_that_do_not_fit_the_config(copy):
    weights = copy / "weights.safetensors"
    safetensors.torch.save_file({"network.other": torch.zeros(2)}, str(weights))
    with pytest.raises(ModelFileError, match=f"^{weights}: weights do not fit the saved config"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize("name", FILES[:1] + FILES[2:])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(ModelFileError, match=f"^{copy / name}"):
        MultiTaskModel.load(copy)


def test_missing_history_is_not_needed(copy):
    (copy / "history.json").unlink()
    assert MultiTaskModel.load(copy).history_ == []


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"model folder '.*nothing' does not exist"):
        MultiTaskModel.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["polytask.json", "preprocessor.json", "history.json"])
@pytest.mark.parametrize("text", ["{truncated", "\ufeff{}", "\udc80"])
def test_bad_json_is_named(copy, name, text):
    (copy / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ModelFileError, match=f"^{copy / name}: not valid JSON"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("polytask.json", "[1]", "expected a JSON object, found list"),
        ("preprocessor.json", "[1]", "preprocessor state is malformed"),
        (
            "preprocessor.json",
            '{"vocabularies": {}, "numeric": {}, "classes": {}}',
            "preprocessor state has vocabularies for [], the config expects ['color']",
        ),
        ("config.yaml", "- 1\n", "expected a mapping of sections, found list"),
        ("config.yaml", "features: {numeric: [x]}\n", "tasks: required key is missing"),
        ("config.yaml", "features: [\n", "not valid YAML: line 2"),
    ],
)
def test_malformed_file_is_named(copy, name, text, message):
    (copy / name).write_text(text)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value).startswith(str(copy / name))
    assert message in str(err.value)


def test_preprocessor_state_with_bad_statistics(copy):
    state = json.loads((copy / "preprocessor.json").read_text())
    state["numeric"]["x"]["std"] = 0.0
    (copy / "preprocessor.json").write_text(json.dumps(state))
    with pytest.raises(ModelFileError, match=r"numeric column 'x' has mean .* and std 0\.0"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 0, "1", None])
def test_unsupported_format_version(copy, version):
    meta = json.loads((copy / "polytask.json").read_text())
    meta.update(format_version=version, polytask_version="9.9.9")
    (copy / "polytask.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{copy}: model format version {version!r} (written by polytask '9.9.9') cannot be read "
        f"by polytask {polytask.__version__}, which reads format version(s) "
        f"{list(READABLE_FORMATS)}"
    )


def test_yaml_python_tags_are_refused_without_running_them(copy, tmp_path):
    marker = tmp_path / "code-ran"
    config = copy / "config.yaml"
    config.write_text(
        f"run: !!python/object/apply:os.mkdir [{str(marker)!r}]\n" + config.read_text()
    )
    # the payload is live: the unsafe loader does run it
    yaml.unsafe_load(config.read_text())
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert not marker.exists()
    assert str(err.value).startswith(f"{config}: refused: line 1, column 6")
    assert "read without constructing Python objects" in str(err.value)


# ------------------------------------------------------------------------------ atomic save


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failed_save_leaves_the_previous_model_and_no_temporary_folder(saved, copy, monkeypatch):
    model = saved[0]
    before = folder_bytes(copy)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    monkeypatch.setattr(polytask.estimator, "save_file", fail, raising=False)
    with pytest.raises(OSError, match="disk full"):
        model.save(copy)
    assert folder_bytes(copy) == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["model"]
    MultiTaskModel.load(copy)


def test_save_replaces_a_previous_model_whole(saved, copy):
    (copy / "stale.txt").write_text("from an older save")
    saved[0].save(copy)
    assert sorted(p.name for p in copy.iterdir()) == FILES
    assert sorted(p.name for p in copy.parent.iterdir()) == ["model"]


def test_failed_first_save_leaves_nothing(saved, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    monkeypatch.setattr(polytask.estimator, "save_file", fail, raising=False)
    with pytest.raises(RuntimeError):
        saved[0].save(tmp_path / "new")
    assert os.listdir(tmp_path) == []


def test_a_model_trained_with_an_aggregator_loads_and_predicts_without_its_extra(
    toy_frame, tmp_path, monkeypatch
):
    """upgrad needs the `quadprog` extra to train, not to predict: a saved model loads on a
    machine without it, and only using the weighting names the missing extra."""
    import importlib

    from polytask.errors import MissingExtraError
    from polytask.weighting import _aggregators

    frame = toy_frame.drop(columns=["kind"]).iloc[:600]
    model = MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        model={"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        loss="upgrad",
        training={"epochs": 1, "batch_size": 200, "progress": False},
    ).fit(frame)
    model.save(tmp_path / "m")
    expected = model.predict(frame)

    real_import = importlib.import_module

    def without_quadprog(name, *args, **kwargs):
        if name == "quadprog":
            raise ImportError("No module named 'quadprog'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(_aggregators.importlib, "import_module", without_quadprog)
    with pytest.raises(MissingExtraError, match=r"pip install 'polytask\[quadprog\]'"):
        MultiTaskModel.from_config(model.config).fit(frame)  # training does need it
    loaded = MultiTaskModel.load(tmp_path / "m")
    pdt.assert_frame_equal(loaded.predict(frame), expected)
    assert loaded.evaluate(frame).keys() == {"click", "dwell"}
    loaded.save(tmp_path / "again")
    assert MultiTaskModel.load(tmp_path / "again").config == model.config
    with pytest.raises(MissingExtraError, match="quadprog"):
        loaded.weighting_(torch.zeros(2))


def test_a_bad_load_device_is_named_as_the_argument(saved, monkeypatch):
    with pytest.raises(polytask.ConfigError) as err:
        MultiTaskModel.load(saved[1], device="gpu")
    assert str(err.value) == "device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', found 'gpu'"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(polytask.ConfigError) as err:
        MultiTaskModel.load(saved[1], device="cuda")
    assert str(err.value) == "device: 'cuda' requested but CUDA is not available"
