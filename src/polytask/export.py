"""ONNX export of a fitted model's network, and running the exported graph.

The graph holds the network only; the preprocessing (vocabularies, scaling) stays in polytask,
in the model folder's ``preprocessor.json``. The contract between the two (docs/serving.md):

- Inputs, one per encoded feature kind the model has, batch axis dynamic:
  ``categorical`` int64 ``[B, C]`` (vocabulary indices, 0 missing, 1 unknown, in the order of
  ``features.categorical``) and ``numeric`` float32 ``[B, M]`` (the scaled numeric columns in
  the order of ``features.numeric``, then their missing indicators). A model without
  categorical (or numeric) features has no such input.
- Outputs, one per task in task order, then one per auxiliary output (ESMM's ``cvr``), each
  named after it: the network's raw output, as the task type's link reads it: a logit
  ``[B]`` (binary: the probability is its sigmoid), the value ``[B]`` (regression), logits
  ``[B, K]`` (multiclass: softmax, classes in the order of ``preprocessor.json``). polytask
  turns them into `predict`'s columns with the same task-type code as for torch outputs, so
  the two backends cannot decode differently, whatever task types exist.
- ``metadata_props`` say which polytask wrote it, the model, the inputs' columns, the
  outputs' kinds and a digest of the weights, so a graph exported from other weights than
  the folder's is refused rather than silently used.

onnx, onnxscript and onnxruntime are the optional extra ``polytask[serve]``, imported only
when used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from polytask._atomic import atomic_write_bytes
from polytask._version import __version__
from polytask.errors import MissingExtraError, ModelFileError, PolytaskError

if TYPE_CHECKING:
    from polytask.data import EncodedData
    from polytask.estimator import MultiTaskModel
    from polytask.models import MultiTaskNet

ONNX_FILE = "model.onnx"
"""Where ``polytask export`` writes the graph in the model folder by default."""
CONTRACT_VERSION = 1
"""Version of the inputs/outputs/metadata contract above; bumped when it changes."""
OPSET = 18

_SEQUENCES = (
    "the ONNX contract takes rows (categorical, numeric); a sequence model reads sentences "
    "and is served by predict with backend='torch'"
)
REFUSED: dict[str, str] = {"bilstm": _SEQUENCES, "transformer": _SEQUENCES}
"""Registered models that cannot be exported, with the reason; `export_onnx` refuses them
with it. Every other model of the registry exports (tests/test_export.py checks each one)."""

BACKENDS = ("torch", "onnx")


class ExportError(PolytaskError):
    """A model cannot be written as ONNX, or an ONNX graph does not fit its model."""


def require(module: str) -> Any:
    """Import an optional dependency of ``polytask[serve]``, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{module} is not installed; ONNX export and serving need the optional extra: "
            "pip install 'polytask[serve]'"
        ) from None


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ExportError(f"backend: expected one of {list(BACKENDS)}, found {backend!r}")


# ---------------------------------------------------------------------------------- contract
@dataclass(frozen=True)
class Output:
    """One output of the graph: its name, task type (``binary``, ``regression``, ...) and
    width (the number of classes of a multiclass task, else 1)."""

    name: str
    kind: str
    width: int = 1


def graph_inputs(model: MultiTaskModel) -> dict[str, list[str]]:
    """Input name -> the columns of its second axis, for each feature kind the model has."""
    stats, features = model.preprocessor_.numeric_stats_, model.config.features
    inputs: dict[str, list[str]] = {}
    if features.single:
        inputs["categorical"] = [f.name for f in features.single]
    if features.numeric:
        indicators = [f"{f.name}.missing" for f in features.numeric if stats[f.name].indicator]
        inputs["numeric"] = [f.name for f in features.numeric] + indicators
    return inputs


