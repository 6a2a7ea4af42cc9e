"""The saved-model folder format, read and written in one place.

A model folder (`MultiTaskModel.save`, ``polytask train``'s ``OUT/model``) holds:

- ``polytask.json``: `FORMAT_VERSION`, the polytask version that wrote it, best epoch,
  training rows, the run id, and the manifest: the size and SHA-256 of every other file;
- ``config.yaml``: the validated settings;
- ``preprocessor.json``: vocabularies, numeric statistics, label classes, training columns;
- ``weights.safetensors``: network and weighting tensors;
- ``history.json``: per-epoch training history;
- ``calibration.json`` (only for a model with ``calibration`` settings): the fitted
  calibrators.

Nothing in a folder is trusted. Reading one (`read_folder`):

- takes regular files only: a symbolic link, FIFO, device or folder in a file's place is
  refused before it is opened (a FIFO would block, ``/dev/zero`` never end), and every file
  has a size cap (`SIZE_CAPS`);
- checks every JSON/YAML file against a strict typed schema (`ModelMeta`,
  `PreprocessorState`, history.json a list of objects, the config `EstimatorConfig` in
  strict mode),
  so ``"log1p": "false"``, a vocabulary given as one string, ``format_version: true`` or a
  100,000-deep document are one-line `ModelFileError`s rather than misread values;
- verifies every file's size and SHA-256 against the manifest ("modified or corrupted");
  folders of format version 1, written before the manifest existed, still load unverified;
- reads the shapes of the weights from the safetensors header (`tensor_shapes`), so the
  caller can check them against the config before any network is built.

Checkpoints (`polytask.training.checkpoint`) use the same file reader and manifest checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from polytask._atomic import atomic_dir, restore_interrupted
from polytask._version import __version__
from polytask.errors import ModelFileError, OutputError

if TYPE_CHECKING:
    from torch import Tensor

FORMAT_VERSION = 2
"""Version of the folder layout written now. 2 added the manifest (``files`` in
polytask.json)."""
READABLE_FORMATS = (1, 2)
"""Versions `read_folder` accepts. Version 1 folders have no manifest and load unverified."""
MANIFEST_SINCE = 2

META = "polytask.json"
CONFIG = "config.yaml"
PREPROCESSOR = "preprocessor.json"
WEIGHTS = "weights.safetensors"
HISTORY = "history.json"
CALIBRATION = "calibration.json"
FILES = (CONFIG, PREPROCESSOR, WEIGHTS, HISTORY, CALIBRATION)
"""The files the manifest covers (polytask.json holds it)."""
DERIVED_FILES = ("model.onnx", "decision")
"""What other polytask commands add to a model folder (``polytask export``'s graph,
``polytask decide``'s front); replacing the folder replaces them too, since they are
derived from its weights."""

_MiB = 1 << 20
SIZE_CAPS = {
    META: 1 * _MiB,
    CONFIG: 4 * _MiB,
    HISTORY: 64 * _MiB,
    CALIBRATION: 64 * _MiB,
    PREPROCESSOR: 4096 * _MiB,
    WEIGHTS: 1 << 40,
    "checkpoint.json": 256 * _MiB,
}
"""The largest each file may be, in bytes: far above what polytask writes (a vocabulary of
10 million values is a few hundred MB of preprocessor.json), far below what would exhaust
memory by accident."""
SAFETENSORS_HEADER_CAP = 100 * _MiB


# ------------------------------------------------------------------------------ raw files
def read_regular(path: Path, cap: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``cap`` bytes; anything else (a
    symbolic link, FIFO, device, folder, or a larger file) is a `ModelFileError`, raised
    before the file is opened or read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        _check_regular(path, os.lstat(path), cap)
        fd = os.open(path, flags)
        try:
            opened = os.fstat(fd)
            _check_regular(path, opened, cap)  # what was opened, not what lstat saw
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(min(cap, opened.st_size) + 1)  # one byte more tells a file grew
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; is this a polytask model folder?") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot be read: {err.strerror or err}") from None
    if len(data) > min(cap, opened.st_size):
        raise ModelFileError(f"{path}: changed while it was read")
    return data


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(path: Path, st: os.stat_result, cap: int) -> None:
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = next((k for is_, k in _KINDS if is_(mode)), "not a regular file")
        raise ModelFileError(
            f"{path}: is {kind}; polytask reads only regular files in a model folder"
        )
    if st.st_size > cap:
        raise ModelFileError(
            f"{path}: {st.st_size:,} bytes, more than the {cap:,} bytes a {path.name} may have"
        )


def digest(data: bytes) -> dict[str, Any]:
    """A manifest entry: size and SHA-256 of ``data``."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def verify(path: Path, data: bytes, expected: Any, *, manifest: Path) -> None:
    """Refuse ``data`` (read from ``path``) unless its size and SHA-256 are those
    ``manifest`` lists."""
    if not isinstance(expected, Mapping):
        raise ModelFileError(f"{manifest}: no size and SHA-256 listed for {path.name}")
    if len(data) != expected.get("bytes"):
        raise ModelFileError(
            f"{path}: {len(data):,} bytes, {manifest.name} lists {expected.get('bytes')!r}: "
            "the file was modified or corrupted (truncated or overwritten)"
        )
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise ModelFileError(
            f"{path}: its SHA-256 does not match {manifest.name}: the file was modified or "
            "corrupted"
        )


def parse_json(path: Path, data: bytes) -> Any:
    """``data`` as JSON; bad UTF-8, bad JSON or too deep a nesting is a `ModelFileError`."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelFileError(f"{path}: not UTF-8 text: {err.reason}") from None
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: not valid JSON: {err}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: not valid JSON: nested too deeply") from None


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: where, then what (PyYAML's own text spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    what = f"{context}, {problem}" if context else str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark else what


def parse_yaml(path: Path, data: bytes) -> Any:
    """``data`` as plain YAML (``safe_load``: a ``!!python/...`` tag is an error, never a
    constructor call)."""
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelFileError(f"{path}: not UTF-8 text: {err.reason}") from None
    except yaml.constructor.ConstructorError as err:
        raise ModelFileError(
            f"{path}: refused: {yaml_problem(err)}; a model's config is plain YAML "
            "and is read without constructing Python objects"
        ) from None
    except yaml.YAMLError as err:
        raise ModelFileError(f"{path}: not valid YAML: {yaml_problem(err)}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: not valid YAML: nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise ModelFileError(f"{path}: not valid YAML: {err}") from None


# -------------------------------------------------------------------------------- schemas
class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileEntry(_Schema):
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelMeta(_Schema):
    """polytask.json."""

    format_version: int
    polytask_version: str
    best_epoch: int | None = None
    n_train: int = Field(default=0, ge=0)
    run_id: str | None = None
    files: dict[str, FileEntry] | None = None


class NumericState(_Schema):
    mean: float
    std: float
    log1p: StrictBool
    indicator: StrictBool


class LabelScaling(_Schema):
    shift: float
    scale: float


class PreprocessorState(_Schema):
    """preprocessor.json (`polytask.data.Preprocessor.state_dict`)."""

    vocabularies: dict[str, list[str]]
    numeric: dict[str, NumericState]
    classes: dict[str, list[str]]
    train_columns: list[str] = Field(default_factory=list)
    label_scaling: dict[str, LabelScaling] = Field(default_factory=dict)
    """Absent from folders saved before label scaling existed: their labels were not scaled."""
    hash_buckets: dict[str, int] = Field(default_factory=dict)
    """Bucket count per hashed categorical column (absent from folders saved before hashing)."""
    list_lengths: dict[str, int] = Field(default_factory=dict)
    """Padded width per list-valued column (absent from folders saved before list features)."""


def check_schema(path: Path, schema: type[BaseModel], raw: Any) -> Any:
    """``raw`` validated against ``schema`` in strict mode; the first problem is one line."""
    try:
        return schema.model_validate(raw, strict=True)
    except ValidationError as err:
        problems = err.errors()
    e = problems[0]
    key = ".".join(str(x) for x in e["loc"]) or "(top level)"
    found = e.get("input")
    shown = repr(found) if not isinstance(found, dict | list) else type(found).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    plain = {"missing": "required key is missing", "extra_forbidden": "unknown key"}
    what = plain.get(e["type"], f"{e['msg']} (found {shown})")
    raise ModelFileError(f"{path}: {key}: {what}{more}")


# ----------------------------------------------------------------------------- safetensors
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2}
_DTYPE_BYTES.update({"I8": 1, "U8": 1, "BOOL": 1})


def tensor_shapes(path: Path, data: bytes) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from the header of the safetensors bytes ``data``, without
    reading any tensor; a header that is malformed or whose offsets do not fit the file is
    a `ModelFileError`."""
    bad = f"{path}: not a readable safetensors file"
    if len(data) < 8:
        raise ModelFileError(f"{bad} (only {len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(SAFETENSORS_HEADER_CAP, len(data) - 8):
        raise ModelFileError(f"{bad} (header of {size:,} bytes in a {len(data):,}-byte file)")
    header = parse_json(path, data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ModelFileError(f"{bad} (its header is not a JSON object)")
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {}
    body = len(data) - 8 - size
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            dims = tuple(int(d) for d in shape)
            count = math.prod(dims)
            ok = (
                dtype in _DTYPE_BYTES
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                and 0 <= start <= end <= body
                and end - start == count * _DTYPE_BYTES[dtype]
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"{bad} (header entry of {name!r} is malformed: {entry!r:.80})")
        shapes[str(name)] = (dtype, dims)
    return shapes


def load_tensors(path: Path, data: bytes, why: str = "") -> dict[str, Tensor]:
    """The tensors of the safetensors bytes ``data`` read from ``path`` (a model folder's
    weights, a checkpoint's); unreadable ones are a `ModelFileError` (``why`` ends it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load  # here: torch is not imported with this module

    try:
        return load(data)
    except (SafetensorError, ValueError) as err:
        raise ModelFileError(f"{path}: not a readable safetensors file ({err}){why}") from None


# -------------------------------------------------------------------------- read / write
@dataclass
class ModelFolder:
    """A model folder's files, read, verified and schema-checked (`read_folder`)."""

    path: Path
    meta: ModelMeta
    config: dict[str, Any]
    """config.yaml as plain data (the caller validates it against its config schema)."""
    preprocessor: PreprocessorState
    history: list[dict[str, Any]]
    weights: bytes
    """weights.safetensors, verified; `tensor_shapes` reads its header."""
    calibration: Any = None
    """calibration.json parsed (the caller checks it), None when the folder has none."""


def read_folder(path: Path) -> ModelFolder:
    """Read and verify the model folder ``path`` (see the module docstring)."""
    meta_file = path / META
    raw_meta = parse_json(meta_file, read_regular(meta_file, SIZE_CAPS[META]))
    if not isinstance(raw_meta, dict):
        raise ModelFileError(
            f"{meta_file}: expected a JSON object, found {type(raw_meta).__name__}"
        )
    version = raw_meta.get("format_version")
    if type(version) is not int or version not in READABLE_FORMATS:
        raise ModelFileError(
            f"{path}: model format version {version!r} (written by polytask "
            f"{raw_meta.get('polytask_version')!r}) cannot be read by polytask {__version__}, "
            f"which reads format version(s) {list(READABLE_FORMATS)}"
        )
    meta: ModelMeta = check_schema(meta_file, ModelMeta, raw_meta)
    if version >= MANIFEST_SINCE and meta.files is None:
        raise ModelFileError(
            f"{meta_file}: format version {version} lists every file's SHA-256 under 'files', "
            "and this one has none: the file was modified or corrupted"
        )
    if meta.files is not None:
        unknown = sorted(set(meta.files) - set(FILES))
        if unknown:
            raise ModelFileError(f"{meta_file}: lists unknown file(s) {unknown}")

    def load(name: str, *, required: bool = True) -> bytes | None:
        file = path / name
        if meta.files is not None:
            if name not in meta.files:
                if required:
                    raise ModelFileError(f"{meta_file}: no SHA-256 listed for {name}")
                return None
        elif not required and not os.path.lexists(file):
            return None
        data = read_regular(file, SIZE_CAPS[name])
        if meta.files is not None:
            verify(file, data, meta.files[name].model_dump(), manifest=meta_file)
        return data

    config_data = load(CONFIG)
    pre_data = load(PREPROCESSOR)
    weights = load(WEIGHTS)
    history_data = load(HISTORY, required=False)
    calibration_data = load(CALIBRATION, required=False)
    assert config_data is not None and pre_data is not None and weights is not None
    config = parse_yaml(path / CONFIG, config_data)
    if not isinstance(config, dict):
        raise ModelFileError(
            f"{path / CONFIG}: expected a mapping of sections, found {type(config).__name__}"
        )
    preprocessor: PreprocessorState = check_schema(
        path / PREPROCESSOR, PreprocessorState, parse_json(path / PREPROCESSOR, pre_data)
    )
    history: list[dict[str, Any]] = []
    if history_data is not None:
        history = parse_json(path / HISTORY, history_data)
        if not isinstance(history, list):
            raise ModelFileError(f"{path / HISTORY}: expected a JSON list of epochs")
        for i, record in enumerate(history):
            if not isinstance(record, dict):
                raise ModelFileError(
                    f"{path / HISTORY}: epoch {i + 1}: expected a JSON object, found "
                    f"{type(record).__name__}"
                )
    calibration = None
    if calibration_data is not None:
        calibration = parse_json(path / CALIBRATION, calibration_data)
    return ModelFolder(path, meta, config, preprocessor, history, weights, calibration)


def write_folder(target: Path, files: Mapping[str, bytes], meta: Mapping[str, Any]) -> Path:
    """Write the model folder ``target`` atomically: ``files`` (the names in `FILES`) and
    polytask.json from ``meta`` plus the format version and the manifest, written last.

    The caller decides whether ``target`` may be replaced (`MultiTaskModel.save`)."""
    unknown = sorted(set(files) - set(FILES))
    if unknown:
        raise ValueError(f"not model folder files: {unknown}")
    meta = {"format_version": FORMAT_VERSION, "polytask_version": __version__, **meta}
    write_manifested(target, files, META, meta, indent=2)
    return target


def write_manifested(
    target: Path, files: Mapping[str, bytes], meta_name: str, meta: Mapping[str, Any], **dump: Any
) -> None:
    """Write the folder ``target`` atomically: ``files``, then ``meta_name``, the JSON of
    ``meta`` (``json.dumps(..., **dump)``) with the manifest (``files``: each file's size and
    SHA-256) added. Written last, so a folder holding ``meta_name`` has every other file."""
    text = json.dumps({**meta, "files": {n: digest(d) for n, d in files.items()}}, **dump)
    with atomic_dir(target) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / meta_name).write_text(text, encoding="utf-8")


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` looks like a folder polytask wrote (a regular polytask.json whose
    format_version is a number); its contents are not verified."""
    file = path / META
    try:
        raw = parse_json(file, read_regular(file, SIZE_CAPS[META]))
    except ModelFileError:
        return False
    return isinstance(raw, dict) and type(raw.get("format_version")) is int


def check_replaceable(target: Path, *, overwrite: bool) -> None:
    """Refuse to write the model folder ``target`` over anything but nothing, an empty
    folder or, with ``overwrite``, a model folder polytask wrote that holds nothing else
    (so replacing it deletes nothing polytask did not write). `OutputError` otherwise."""
    if not os.path.lexists(target):
        with contextlib.suppress(OSError):
            restore_interrupted(target)  # a swap cut short: the previous model comes back
        if not os.path.lexists(target):
            return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(
            f"cannot save the model to {str(target)!r}: it is a file, not a folder; polytask "
            "never replaces it: choose another path"
        )
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    if not overwrite:
        raise OutputError(
            f"cannot save the model to {str(target)!r}: the folder already exists and is not "
            "empty; pass overwrite=True (polytask train: --overwrite) to replace a model "
            "polytask wrote there, or choose another path"
        )
    if not is_model_folder(target):
        raise OutputError(
            f"cannot save the model to {str(target)!r}: the folder is not a polytask model "
            f"(it holds {entries[:5]}); polytask replaces only model folders it wrote, even "
            "with overwrite: choose another path"
        )
    foreign = [e for e in entries if e not in (META, *FILES, *DERIVED_FILES)]
    if foreign:
        raise OutputError(
            f"cannot save the model to {str(target)!r}: the model folder also holds "
            f"{foreign[:5]}, which polytask did not write and would delete by replacing "
            "it: move them out, or choose another path"
        )


# ------------------------------------------------------------------------------ run folder
CONFIG_STAMP = "# polytask run "
"""The first line of a run folder's config.yaml, followed by the run id (a YAML comment,
so the file stays a valid run file)."""


def run_stamp(path: Path) -> str | None:
    """The run id that a run folder's ``metrics.json`` (key ``run_id``) or ``config.yaml``
    (first line `CONFIG_STAMP`) carries; None when it carries none or cannot be read."""
    try:
        text = read_regular(path, SIZE_CAPS[CONFIG]).decode("utf-8")
    except (ModelFileError, UnicodeDecodeError):
        return None
    if path.suffix == ".yaml":
        first = text.split("\n", 1)[0]
        return first.removeprefix(CONFIG_STAMP) if first.startswith(CONFIG_STAMP) else None
    try:
        run_id = json.loads(text).get("run_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return run_id if isinstance(run_id, str) else None


class MixedRunWarning(UserWarning):
    """A loaded model's run folder holds results of another run (`check_run`)."""


def check_run(model_dir: Path, run_id: str | None) -> str | None:
    """A warning when the model folder ``model_dir`` is a run folder's ``model`` and that
    run folder's metrics.json or config.yaml carries another run's id (a run killed between
    its writes); None when they agree or say nothing."""
    if run_id is None or model_dir.name != "model":
        return None
    for name in ("metrics.json", "config.yaml"):
        other = model_dir.parent / name
        if not os.path.lexists(other):
            continue
        stamp = run_stamp(other)
        if stamp is not None and stamp != run_id:
            return (
                f"{other} belongs to another run (run id {stamp}) than the model in "
                f"{model_dir} (run id {run_id}): the run that wrote this model did not finish "
                "writing its results"
            )
    return None
