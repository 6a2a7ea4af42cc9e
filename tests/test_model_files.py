"""Saved model folders: a faithful round trip, atomic saves, and loads that refuse anything
but plain data (safetensors, JSON, safe YAML) without ever running code from the folder."""

from __future__ import annotations

import io
import json
import os
import re
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
from polytask import ModelFileError, MultiTaskModel, modelfile
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


def resign(folder: Path) -> None:
    """List the folder's files as they are now in polytask.json's manifest, as if polytask
    had written them: the checks behind the manifest are then what refuses a damaged file.
    A file that is gone is dropped from the manifest."""
    meta_file = folder / "polytask.json"
    meta = json.loads(meta_file.read_text())
    meta["files"] = {
        name: modelfile.digest((folder / name).read_bytes())
        for name in modelfile.FILES
        if (folder / name).exists()
    }
    meta_file.write_text(json.dumps(meta))


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

    resign(copy)
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
    resign(copy)
    with pytest.raises(ModelFileError, match=f"^{weights}: not a readable safetensors file"):
        MultiTaskModel.load(copy)


def test_weights_that_do_not_fit_the_config(copy):
    weights = copy / "weights.safetensors"
    safetensors.torch.save_file({"network.other": torch.zeros(2)}, str(weights))
    resign(copy)
    with pytest.raises(ModelFileError, match=f"^{weights}: weights do not fit the saved config"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize("name", FILES[:1] + FILES[2:])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(ModelFileError, match=f"^{copy / name}"):
        MultiTaskModel.load(copy)


def test_missing_history_is_not_needed(copy):
    (copy / "history.json").unlink()
    resign(copy)
    assert MultiTaskModel.load(copy).history_ == []


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFileError, match=r"model folder '.*nothing' does not exist"):
        MultiTaskModel.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["polytask.json", "preprocessor.json", "history.json"])