def graph_outputs(model: MultiTaskModel) -> list[Output]:
    """The graph's outputs in order: the tasks, then the network's auxiliary outputs."""
    outputs = [
        Output(name, spec.type, model.preprocessor_.num_classes(name))
        for name, spec in model.config.task_specs().items()
    ]
    outputs += [Output(name, kind) for name, kind in model.network_.auxiliary_outputs.items()]
    return outputs


class _Graph(nn.Module):
    """The network as the graph computes it: positional inputs per feature kind, the raw
    outputs as a tuple in output order (float32)."""

    def __init__(self, network: MultiTaskNet, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.network = network
        self.input_names = list(inputs)
        self.output_names = list(outputs)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        given = dict(zip(self.input_names, tensors, strict=True))
        rows = tensors[0].shape[0]
        ref = tensors[0]
        batch = {
            "categorical": given.get("categorical", ref.new_zeros((rows, 0), dtype=torch.long)),
            "numeric": given.get("numeric", ref.new_zeros((rows, 0), dtype=torch.float32)),
        }
        raw = self.network(batch, auxiliary=True)
        return tuple(raw[name].float() for name in self.output_names)


def weights_digest(network: nn.Module) -> str:
    """SHA-256 of the network's state (names, dtypes, shapes, values), in a stable order."""
    h = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _metadata(model: MultiTaskModel, inputs: dict[str, list[str]], outputs: list[Output]) -> dict:
    return {
        "polytask_version": __version__,
        "polytask_onnx_contract": str(CONTRACT_VERSION),
        "model": model.config.model.name,
        "inputs": json.dumps(inputs),
        "outputs": json.dumps([[o.name, o.kind, o.width] for o in outputs]),
        "classes": json.dumps(model.preprocessor_.classes_),
        "weights_sha256": weights_digest(model.network_),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter reports its progress on stdout and warns about what it skips (optional
    torchvision ops, a deprecated shape API of torch.export): neither concerns the user."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch.onnx").setLevel(level)


def onnx_bytes(model: MultiTaskModel) -> bytes:
    """The fitted model's network as a serialized ONNX model (see the module docstring).

    Refuses the models in `REFUSED`, and any whose network the exporter cannot trace, with
    the reason."""
    model._check_fitted()
    name = model.config.model.name
    if name in REFUSED:
        raise ExportError(f"model {name!r} cannot be exported to ONNX: {REFUSED[name]}")
    lists = [f.name for f in model.config.features.lists]
    if lists:
        raise ExportError(
            f"list-valued feature(s) {lists} cannot be exported to ONNX yet: the graph takes "
            "one categorical index per column; serve the model with the torch backend"
        )
    require("onnxscript")
    onnx = require("onnx")
    inputs = graph_inputs(model)
    outputs = graph_outputs(model)
    if not inputs:
        raise ExportError("the model has no feature columns, so its graph would have no input")
    network = model.network_
    device = next(network.parameters()).device
    graph = _Graph(network, list(inputs), [o.name for o in outputs]).to("cpu").eval()
    # Three rows: torch.export specializes a dimension of size 0 or 1, never one of 3.
    sample = tuple(
        torch.zeros((3, len(cols)), dtype=torch.long if kind == "categorical" else torch.float32)
        for kind, cols in inputs.items()
    )
    batch = torch.export.Dim("batch")
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                sample,
                None,
                input_names=list(inputs),
                output_names=[o.name for o in outputs],
                dynamic_shapes=(tuple({0: batch} for _ in sample),),  # forward(*tensors)
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the reason is in the message
        raise ExportError(
            f"model {name!r} cannot be exported to ONNX: the exporter failed: {_reason(err)}"
        ) from err
    finally:
        network.to(device)
    assert program is not None
    proto = program.model_proto
    for key, value in _metadata(model, inputs, outputs).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "polytask"
    proto.producer_version = __version__
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def _reason(err: BaseException) -> str:
    """The first line of the innermost cause: the exporter wraps what went wrong (a branch on
    data, an unsupported op) in errors about its own steps."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def export_onnx(model: MultiTaskModel, path: str | os.PathLike[str]) -> Path:
    """Write `onnx_bytes` of ``model`` to ``path`` atomically; returns the path."""
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"output {str(target)!r} is a folder; expected the path of a file")
    atomic_write_bytes(target, onnx_bytes(model))
    return target


# ---------------------------------------------------------------------------------- running
class OnnxGraph:
    """An exported graph loaded in onnxruntime, checked against the model it is run for."""

    def __init__(self, data: bytes, source: str, *, threads: int | None = None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime's own exception types, version dependent
            raise ModelFileError(f"{source}: not a readable ONNX model ({err})") from None
        self.source = source
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def check(self, model: MultiTaskModel, digest: str) -> None:
        """Refuse a graph written by something else or from other weights than ``model``'s."""
        meta = self.metadata
        if meta.get("polytask_onnx_contract") != str(CONTRACT_VERSION):
            raise ModelFileError(
                f"{self.source}: expected a graph written by `polytask export` (contract "
                f"version {CONTRACT_VERSION}), found contract "
                f"{meta.get('polytask_onnx_contract')!r}"
            )
        if meta.get("weights_sha256") != digest:
            raise ModelFileError(
                f"{self.source}: was exported from other weights than this model's; export it "
                "again (polytask export MODEL_DIR --format onnx)"
            )
        expected = [o.name for o in graph_outputs(model)]
        if self.output_names != expected or self.input_names != list(graph_inputs(model)):
            raise ModelFileError(
                f"{self.source}: inputs {self.input_names} and outputs {self.output_names} do "
                f"not fit the model, which expects {list(graph_inputs(model))} and {expected}"
            )

    def run(self, encoded: EncodedData) -> dict[str, np.ndarray]:
        """Raw outputs for every row, by output name, as float32 arrays: what
        `predict_outputs` gives for the torch network."""
        feeds: dict[str, np.ndarray] = {}
        if "categorical" in self.input_names:
            feeds["categorical"] = encoded.categorical.cpu().numpy().astype(np.int64, copy=False)
        if "numeric" in self.input_names:
            feeds["numeric"] = encoded.numeric.cpu().numpy().astype(np.float32, copy=False)
        result = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, result, strict=True))


