"""Training checkpoints: everything needed to resume a run exactly, written atomically.

One folder per checkpoint, named by the global step (``step-000000120/``), holding:

- ``model.safetensors``: ``network.*`` and ``weighting.*`` (parameters and buffers) and
  ``best.*``, the network weights of the best epoch so far (early stopping);
- ``state.safetensors``: RNG states (torch's global CPU generator, which dropout and random
  weightings draw from, and the CUDA one on a GPU), the batch source's state (shuffle
  generator at the start of the epoch in progress; for alternate training also the task
  sequence's and each stream's generator states and positions) and the epoch's running
  loss sums;
- ``optimizer.pt``: the optimizer's and the scheduler's state dicts (``torch.save``, read
  back with ``torch.load(weights_only=True)``: tensors and plain containers only, never
  arbitrary objects);
- ``checkpoint.json``: the position (epoch, batch within it, global step), history,
  early-stopping state, skipped-batch count, the weighting's ``state_for_checkpoint()``,
  Python's and numpy's RNG states, the config, a fingerprint of the data, and the size and
  SHA-256 of every other file.

A checkpoint folder is written whole beside its final name, fsynced and renamed into place,
so a crash leaves the previous checkpoints intact; the newest `KEEP` are kept. Reading
verifies every file's size and hash first: a truncated or corrupt checkpoint is a
`ModelFileError` naming the file, and resuming falls back to the next older one.

Distributed training (torchrun): every rank holds the same replica, optimizer state and data
position, so rank 0 alone writes; only the torch RNG states differ per rank (dropout draws
on shards of different sizes), so each rank's is gathered and stored as
``rng.torch.rank<r>``. On resume rank 0 picks the checkpoint (moving corrupt ones aside) and
tells the other ranks which; every rank restores its own RNG state. The world size must be
the one the checkpoint was written with.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save as save_safetensors
from torch import Tensor

from polytask import modelfile
from polytask._version import __version__
from polytask.errors import ConfigError, DataError, ModelFileError
from polytask.models import MultiTaskNet
from polytask.training.state import BatchSource, FitResult, LoopState
from polytask.weighting import Weighting

if TYPE_CHECKING:
    from polytask.training.distributed import ProcessGroup

FORMAT_VERSION = 1
KEEP = 2
"""Checkpoints kept: the newest and one to fall back on."""
MAY_DIFFER = frozenset(
    {
        "training.epochs",
        "training.patience",
        "training.checkpoint_every",
        "training.on_nan",
        "training.progress",
        "training.num_threads",
        "training.eval_batch_size",
        "model.max_parameters",
    }
)
"""Config keys a resumed run may change: they extend or report training without changing
the steps already taken. Any other difference refuses to resume."""

_POSITION = ("step", "epoch", "position", "finite_steps", "skipped_in_epoch")
"""`LoopState`'s counters, stored in checkpoint.json under their names."""
_STEP_DIR = re.compile(r"step-(\d+)")
_FILES = ("model.safetensors", "state.safetensors", "optimizer.pt")


class CheckpointWarning(UserWarning):
    """Resuming skipped an unreadable checkpoint, found none, or cannot be exact."""


@dataclass
class TrainingParts:
    """What a fit trains, and a checkpoint saves and restores besides the trainer's
    `LoopState` (`polytask.training.build.training_parts` builds it)."""

    network: MultiTaskNet
    weighting: Weighting
    optimizer: torch.optim.Optimizer
    scheduler: Any
    source: BatchSource


@dataclass
class Checkpoint:
    """A verified checkpoint read from ``path`` (tensors on the CPU)."""

    path: Path
    meta: dict[str, Any]
    model: dict[str, Tensor]
    state: dict[str, Tensor]
    optimizer: dict[str, Any]


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint folders in ``folder``, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))
    ]
    return [p for _, p in sorted(found, reverse=True)]


# ------------------------------------------------------------------------------------ write
def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint.json")