@pytest.mark.parametrize("text", ["{truncated", "\ufeff{}", "\udc80"])
def test_bad_json_is_named(copy, name, text):
    (copy / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    if name != "polytask.json":
        resign(copy)
    with pytest.raises(ModelFileError, match=f"^{copy / name}: not (valid JSON|UTF-8 text)"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("polytask.json", "[1]", "expected a JSON object, found list"),
        ("preprocessor.json", "[1]", "(top level): Input should be a valid dictionary"),
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
    if name != "polytask.json":
        resign(copy)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value).startswith(str(copy / name))
    assert message in str(err.value)


def test_preprocessor_state_with_bad_statistics(copy):
    state = json.loads((copy / "preprocessor.json").read_text())
    state["numeric"]["x"]["std"] = 0.0
    (copy / "preprocessor.json").write_text(json.dumps(state))
    resign(copy)
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

    resign(copy)
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

    write_bytes = Path.write_bytes

    def disk_full(self, data):
        if self.name == "weights.safetensors":
            raise OSError(28, "No space left on device", str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(polytask.errors.OutputError) as err:
        model.save(copy, overwrite=True)
    assert str(err.value) == f"cannot save the model to {str(copy)!r}: No space left on device"
    assert folder_bytes(copy) == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["model"]
    MultiTaskModel.load(copy)


def test_save_replaces_a_previous_model_whole_only_with_overwrite(saved, copy):
    (copy / "history.json").unlink()  # an older save without history
    resign(copy)
    before = folder_bytes(copy)
    with pytest.raises(polytask.errors.OutputError) as err:
        saved[0].save(copy)
    assert str(err.value) == (
        f"cannot save the model to {str(copy)!r}: the folder already exists and is not empty; "
        "pass overwrite=True (polytask train: --overwrite) to replace a model polytask wrote "
        "there, or choose another path"
    )
    assert folder_bytes(copy) == before
    saved[0].save(copy, overwrite=True)
    assert sorted(p.name for p in copy.iterdir()) == FILES
    assert sorted(p.name for p in copy.parent.iterdir()) == ["model"]


def test_overwrite_never_deletes_what_polytask_did_not_write(saved, tmp_path):
    foreign = tmp_path / "model"
    (foreign / "src").mkdir(parents=True)
    (foreign / "src" / "notes.txt").write_text("mine")
    with pytest.raises(polytask.errors.OutputError, match="not a polytask model"):
        saved[0].save(foreign, overwrite=True)
    assert (foreign / "src" / "notes.txt").read_text() == "mine"
    ours = saved[0].save(tmp_path / "ours")
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(polytask.errors.OutputError, match=r"also holds \['notes.txt'\]"):
        saved[0].save(ours, overwrite=True)
    assert (ours / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(polytask.errors.OutputError, match="it is a file, not a folder"):
        saved[0].save(a_file, overwrite=True)
    assert a_file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert MultiTaskModel.load(saved[0].save(empty)).config == saved[0].config


def test_failed_first_save_leaves_nothing(saved, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(polytask.estimator, "save_safetensors", fail)
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


# ------------------------------------------------------------------ nothing read blindly


def test_a_flipped_byte_in_the_tensor_data_is_refused(copy):
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{weights}: its SHA-256 does not match polytask.json: the file was modified or corrupted"
    )


@pytest.mark.parametrize("name", ["preprocessor.json", "config.yaml", "weights.safetensors"])
def test_a_file_modified_after_the_save_is_refused(copy, name):
    with open(copy / name, "ab") as f:
        f.write(b"\n")
    with pytest.raises(ModelFileError, match=f"^{copy / name}: .*modified or corrupted"):
        MultiTaskModel.load(copy)


def test_a_symlink_to_dev_zero_is_refused_without_reading_it(copy):
    (copy / "preprocessor.json").unlink()
    (copy / "preprocessor.json").symlink_to("/dev/zero")
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{copy / 'preprocessor.json'}: is a symbolic link; polytask reads only regular files "
        "in a model folder"
    )


def test_a_symlink_to_a_good_file_is_refused_too(copy, tmp_path):
    good = tmp_path / "elsewhere.json"
    (copy / "history.json").rename(good)
    (copy / "history.json").symlink_to(good)
    with pytest.raises(ModelFileError, match="is a symbolic link"):
        MultiTaskModel.load(copy)


def test_a_fifo_is_refused_without_blocking(copy):
    (copy / "config.yaml").unlink()
    os.mkfifo(copy / "config.yaml")  # opening it to read would block until a writer came
    with pytest.raises(ModelFileError, match=r"config.yaml: is a FIFO; polytask reads only"):
        MultiTaskModel.load(copy)


def test_a_folder_in_a_files_place_is_refused(copy):
    (copy / "history.json").unlink()
    (copy / "history.json").mkdir()
    with pytest.raises(ModelFileError, match=r"history.json: is a folder"):
        MultiTaskModel.load(copy)


def test_each_file_has_a_size_cap(copy, monkeypatch):
    monkeypatch.setitem(modelfile.SIZE_CAPS, "preprocessor.json", 100)
    size = (copy / "preprocessor.json").stat().st_size
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{copy / 'preprocessor.json'}: {size:,} bytes, more than the 100 bytes a "
        "preprocessor.json may have"
    )


def _edit_json(folder: Path, name: str, edit) -> None:
    state = json.loads((folder / name).read_text())
    edit(state)
    (folder / name).write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "preprocessor.json",
            lambda s: s["numeric"]["x"].update(log1p="false"),
            "numeric.x.log1p: Input should be a valid boolean (found 'false')",
        ),
        (
            "preprocessor.json",
            lambda s: s["vocabularies"].update(color="redbluegreen"),
            "vocabularies.color: Input should be a valid list (found 'redbluegreen')",
        ),
        (
            "preprocessor.json",
            lambda s: s["numeric"]["x"].update(mean="0.5"),
            "numeric.x.mean: Input should be a valid number (found '0.5')",
        ),
        (
            "preprocessor.json",
            lambda s: s.update(extra=1),
            "extra: unknown key",
        ),
        (
            "polytask.json",
            lambda s: s.update(n_train="60"),
            "n_train: Input should be a valid integer (found '60')",
        ),
    ],
)
def test_wrong_json_types_are_refused_not_misread(copy, name, edit, message):
    _edit_json(copy, name, edit)
    resign(copy)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == f"{copy / name}: {message}"


