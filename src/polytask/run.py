"""Running a run file: load its data, train, evaluate on its test split, write the results.

This is what ``polytask train RUN.yaml`` does; it is importable so the same run can be made
from Python (``run_training(load_run_file(path)[0], base, out)``).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from polytask import modelfile
from polytask._atomic import atomic_write_text, clean_stale, leftover_pattern
from polytask.config import DATA_PATH_KEYS, DataConfig, RunConfig, SplitConfig
from polytask.data import read_table
from polytask.data.io import is_parquet
from polytask.errors import (
    ConfigError,
    DataError,
    OutputError,
    PolytaskError,
    TrainingInterrupted,
    os_reason,
)
from polytask.estimator import MultiTaskModel, jsonable
from polytask.tracking import Tracker, build_tracker
from polytask.training.distributed import barrier, is_main_process


@dataclass
class Splits:
    train: pd.DataFrame | Path
    """The training table; with ``training.stream``, the Parquet path (``fit`` reads
    it chunk by chunk)."""
    validation: pd.DataFrame | Path | None
    """With sharded evaluation (`load_splits`'s ``sharded``), a Parquet split's path."""
    test: pd.DataFrame | Path | None


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _read(data: DataConfig, base: Path, path: str, what: str) -> pd.DataFrame:
    resolved = _resolve(base, path)
    if not resolved.exists() and not Path(path).expanduser().is_absolute():
        raise DataError(
            f"{what}: file {path!r} not found: relative paths are resolved against the run "
            f"file's folder {str(base)!r}, and {str(resolved)!r} does not exist"
        )
    if data.loader in ("census_income", "movielens_100k"):
        from polytask import datasets

        frame: pd.DataFrame = getattr(datasets, f"load_{data.loader}")(resolved)
        return frame
    if data.loader == "conll":
        from polytask.data.conll import read_conll

        assert data.columns is not None  # DataConfig pairs them
        return read_conll(resolved, data.columns, what=what)
    forced = data.loader if data.loader in ("csv", "parquet") else None
    return read_table(resolved, format=forced, what=what)


def load_splits(
    data: DataConfig, base: Path, *, stream: bool = False, sharded: bool = False
) -> Splits:
    """The train / validation / test tables a data section describes. Relative paths are
    resolved against ``base`` (the run file's folder). With ``stream`` (``training.stream``)
    the training file is not read: ``train`` is its path (`RunConfig` refuses a streamed
    ``data.path`` or a loader other than Parquet)."""
    if data.path is not None and data.loader == "movielens_100k" and data.split is None:
        from polytask.datasets import split_by_column

        return Splits(*split_by_column(_read(data, base, data.path, "data.path")))
    if data.path is not None:
        from polytask.datasets import split_frame

        frame = _read(data, base, data.path, "data.path")
        split = data.split or SplitConfig()
        fractions = [split.train, split.validation, split.test]  # sum to 1 (SplitConfig)
        nonzero = [f for f in fractions if f > 0]
        if len(frame) < len(nonzero):
            rows = "no rows (only a header)" if len(frame) == 0 else f"{len(frame)} row(s)"
            raise DataError(
                f"data.path {data.path!r} has {rows}; data.split needs at least one row for "
                f"each of its {len(nonzero)} split(s)"
            )
        try:
            parts = list(split_frame(frame, fractions=nonzero, seed=data.split_seed))
        except DataError as err:  # the reader does not know split_frame: name the settings
            raise DataError(
                f"data.split of data.path {data.path!r} ({len(frame)} rows): "
                f"{str(err).removeprefix('split_frame: ')}"
            ) from None
        out = [parts.pop(0) if f > 0 else None for f in fractions]
        assert out[0] is not None
        test = _read(data, base, data.test, "data.test") if data.test else out[2]
        return Splits(out[0], out[1], test)
    assert data.train is not None

    def other(path: str | None, what: str) -> pd.DataFrame | Path | None:
        if not path:
            return None
        if sharded and is_parquet_source(path):  # each process reads its row groups
            return _resolve(base, path)
        return _read(data, base, path, what)

    return Splits(
        train=_resolve(base, data.train) if stream else _read(data, base, data.train, "data.train"),
        validation=other(data.validation, "data.validation"),
        test=other(data.test, "data.test"),
    )


def is_parquet_source(path: str) -> bool:
    """A Parquet file, a directory (of Parquet files) or a glob pattern."""
    return any(c in path for c in "*?[") or is_parquet(path)


def run_config_dump(cfg: RunConfig, base: Path) -> dict[str, Any]:
    """The run's config as written to ``OUT/config.yaml``: data paths made absolute, so the
    file reads the same tables from any folder (``polytask train OUT/config.yaml``,
    ``polytask evaluate OUT/model --split test``)."""
    dumped: dict[str, Any] = cfg.model_dump(mode="json")
    for key in DATA_PATH_KEYS:
        value = dumped["data"].get(key)
        if value is not None:
            dumped["data"][key] = str(_resolve(base, value).resolve())
    return dumped


def load_run_split(run_dir: Path, split: str) -> pd.DataFrame:
    """One split (``train``, ``validation``, ``test``) of the run written to ``run_dir`` by
    `run_training`, read as the run read it (same files, loader, fractions and seed)."""
    from polytask.config import load_run_file

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(
            f"run folder {str(run_dir)!r} has no config.yaml; --run names the folder given to "
            "'polytask train --out'"
        )
    cfg, base = load_run_file(config)
    splits = load_splits(cfg.data, base)
    table = getattr(splits, split)
    if table is None:
        raise ConfigError(f"run {str(run_dir)!r} has no {split} split (see its config.yaml, data)")
    assert isinstance(table, pd.DataFrame)
    return table


def train_samples_per_s(history: list[dict[str, Any]]) -> float:
    """Median over epochs of training samples per second (evaluation excluded)."""
    values = [r["train_samples_per_s"] for r in history if "train_samples_per_s" in r]
    return float(statistics.median(values)) if values else float("nan")


RUN_FILES = ("model", "metrics.json", "config.yaml", "checkpoints", "history.csv", "tensorboard")
"""What `run_training` writes in its output folder (the last two with ``training.loggers``);
it never touches anything else there."""


def _written_by_polytask(path: Path) -> bool:
    """Whether ``path`` (one of `RUN_FILES` in a run folder) is something polytask wrote.
    Files of runs from before run ids are recognised by their shape."""
    if path.is_symlink():
        return False
    if path.name == "model":
        return path.is_dir() and modelfile.is_model_folder(path)
    if path.name in ("checkpoints", "tensorboard"):
        return path.is_dir()
    if path.name == "history.csv":
        return path.is_file()
    if not path.is_file():
        return False
    if modelfile.run_stamp(path) is not None:
        return True
    try:
        text = path.read_text(encoding="utf-8")
        if path.name == "metrics.json":
            return "train_samples_per_s" in json.loads(text)
        return {"features", "tasks", "data"} <= set(yaml.safe_load(text))
    except (OSError, ValueError, TypeError, RecursionError, yaml.YAMLError):
        return False


def prepare_output(out: Path, *, overwrite: bool = False, resume: bool = False) -> None:
    """Check, before any training, that the run can be written to ``out``: create the
    folder, write and remove a probe file (an existing file, a read-only folder, a name
    too long fail here, not after training), then refuse a folder that holds anything
    unless ``overwrite`` (or ``resume``) is given, and even then refuse to replace a
    ``model``, ``metrics.json`` or ``config.yaml`` that polytask did not write. Anything
    else in the folder is left alone. Leftovers of a killed write are removed, and with
    ``overwrite`` the previous run's checkpoints too (a later --resume would continue it)."""
    where = f"output folder {str(out)!r}"
    if out.exists() and not out.is_dir():
        raise OutputError(f"{where}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {where}: {os_reason(err)}") from None
    probe = out / f".polytask-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"polytask checks that it can write here")
        probe.unlink()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise OutputError(f"cannot write in {where}: {os_reason(err)}") from None
    leftovers = [leftover_pattern(f) for f in RUN_FILES]  # what killed writes of them left
    present = sorted(
        e.name for e in out.iterdir() if not any(p.fullmatch(e.name) for p in leftovers)
    )
    if present and not (overwrite or resume):
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise OutputError(
            f"{where} is not empty (it holds {shown}); pass --overwrite (run_training(..., "
            "overwrite=True)) to replace what polytask writes there (model/, metrics.json, "
            "config.yaml, checkpoints/, history.csv, tensorboard/), leaving everything else, or "
            "choose another --out"
        )
    foreign = [
        name for name in RUN_FILES if name in present and not _written_by_polytask(out / name)
    ]
    if foreign:
        raise OutputError(
            f"{where}: {foreign} were not written by polytask, and polytask never replaces "
            "what it did not write, even with --overwrite: move them, or choose another --out"
        )
    if "model" in present:
        modelfile.check_replaceable(out / "model", overwrite=True)  # nothing foreign inside
    for name in RUN_FILES:
        clean_stale(out / name)  # what killed writes left: gone before this run writes
    if overwrite and not resume and (out / "checkpoints").is_dir():
        from polytask.training.checkpoint import remove_checkpoints

        remove_checkpoints(out / "checkpoints")


def _rescue(model: MultiTaskModel, out: Path, checkpoint_dir: Path | None) -> Path | None:
    """Somewhere else to keep a trained model that could not be saved where asked: the
    checkpoint folder, beside the output folder, or the temporary folder."""
    tag = (getattr(model, "run_id_", None) or "unsaved")[:12]
    places = [] if checkpoint_dir is None else [checkpoint_dir / f"model-{tag}"]
    places += [
        out.with_name(f"{out.name}-model-{tag}"),
        Path(tempfile.gettempdir()) / f"polytask-model-{tag}",
    ]
    for place in places:
        try:
            return model.save(place)
        except PolytaskError:
            continue
    return None


def run_training(
    cfg: RunConfig,
    base: Path,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    run_file: Path | None = None,
) -> dict[str, Any]:
    """Train the run, evaluate it, write ``out/model/``, ``out/config.yaml`` and, last,
    ``out/metrics.json``; return the metrics. Early stopping uses the validation split only;
    the test split is evaluated once, at the end. Under torchrun only rank 0 evaluates and
    writes; the other ranks return an empty dict.

    ``out`` is checked before training (`prepare_output`): a non-empty folder needs
    ``overwrite`` (or ``resume``). The three outputs carry the run id of the model
    (``run_id`` in polytask.json and metrics.json, a first comment line in config.yaml),
    and the previous run's metrics.json and config.yaml are removed before the new model
    is written, so a kill between the writes never leaves one run's results beside
    another's model; metrics.json, written last, marks a finished run.

    With ``training.checkpoint_every`` checkpoints go to ``out/checkpoints/``; ``resume``
    continues from the newest readable one there.

    ``training.loggers`` record each epoch (`polytask.tracking`): ``csv`` in
    ``out/history.csv``, ``tensorboard`` in ``out/tensorboard/``, ``mlflow`` in an MLflow
    run that also gets ``run_file`` and the model folder as artifacts."""
    model = MultiTaskModel.from_config(cfg)  # a model past model.max_parameters fails here
    created = not out.exists()
    if is_main_process():
        prepare_output(out, overwrite=overwrite, resume=resume)
    checkpoint_dir = out / "checkpoints" if cfg.training.checkpoint_every or resume else None
    tracker = None
    try:
        stream = cfg.training.stream is not None
        # under torchrun a streamed run evaluates Parquet splits sharded: no process holds
        # them whole (grouped metrics need the whole table, so not with decision.group)
        sharded = stream and int(os.environ.get("WORLD_SIZE", "1")) > 1
        sharded = sharded and cfg.decision.group is None
        splits = load_splits(cfg.data, base, stream=stream, sharded=sharded)
        if is_main_process():
            tracker = build_tracker(
                cfg.training.loggers,
                out,
                params=cfg.model_dump(mode="json", exclude={"data"}),
                eval_batch_size=cfg.training.eval_batch_size,
                run_name=out.name,
            )
        metrics = _train_and_write(
            model, cfg, base, splits, out, checkpoint_dir, resume, tracker, run_file
        )
    except BaseException:
        if tracker is not None:
            tracker.close(failed=True)
        if created and is_main_process():
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a failed run leaves no empty folder behind
        raise
    if tracker is not None:
        tracker.close()
    return metrics


def _train_and_write(
    model: MultiTaskModel,
    cfg: RunConfig,
    base: Path,
    splits: Splits,
    out: Path,
    checkpoint_dir: Path | None,
    resume: bool,
    tracker: Tracker | None,
    run_file: Path | None,
) -> dict[str, Any]:
    prefitted = None
    if cfg.data.preprocessor is not None:
        from polytask.data.prefit import load_fitted

        folder = _resolve(base, cfg.data.preprocessor)
        prefitted = load_fitted(folder, cfg.features, cfg.task_specs())
    try:
        model.fit(
            splits.train,
            validation=splits.validation,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callbacks=[] if tracker is None else [tracker],
            preprocessor=prefitted,
        )
    except TrainingInterrupted as stop:  # Ctrl-C: keep the best model so far, unevaluated
        if is_main_process():
            _write_run(model, {"interrupted": True}, cfg, base, out, checkpoint_dir)
            stop.saved = out / "model"
        raise
    tables = {"test": splits.test, "validation": splits.validation}
    # Sharded evaluation (torchrun, streamed): every process evaluates its row groups.
    sharded: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for name, split in tables.items():
        if isinstance(split, Path):
            assert cfg.training.stream is not None
            sharded[name] = model.evaluate_sharded(split, chunk_rows=cfg.training.stream.chunk_rows)
            rows[name] = count_rows(split)
    if not is_main_process():
        barrier()  # distributed training: rank 0 holds the same model, evaluates and writes
        return {}
    # Each table is encoded once, for its metrics and the gate statistics.
    encoded = {
        name: model.encode(split, what=f"{name} set")
        for name, split in tables.items()
        if isinstance(split, pd.DataFrame)
    }
    rows.update({name: len(data) for name, data in encoded.items()})
    # Grouped ranking metrics need the group column, which only the raw tables hold.
    by_group = cfg.decision.group is not None
    metrics: dict[str, Any] = {
        name: model.evaluate(tables[name] if by_group else data) for name, data in encoded.items()
    }
    metrics.update(sharded)
    metrics["train_samples_per_s"] = train_samples_per_s(model.history_)
    metrics["best_epoch"] = model.best_epoch_
    metrics["task_best_epochs"] = model.task_best_epochs_
    metrics["epochs_run"] = len(model.history_)
    metrics["processes"] = model.processes_
    metrics["skipped_batches"] = model.skipped_batches_
    metrics["rows"] = {
        "train": model.n_train_,
        "validation": rows.get("validation", 0),
        "test": rows.get("test", 0),
    }
    gates_on = encoded.get("test", encoded.get("validation"))
    if gates_on is not None and (gates := model.gate_statistics(gates_on)):
        metrics["gates"] = gates
    _write_run(model, metrics, cfg, base, out, checkpoint_dir)
    if tracker is not None:
        files = [out / "config.yaml", out / "metrics.json"]
        if run_file is not None:
            files.insert(0, Path(run_file))
        tracker.finish(model.history_, metrics, files=files, folders=[out / "model"])
    barrier()
    return metrics


def count_rows(path: Path) -> int:
    """Rows of a Parquet file, directory or glob, from the footers."""
    from polytask.data.stream import ParquetSet

    return ParquetSet(path, [], "evaluation data").rows


def _write_run(
    model: MultiTaskModel,
    metrics: dict[str, Any],
    cfg: RunConfig,
    base: Path,
    out: Path,
    checkpoint_dir: Path | None,
) -> None:
    """``out/model/``, ``out/config.yaml`` and, last, ``out/metrics.json`` (``metrics`` and
    the training summary), all three stamped with the model's run id; the previous run's
    metrics.json and config.yaml are removed first. A model that cannot be saved in
    ``out/model`` is saved elsewhere (`_rescue`) and the `OutputError` says where."""
    metrics.setdefault("train_samples_per_s", train_samples_per_s(model.history_))
    metrics.setdefault("best_epoch", model.best_epoch_)
    metrics.setdefault("epochs_run", len(model.history_))
    metrics.setdefault("skipped_batches", model.skipped_batches_)
    metrics.setdefault("rows", {"train": model.n_train_})
    run_id = model.run_id_
    metrics["run_id"] = run_id
    for name in ("metrics.json", "config.yaml"):  # never another run's beside this model
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as err:
            raise OutputError(f"cannot replace {str(out / name)!r}: {os_reason(err)}") from None
    try:
        model.save(out / "model", overwrite=True)  # prepare_output checked it is ours
    except OutputError as err:
        rescued = _rescue(model, out, checkpoint_dir)
        kept = (
            f"; the trained model was saved to {str(rescued)!r} instead"
            if rescued is not None
            else "; it could not be saved anywhere else either"
        )
        raise OutputError(f"{err}{kept}") from None
    config_text = yaml.safe_dump(run_config_dump(cfg, base), sort_keys=False)
    for name, text in (
        ("config.yaml", f"{modelfile.CONFIG_STAMP}{run_id}\n{config_text}"),
        ("metrics.json", json.dumps(jsonable(metrics), indent=2)),  # last: the run is done
    ):
        try:
            atomic_write_text(out / name, text)
        except OSError as err:
            raise OutputError(
                f"cannot write {str(out / name)!r}: {os_reason(err)}; the model was saved to "
                f"{str(out / 'model')!r}"
            ) from None


def fit_preprocessor_to(cfg: RunConfig, base: Path, out: Path) -> dict[str, Any]:
    """Fit the run's preprocessor on its training split and write it to the folder ``out``
    (`polytask.data.prefit`), for ``data.preprocessor: OUT`` in later runs. With
    ``training.stream`` the fit streams (``data.train`` a Parquet file, directory or glob);
    under torchrun it is sharded over the ranks and rank 0 writes. Returns a summary."""
    import torch

    from polytask.data import Preprocessor
    from polytask.data.prefit import save_fitted
    from polytask.data.stream import fit_preprocessor_streaming
    from polytask.training.distributed import join_process_group
    from polytask.training.inputs import gather_counts

    pre = Preprocessor(features=cfg.features, tasks=cfg.task_specs())
    stream = cfg.training.stream
    splits = load_splits(cfg.data, base, stream=stream is not None)
    if stream is not None:
        assert isinstance(splits.train, Path)  # a streamed training set is not read here
        group = join_process_group(torch.device("cpu"))
        processes = 1 if group is None else group.world_size
        fit_preprocessor_streaming(
            pre,
            splits.train,
            chunk_rows=stream.chunk_rows,
            shard=(0, 1) if group is None else (group.rank, processes),
            gather=None if group is None else gather_counts,
        )
        rows = count_rows(splits.train)
    else:
        frame = splits.train
        assert isinstance(frame, pd.DataFrame)
        pre.fit(frame)
        rows, processes = len(frame), 1
    source = str(_resolve(base, cfg.data.train or cfg.data.path or ""))
    if is_main_process():
        save_fitted(pre, out, rows=rows, source=source)
    barrier()
    return {
        "rows": rows,
        "processes": processes,
        "vocabularies": {k: len(v) for k, v in (pre.vocabularies_ or {}).items()},
        "classes": {k: len(v) for k, v in pre.classes_.items()},
    }