def _cpu(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def rng_states(device: torch.device, group: ProcessGroup | None = None) -> dict[str, Tensor]:
    """The torch RNG states to checkpoint: ``rng.torch`` (and ``rng.cuda`` on a GPU) in one
    process; under torchrun every rank's, gathered on every rank, as ``rng.torch.rank<r>``.
    A collective: every rank of ``group`` must call it."""
    local = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        local["rng.cuda"] = torch.cuda.get_rng_state(device)
    if group is None:
        return local
    gathered: list[Any] = [None] * group.world_size
    dist.all_gather_object(gathered, local)
    return {f"{k}.rank{r}": v for r, states in enumerate(gathered) for k, v in states.items()}


def write_checkpoint(
    path: Path,
    parts: TrainingParts,
    state: LoopState,
    *,
    config: Any,
    fingerprint: str,
    rngs: Mapping[str, Tensor],
    world_size: int,
) -> None:
    """Write ``path`` atomically: the folder appears complete or not at all. ``rngs`` are
    the RNG states from `rng_states`, ``world_size`` the number of processes training."""
    model = {f"network.{k}": v for k, v in parts.network.state_dict().items()}
    model.update({f"weighting.{k}": v for k, v in parts.weighting.state_dict().items()})
    if state.best_state is not None:
        model.update({f"best.{k}": v for k, v in state.best_state.items()})
    assert state.loss_sums is not None and state.loss_counts is not None
    tensors = dict(rngs)
    tensors["epoch.loss_sums"] = state.loss_sums
    tensors["epoch.loss_counts"] = state.loss_counts
    tensors.update({f"source.{k}": v for k, v in parts.source.state_dict().items()})
    optim = io.BytesIO()
    torch.save(
        {
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": None if parts.scheduler is None else parts.scheduler.state_dict(),
        },
        optim,
    )
    files = {
        "model.safetensors": save_safetensors(_cpu(model)),
        "state.safetensors": save_safetensors(_cpu(tensors)),
        "optimizer.pt": optim.getvalue(),
    }
    result = state.result
    meta = {
        "format_version": FORMAT_VERSION,
        "polytask_version": __version__,
        "world_size": world_size,
        **{name: getattr(state, name) for name in _POSITION},
        "elapsed": state.elapsed,
        "bad_epochs": state.bad_epochs,
        "has_best_state": state.best_state is not None,
        "best_epoch": result.best_epoch,
        "best_value": result.best_value,
        "skipped_batches": result.skipped_batches,
        "history": result.history,
        "weighting": parts.weighting.state_for_checkpoint(),
        "python_random": random.getstate(),
        "numpy_random": list(cast(tuple[Any, ...], np.random.get_state(legacy=True))),
        "config": config,
        "data_fingerprint": fingerprint,
    }
    modelfile.write_manifested(path, files, "checkpoint.json", meta, default=_plain)


def prune(folder: Path, keep: int = KEEP) -> None:
    """Remove all but the newest ``keep`` checkpoints, and temporary folders that a crash
    during a write left behind (names starting with ``.step-``)."""
    for old in list_checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in folder.glob(".step-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def remove_checkpoints(folder: Path) -> None:
    """Remove every checkpoint in ``folder`` (and the temporary and ``.corrupt`` folders
    checkpoints leave), nothing else; ``folder`` itself only when that leaves it empty."""
    for entry in folder.iterdir():
        name = entry.name.removesuffix(".corrupt")
        if (
            entry.is_dir()
            and not entry.is_symlink()
            and (_STEP_DIR.fullmatch(name) or name.startswith(".step-"))
        ):
            shutil.rmtree(entry, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


@dataclass
class Checkpointer:
    """Writes a checkpoint of one run every ``every`` steps into ``folder`` (the
    `polytask.training.trainer.Checkpoints` that `fit_loop` calls). Under torchrun (``group``)
    every rank calls `save` at the same step; rank 0 writes."""

    folder: Path
    _: KW_ONLY
    every: int
    parts: TrainingParts
    config: Any
    fingerprint: str
    latest: Path | None = None
    group: ProcessGroup | None = None

    def __post_init__(self) -> None:
        self.resumed_from = self.latest

    def save(self, state: LoopState) -> None:
        path = self.folder / f"step-{state.step:09d}"
        device = next(self.parts.network.parameters()).device
        rngs = rng_states(device, self.group)  # a collective under torchrun
        if self.group is None or self.group.rank == 0:
            write_checkpoint(
                path,
                self.parts,
                state,
                config=self.config,
                fingerprint=self.fingerprint,
                rngs=rngs,
                world_size=1 if self.group is None else self.group.world_size,
            )
            prune(self.folder)
        self.latest = path


# ------------------------------------------------------------------------------------- read
def _read_meta(path: Path) -> dict[str, Any]:
    file = path / "checkpoint.json"
    if not os.path.lexists(file):
        raise ModelFileError(f"{file}: missing; the checkpoint is incomplete")
    meta = modelfile.parse_json(file, modelfile.read_regular(file, modelfile.SIZE_CAPS[file.name]))
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise ModelFileError(f"{file}: not a polytask checkpoint description")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelFileError(
            f"{file}: checkpoint format version {version!r} (written by polytask "
            f"{meta.get('polytask_version')!r}); polytask {__version__} reads version "
            f"{FORMAT_VERSION}"
        )
    return meta


def _read_verified(path: Path, name: str, meta: Mapping[str, Any]) -> bytes:
    """One file of a checkpoint, read and checked as a model folder's files are
    (`polytask.modelfile`: a regular file, its size and SHA-256 as checkpoint.json lists)."""
    file = path / name
    data = modelfile.read_regular(file, modelfile.SIZE_CAPS[modelfile.WEIGHTS])
    modelfile.verify(file, data, meta["files"].get(name), manifest=path / "checkpoint.json")
    return data


def _reason(err: Exception) -> str:
    """torch.load's multi-paragraph message cut to the line that says what was refused (its
    advice to retry with ``weights_only=False`` is not ours to give)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    refused = [line for line in lines if "WeightsUnpickler error" in line]
    return (refused or lines or [type(err).__name__])[0]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint folder; `ModelFileError` naming the bad file if not."""
    path = Path(path)
    meta = _read_meta(path)
    data = {name: _read_verified(path, name, meta) for name in _FILES}
    model, state = (modelfile.load_tensors(path / name, data[name]) for name in _FILES[:2])
    try:
        optimizer = torch.load(io.BytesIO(data["optimizer.pt"]), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ModelFileError(
            f"{path / 'optimizer.pt'}: not a readable optimizer state ({_reason(err)}); "
            "polytask reads it with torch.load(weights_only=True) and never unpickles "
            "arbitrary objects"
        ) from None
    if not isinstance(optimizer, dict) or "optimizer" not in optimizer:
        raise ModelFileError(f"{path / 'optimizer.pt'}: expected the optimizer's state dict")
    return Checkpoint(path, meta, model, state, optimizer)


def load_latest(folder: str | Path) -> Checkpoint | None:
    """The newest readable checkpoint in ``folder``, or None when there is none at all.

    Unreadable newer checkpoints are skipped with a `CheckpointWarning` naming them and
    renamed ``<name>.corrupt`` (kept for inspection, out of the way of later writes); when
    every checkpoint is unreadable, `ModelFileError` lists them all."""
    candidates = list_checkpoints(folder)
    problems: list[str] = []
    for path in candidates:
        try:
            checkpoint = read_checkpoint(path)
        except ModelFileError as err:
            problems.append(str(err))
            continue
        for bad, problem in zip(candidates, problems, strict=False):  # the newer ones
            aside = bad.with_name(f"{bad.name}.corrupt")
            if aside.exists():
                shutil.rmtree(aside)
            bad.rename(aside)
            warnings.warn(
                f"skipped unreadable checkpoint {bad} (moved to {aside.name}): "
                f"{problem}; resuming from {path}",
                CheckpointWarning,
                stacklevel=2,
            )
        return checkpoint
    if problems:
        raise ModelFileError(
            f"{folder}: no readable checkpoint to resume from:\n" + "\n".join(problems)
        )
    return None


# ---------------------------------------------------------------------------------- resume
def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one mapping of dotted keys (``model.num_experts``) to leaf values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def check_compatible(checkpoint: Checkpoint, config: Mapping[str, Any], fingerprint: str) -> None:
    """Refuse to resume a run whose settings or data differ from the checkpoint's in a way
    that changes the steps already taken; only the `MAY_DIFFER` keys may change."""
    missing = object()
    old, new = flatten(checkpoint.meta.get("config", {})), flatten(config)
    differing = sorted(
        k
        for k in old.keys() | new.keys()
        if k not in MAY_DIFFER and old.get(k, missing) != new.get(k, missing)
    )
    if differing:
        shown = "; ".join(
            f"{k}: checkpoint {old.get(k, '<unset>')!r}, now {new.get(k, '<unset>')!r}"
            for k in differing
        )
        raise ConfigError(
            f"cannot resume from {checkpoint.path}: the config differs in {differing} ({shown}). "
            f"Only {sorted(MAY_DIFFER)} may change on resume; restore the others, or start a "
            "fresh run in another folder"
        )
    if checkpoint.meta.get("data_fingerprint") != fingerprint:
        raise DataError(
            f"cannot resume from {checkpoint.path}: the training or validation data differ "
            "from the data the checkpoint was trained on (different rows, values or order)"
        )


def _strip(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def restore(
    checkpoint: Checkpoint, parts: TrainingParts, group: ProcessGroup | None = None
) -> LoopState:
    """Load ``checkpoint`` into ``parts`` and every RNG; return the trainer's state.

    The global RNGs are set last, so nothing between this call and the first step may draw
    from them. Under torchrun each rank takes its own torch RNG state."""
    meta, path = checkpoint.meta, checkpoint.path
    device = next(parts.network.parameters()).device
    world_size = 1 if group is None else group.world_size
    saved_world = int(meta.get("world_size", 1))
    if saved_world != world_size:
        raise ConfigError(
            f"cannot resume from {path}: it was written by {saved_world} process(es) and this "
            f"run has {world_size}; each process's random state and share of every batch "
            "depend on that number, so resume with the same world size (torchrun "
            f"--nproc_per_node={saved_world}) or start a fresh run in another folder"
        )
    suffix = "" if group is None else f".rank{group.rank}"
    try:
        parts.network.load_state_dict(_strip(checkpoint.model, "network."))
        parts.weighting.load_state_dict(_strip(checkpoint.model, "weighting."))
        parts.weighting.load_checkpoint_state(meta.get("weighting", {}))
        parts.optimizer.load_state_dict(checkpoint.optimizer["optimizer"])
        if parts.scheduler is not None:
            parts.scheduler.load_state_dict(checkpoint.optimizer["scheduler"])
        parts.source.load_state_dict(_strip(checkpoint.state, "source."), position=meta["position"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{path}: the checkpoint does not fit this run: {err}") from None
    aggregator = getattr(parts.weighting, "aggregator", None)
    if aggregator is not None:
        import torchjd  # here: slow to import, and only the aggregator weightings need it

        if isinstance(aggregator, torchjd.Stateful):
            warnings.warn(
                f"{type(aggregator).__name__} keeps internal state that checkpoints do not hold; "
                "it restarts from its initial state, so the resumed run is not bit-identical to "
                "an uninterrupted one",
                CheckpointWarning,
                stacklevel=2,
            )
    best = _strip(checkpoint.model, "best.") if meta.get("has_best_state") else None
    state = LoopState(
        result=FitResult(
            history=list(meta.get("history", [])),
            best_epoch=meta.get("best_epoch"),
            best_value=meta.get("best_value"),
            skipped_batches=int(meta.get("skipped_batches", 0)),
        ),
        **{name: int(meta[name]) for name in _POSITION},
        loss_sums=checkpoint.state["epoch.loss_sums"].to(device),
        loss_counts=checkpoint.state["epoch.loss_counts"].to(device),
        elapsed=float(meta.get("elapsed", 0.0)),
        bad_epochs=int(meta["bad_epochs"]),
        best_state=best,
    )
    python_random = meta["python_random"]
    random.setstate((python_random[0], tuple(python_random[1]), python_random[2]))
    name, keys, *rest = meta["numpy_random"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    if f"rng.cuda{suffix}" in checkpoint.state and device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint.state[f"rng.cuda{suffix}"], device)
    torch.set_rng_state(checkpoint.state[f"rng.torch{suffix}"])
    return state


def open_checkpoints(
    folder: str | os.PathLike[str],
    *,
    every: int,
    resume: bool,
    parts: TrainingParts,
    config: Mapping[str, Any],
    fingerprint: str,
    group: ProcessGroup | None = None,
) -> tuple[Checkpointer, LoopState | None]:
    """The checkpoint writer for a run in ``folder`` and, with ``resume``, the state restored
    from its newest readable checkpoint (None to start from the beginning).

    A fresh run refuses a folder that already holds checkpoints rather than mixing its
    checkpoints with another run's. Under torchrun every rank calls this (see the module
    docstring)."""
    folder = Path(folder)
    start: LoopState | None = None
    latest: Path | None = None
    if resume:
        checkpoint = load_latest(folder) if group is None else _load_latest_shared(folder, group)
        if checkpoint is None:
            warnings.warn(
                f"{folder}: no checkpoint to resume from; training from the start",
                CheckpointWarning,
                stacklevel=2,
            )
        else:
            check_compatible(checkpoint, config, fingerprint)
            start = restore(checkpoint, parts, group)
            latest = checkpoint.path
    elif existing := list_checkpoints(folder):
        raise ConfigError(
            f"checkpoint folder {folder} already holds checkpoints (newest: "
            f"{existing[0].name}); resume that run with resume=True "
            "(polytask train --resume), or remove the folder to start over"
        )
    writer = Checkpointer(
        folder,
        every=every,
        parts=parts,
        config=dict(config),
        fingerprint=fingerprint,
        latest=latest,
        group=group,
    )
    return writer, start


def _load_latest_shared(folder: Path, group: ProcessGroup) -> Checkpoint | None:
    """`load_latest` on rank 0 (which alone moves corrupt checkpoints aside); the other ranks
    read the checkpoint rank 0 chose, or raise the error it raised."""
    choice: list[Any] = [None, None]  # [path of the chosen checkpoint, error message]
    checkpoint = None
    if group.rank == 0:
        try:
            checkpoint = load_latest(folder)
            choice[0] = None if checkpoint is None else str(checkpoint.path)
        except ModelFileError as err:
            choice[1] = str(err)
    dist.broadcast_object_list(choice, src=0)
    if choice[1] is not None:
        raise ModelFileError(choice[1])
    if group.rank == 0 or choice[0] is None:
        return checkpoint
    return read_checkpoint(choice[0])
