"""ONNX export: every registered model exports, and onnxruntime predicts what torch does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

import polytask.export
from polytask import MultiTaskModel
from polytask.cli import main
from polytask.errors import ConfigError, MissingExtraError, ModelFileError
from polytask.export import REFUSED, ExportError, export_onnx, graph_outputs, onnx_bytes
from polytask.models import MODELS

TOL = 1e-5

# Task sets tried in order for each model; the first its config accepts is used. The first
# links two tasks (inputs_from), so every model that allows links is exported with one.
TASK_SETS: list[dict[str, Any]] = [
    {
        "click": {"type": "binary"},
        "dwell": {"type": "regression", "inputs_from": ["click"]},
        "kind": {"type": "multiclass", "inputs_from": ["click"], "detach": False},
    },
    {"click": {"type": "binary"}, "dwell": {"type": "regression"}, "kind": {"type": "multiclass"}},
    # funnel models (ESMM and its kin): an impression -> click -> purchase pair of binaries
    {"ctr": {"type": "binary", "label": "click"}, "ctcvr": {"type": "binary", "label": "buy"}},
]


def _frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.integers(0, 6, n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n) * 3 + 1,
        }
    )
    df.loc[rng.random(n) < 0.1, "z"] = np.nan  # a missing indicator column in the input
    df["click"] = (1.5 * df.x + (df.color == "red") + rng.normal(size=n) > 0.5).astype(int)
    df["buy"] = ((df.click == 1) & (df.x > 0.5)).astype(int)
    df["dwell"] = 2.0 * df.x + 0.5 * df["size"] + rng.normal(size=n)
    df["kind"] = np.where(df.x > 0.5, "a", np.where(df.x < -0.5, "c", "b"))
    return df


def _model(name: str, features: Any | None = None) -> MultiTaskModel:
    """A small ``name`` model with dropout and batch norm (both must act as in eval)."""
    features = features or {"categorical": ["color", "size"], "numeric": ["x", "z"]}
    spec = {"name": name, "tower_units": [8], "dropout": 0.1, "norm": "batch"}
    errors = []
    for tasks in TASK_SETS:
        try:
            return MultiTaskModel(
                features=features,
                tasks=tasks,
                model=spec,
                training={"epochs": 1, "batch_size": 128, "progress": False, "seed": 0},
            )
        except ConfigError as err:
            errors.append(str(err))
    raise AssertionError(f"no task set fits model {name!r}: {errors}")


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.index.equals(b.index)
    for col in a.columns:
        if not pd.api.types.is_numeric_dtype(a[col]):
            assert (a[col] == b[col]).all(), col
        else:
            np.testing.assert_allclose(a[col], b[col], rtol=0, atol=TOL, err_msg=col)


_EXPORTED: dict[str, tuple[MultiTaskModel, Path]] = {}


def _exported(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiTaskModel, Path]:
    """A fitted ``name`` model and its graph written by `export_onnx`, once per session (an
    export takes seconds)."""
    if name not in _EXPORTED:
        model = _model(name).fit(_frame())
        path = export_onnx(model, tmp_path_factory.mktemp(name) / "model.onnx")
        _EXPORTED[name] = model, path
    return _EXPORTED[name]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", sorted(n for n, e in MODELS.items() if not e.sequence))
def test_every_registered_model_exports_and_onnx_predicts_as_torch(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if name in REFUSED:
        with pytest.raises(ExportError, match=REFUSED[name]):
            onnx_bytes(_model(name).fit(_frame()))
        return
    model, path = _exported(name, tmp_path_factory)
    proto = onnx.load(str(path))
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(inputs) == ["categorical", "numeric"]
    assert inputs["categorical"].elem_type == onnx.TensorProto.INT64
    assert inputs["numeric"].elem_type == onnx.TensorProto.FLOAT
    for t in inputs.values():
        assert t.shape.dim[0].dim_param and not t.shape.dim[0].dim_value  # any batch size
    assert inputs["categorical"].shape.dim[1].dim_value == 2
    assert inputs["numeric"].shape.dim[1].dim_value == 3  # x, z and z's missing indicator
    names = [o.name for o in graph_outputs(model)]
    assert [o.name for o in proto.graph.output] == names
    assert names[: len(model.config.tasks)] == list(model.config.tasks)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model"] == name and meta["polytask_onnx_contract"] == "1"

    test = _frame(300, seed=1)
    test.loc[0, "color"] = "purple"  # unseen at training: the unknown index
    test.loc[1, "x"] = np.nan
    torch_pred = model.predict(test)
    _assert_same(torch_pred, model.predict(test, backend="onnx", onnx_file=path))
    # one row and no row at all go through the dynamic batch axis too
    one = test.iloc[[5]]
    _assert_same(model.predict(one), model.predict(one, backend="onnx", onnx_file=path))
    empty = model.predict(test.iloc[:0], backend="onnx", onnx_file=path)
    assert len(empty) == 0 and list(empty.columns) == list(torch_pred.columns)


def test_refused_models_are_the_ones_listed() -> None:
    """Which registered models cannot be exported, and why: the sequence models."""
    assert set(REFUSED) == {n for n, e in MODELS.items() if e.sequence} == {"bilstm", "transformer"}


def test_links_and_the_funnel_are_in_the_exported_graphs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The registry test exports MMoE with inputs_from links and ESMM with its funnel: the
    links are there, and ONNX's ctcvr is its ctr times its cvr (pCTCVR = pCTR x pCVR)."""
    mmoe, _ = _exported("mmoe", tmp_path_factory)
    assert mmoe.config.tasks["kind"].inputs_from == ["click"]
    esmm, path = _exported("esmm", tmp_path_factory)
    assert [o.name for o in graph_outputs(esmm)] == ["ctr", "ctcvr", "cvr"]
    pred = esmm.predict(_frame(200, seed=2), backend="onnx", onnx_file=path)
    np.testing.assert_allclose(pred.ctcvr, pred.ctr * pred.cvr, rtol=1e-5, atol=1e-7)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    "features",
    [{"numeric": ["x", "z"]}, {"categorical": ["color", "size"]}],
    ids=["numeric-only", "categorical-only"],
)
def test_a_model_with_one_feature_kind_has_one_input(features: Any) -> None:
    model = _model("mmoe", features).fit(_frame())
    proto = onnx.load_from_string(onnx_bytes(model))
    assert [i.name for i in proto.graph.input] == list(features)
    test = _frame(100, seed=3)
    _assert_same(model.predict(test), model.predict(test, backend="onnx"))