# One graph per model object, rebuilt when its weights change (an in-place optimizer step
# bumps a tensor's version) or another file is asked for.
_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], OnnxGraph]] = (
    weakref.WeakKeyDictionary()
)


def graph_for(
    model: MultiTaskModel,
    onnx_file: str | os.PathLike[str] | None,
    *,
    threads: int | None = None,
) -> OnnxGraph:
    """The onnxruntime graph of ``model``: read from ``onnx_file`` (checked to be exported
    from these weights), or exported in memory when ``None``; cached on the model.
    ``threads``: onnxruntime's intra-op threads (default: torch's, so both backends run
    with the same)."""
    threads = threads or torch.get_num_threads()
    # The identity and in-place version of every parameter and buffer change when the weights
    # do (an optimizer step, load_state_dict); keep_vars: the tensors themselves, whose ids are
    # stable, not detached copies.
    tensors = model.network_.state_dict(keep_vars=True).values()
    weights = tuple((id(t), t._version) for t in tensors)
    key = (weights, None if onnx_file is None else str(onnx_file), threads)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    if onnx_file is None:
        graph = OnnxGraph(onnx_bytes(model), "the in-memory export", threads=threads)
    else:
        path = Path(onnx_file)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelFileError(
                f"{path}: no such ONNX file; write it with `polytask export MODEL_DIR --format "
                "onnx`"
            ) from None
        except OSError as err:
            raise ModelFileError(f"{path}: cannot be read: {err}") from None
        graph = OnnxGraph(data, str(path), threads=threads)
    graph.check(model, weights_digest(model.network_))
    _CACHE[model] = (key, graph)
    return graph