def test_format_version_true_is_not_version_1(copy):
    _edit_json(copy, "polytask.json", lambda s: s.update(format_version=True))
    with pytest.raises(ModelFileError, match=r"model format version True .* cannot be read"):
        MultiTaskModel.load(copy)


def test_wrong_yaml_types_in_the_config_are_refused(copy):
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["features"]["numeric"][0]["log1p"] = "false"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    resign(copy)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{copy / 'config.yaml'}: features.numeric.0.log1p: Input should be a valid boolean "
        "(found 'false')"
    )


@pytest.mark.parametrize("name", ["polytask.json", "preprocessor.json", "history.json"])
def test_deeply_nested_json_is_one_error(copy, name):
    (copy / name).write_text("[" * 100_000 + "]" * 100_000)
    if name != "polytask.json":
        resign(copy)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == f"{copy / name}: not valid JSON: nested too deeply"


def test_deeply_nested_yaml_is_one_error(copy):
    (copy / "config.yaml").write_text("[" * 100_000 + "]" * 100_000)
    resign(copy)
    with pytest.raises(ModelFileError, match=r"config.yaml: not valid YAML"):
        MultiTaskModel.load(copy)


def test_shapes_are_checked_against_the_config_before_the_network_is_built(copy, monkeypatch):
    """A config whose experts are 2e9 wide (64 GB of float32) beside the small weights is
    refused from the safetensors header; nothing of that size is ever allocated."""
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["expert_units"] = [2_000_000_000]
    config["model"]["max_parameters"] = 10**15  # past the budget: the header check refuses
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    resign(copy)
    built = []
    real = polytask.estimator._build_network
    monkeypatch.setattr(
        polytask.estimator,
        "_build_network",
        lambda cfg, pre: built.append(torch.get_default_device()) or real(cfg, pre),
    )
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert re.fullmatch(
        rf"{re.escape(str(copy))}/weights.safetensors: weights do not fit the saved config: "
        r"network\.\S+ has shape \[[\d, ]+\], the config gives \[[\d, ]*2000000000[\d, ]*\]",
        str(err.value),
    )
    assert all(device.type == "meta" for device in built)  # only ever planned


def test_a_config_past_the_parameter_budget_is_refused_before_building(copy):
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["expert_units"] = [2_000_000_000]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    resign(copy)
    with pytest.raises(ModelFileError, match=r"config.yaml: .*more than model.max_parameters"):
        MultiTaskModel.load(copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(copy, value):
    weights = copy / "weights.safetensors"
    tensors = safetensors.torch.load_file(str(weights))
    name = next(k for k in tensors if k.startswith("network.towers"))
    tensors[name].view(-1)[0] = value
    safetensors.torch.save_file(tensors, str(weights))
    resign(copy)
    with pytest.raises(ModelFileError) as err:
        MultiTaskModel.load(copy)
    assert str(err.value) == (
        f"{weights}: tensor {name!r} holds NaN or infinite values; a model with non-finite "
        "weights predicts garbage"
    )


def test_a_version_1_folder_without_a_manifest_still_loads(saved, copy):
    meta = json.loads((copy / "polytask.json").read_text())
    del meta["files"], meta["run_id"]
    meta["format_version"] = 1
    (copy / "polytask.json").write_text(json.dumps(meta))
    loaded = MultiTaskModel.load(copy)
    pdt.assert_frame_equal(loaded.predict(saved[2]), saved[0].predict(saved[2]))


def test_a_version_2_folder_without_its_manifest_is_refused(copy):
    _edit_json(copy, "polytask.json", lambda s: s.pop("files"))
    with pytest.raises(ModelFileError, match=r"has none: the file was modified or corrupted"):
        MultiTaskModel.load(copy)