@pytest.mark.usefixtures("one_thread")
def test_cli_export_then_predict_with_onnx_equals_torch(tmp_path: Path) -> None:
    folder = _model("mmoe").fit(_frame()).save(tmp_path / "model")
    data = tmp_path / "rows.csv"
    _frame(150, seed=4).to_csv(data, index=False)
    assert main(["export", str(folder), "--format", "onnx"]) == 0
    assert (folder / "model.onnx").is_file()
    assert main(["predict", str(folder), str(data), "-o", str(tmp_path / "t.csv")]) == 0
    args = ["predict", str(folder), str(data), "-o", str(tmp_path / "o.csv"), "--backend", "onnx"]
    assert main(args) == 0
    _assert_same(pd.read_csv(tmp_path / "t.csv"), pd.read_csv(tmp_path / "o.csv"))
    # --onnx-file reads a graph from elsewhere; streamed (chunked) predict takes it too
    other = tmp_path / "elsewhere.onnx"
    shutil.copyfile(folder / "model.onnx", other)
    args = [*args[:4], str(tmp_path / "s.csv"), "--backend", "onnx", "--onnx-file", str(other)]
    assert main([*args, "--chunk-rows", "40"]) == 0
    _assert_same(pd.read_csv(tmp_path / "t.csv"), pd.read_csv(tmp_path / "s.csv"))


@pytest.mark.usefixtures("one_thread")
def test_a_graph_from_other_weights_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model("shared_bottom").fit(_frame())
    export_onnx(model, tmp_path / "old.onnx")
    with torch.no_grad():
        next(model.network_.parameters()).add_(0.1)
    with pytest.raises(ModelFileError, match="exported from other weights"):
        model.predict(_frame(10), backend="onnx", onnx_file=tmp_path / "old.onnx")
    # in memory, the graph follows the weights: exported once, again after they change
    exports = []
    real = polytask.export.onnx_bytes

    def counted(m: MultiTaskModel) -> bytes:
        exports.append(1)
        return real(m)

    monkeypatch.setattr(polytask.export, "onnx_bytes", counted)
    for _ in range(3):
        _assert_same(model.predict(_frame(50)), model.predict(_frame(50), backend="onnx"))
    assert len(exports) == 1
    with torch.no_grad():
        next(model.network_.parameters()).add_(0.1)
    _assert_same(model.predict(_frame(50)), model.predict(_frame(50), backend="onnx"))
    assert len(exports) == 2


def test_bad_onnx_files_and_backends_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model("shared_bottom").fit(_frame(200))
    folder = model.save(tmp_path / "m")
    data = tmp_path / "rows.csv"
    _frame(20).to_csv(data, index=False)
    out = str(tmp_path / "p.csv")
    assert main(["predict", str(folder), str(data), "-o", out, "--backend", "onnx"]) == 2
    assert "polytask export" in capsys.readouterr().err  # no model.onnx yet: says how
    (folder / "model.onnx").write_bytes(b"not a graph")
    assert main(["predict", str(folder), str(data), "-o", out, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "not a readable ONNX model" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ExportError, match="backend: expected one of"):
        model.predict(_frame(5), backend="tensorrt")
    with pytest.raises(ExportError, match="is a folder"):
        export_onnx(model, tmp_path)


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    monkeypatch.delitem(__import__("sys").modules, "onnxruntime", raising=False)
    model = _model("shared_bottom").fit(_frame(200))
    with pytest.raises(MissingExtraError, match=r"polytask\[serve\]"):
        model.predict(_frame(5), backend="onnx")


@pytest.mark.usefixtures("one_thread")
def test_a_network_the_exporter_cannot_trace_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A body whose control flow depends on the data has no single graph: refused, not
    exported wrong."""
    model = _model("shared_bottom").fit(_frame(200))
    net = model.network_
    represent = net.represent

    def data_dependent(x: torch.Tensor, active: Any) -> Any:
        if x.sum() > 0:  # a branch on values, which a static graph cannot hold
            x = x * 2
        return represent(x, active)

    monkeypatch.setattr(net, "represent", data_dependent)
    with pytest.raises(ExportError, match="cannot be exported to ONNX: the exporter failed"):
        onnx_bytes(model)
