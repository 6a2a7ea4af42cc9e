"""`MultiTaskModel`: the estimator facade (scikit-learn conventions).

The constructor validates and stores settings, ``fit`` learns and returns ``self``, learned
state ends in ``_``, and methods that need a fitted model raise `NotFittedError` before
``fit``. A saved model is one folder (weights in safetensors, preprocessor and config as
JSON/YAML, read with safe loaders), so ``predict`` works on raw rows of the original table.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import save as save_safetensors

from polytask import modelfile
from polytask._atomic import set_aside
from polytask.calibration import Calibrator, expected_calibration_error, fit_calibrator
from polytask.config import (
    EstimatorConfig,
    TrainingConfig,
    format_validation_error,
    validate,
)
from polytask.data import EncodedData, Preprocessor, read_table
from polytask.data.chunks import CHUNK_ROWS, read_chunks, write_chunks
from polytask.data.stream import SplitShard
from polytask.decision import DEFAULT_TRANSFORM, ScoreSpec, fused_score
from polytask.errors import (
    ConfigError,
    DataError,
    MissingExtraError,
    ModelFileError,
    NotFittedError,
    OutputError,
    TrainingError,
    TrainingInterrupted,
    closest,
    os_reason,
)
from polytask.metrics import all_metrics
from polytask.models import MultiTaskNet
from polytask.ranking import grouped_metrics
from polytask.tasks import TaskSpec, task_type
from polytask.tracking import annotate_history, task_best_epochs
from polytask.training import FitResult, build, fit_loop, gate_statistics, predict_outputs
from polytask.training.checkpoint import Checkpointer, TrainingParts, _strip, open_checkpoints
from polytask.training.distributed import (
    DistributedTraining,
    ProcessGroup,
    current_group,
    evaluate_shard,
    is_main_process,
    join_process_group,
)
from polytask.training.inputs import TrainingData, read_training_data
from polytask.training.precision import training_network
from polytask.training.progress import EpochCallback
from polytask.weighting import Weighting

if TYPE_CHECKING:
    from polytask.export import OnnxGraph

FORMAT_VERSION = modelfile.FORMAT_VERSION
READABLE_FORMATS = modelfile.READABLE_FORMATS
_NO_PICKLE = "polytask reads weights only as safetensors and never unpickles them"


def resolve_device(name: str, setting: str = "training.device") -> torch.device:
    """The device ``name`` means; errors name ``setting``, the option it came from."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{setting}: expected 'cpu', 'cuda', 'cuda:N' or 'auto', found {name!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}: {name!r} requested but CUDA is not available")
    return device


class _SmallestSizes:
    """The smallest sizes any data could give a config: two rows per embedding table
    (missing and unseen), no missing-value indicators, two classes per multiclass task. A
    network planned with them has fewer parameters than any the config can train. It stands
    in for the fitted `Preprocessor` (the sizes are all a network reads of it)."""

    def __init__(self, cfg: EstimatorConfig) -> None:
        self.cardinalities = [2] * len(cfg.features.single)
        self.list_cardinalities = {f.name: 2 for f in cfg.features.lists if not f.shared_with}
        self.numeric_width = len(cfg.features.numeric)
        self._types = {name: t.type for name, t in cfg.tasks.items()}

    def num_classes(self, task: str) -> int:
        return 2 if task_type(self._types[task]).has_classes else 1


_Sizes = Preprocessor | _SmallestSizes


def build_network(cfg: EstimatorConfig, preprocessor: _Sizes) -> MultiTaskNet:
    """The model the config names, sized by the fitted preprocessor; planned first
    (`plan_network`), so a model beyond ``model.max_parameters`` allocates nothing."""
    plan_network(cfg, preprocessor)
    return _build_network(cfg, preprocessor)


def plan_network(cfg: EstimatorConfig, preprocessor: _Sizes) -> MultiTaskNet:
    """The network the config describes built on the ``meta`` device (shapes, no memory),
    refused with a `ConfigError` that gives the figure when its parameter count exceeds
    ``model.max_parameters`` or its sizes cannot be built at all."""
    try:
        with torch.device("meta"):
            network = _build_network(cfg, preprocessor)
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"model {cfg.model.name!r}: cannot be built with these sizes ({first[:200]})"
        ) from None
    count = sum(p.numel() for p in network.parameters())
    budget = cfg.model.max_parameters
    if count > budget:
        raise ConfigError(
            f"model {cfg.model.name!r}: {count:,} parameters ({count * 4 / 2**30:,.1f} GiB of "
            f"float32 weights), more than model.max_parameters = {budget:,}; make the model "
            "smaller (units, experts, embedding_dim, min_freq) or raise model.max_parameters"
        )
    return network


def _build_network(cfg: EstimatorConfig, preprocessor: _Sizes) -> MultiTaskNet:
    return build.build_network(
        cfg.features,
        cfg.task_specs(),
        cfg.model.name,
        cfg.model.params,
        cast(Preprocessor, preprocessor),  # only its sizes are read
    )


def build_weighting(cfg: EstimatorConfig) -> Weighting:
    return build.build_weighting(cfg.loss.weighting, cfg.loss.params, cfg.task_specs())


class MultiTaskModel:
    """One model, several tasks.

    Parameters are the sections of a run file (everything but ``data``): ``features``,
    ``tasks``, ``model`` (a name or a mapping with ``name:``), ``loss`` (a weighting name or a
    mapping with ``weighting:``), ``optimizer`` and ``training``. Each may be a mapping or the
    validated pydantic object.

    Example::

        model = MultiTaskModel(
            features={"categorical": ["education"], "numeric": ["age"]},
            tasks={"income": {"type": "binary", "label": "income_50k", "positive": "50000+."}},
            model={"name": "mmoe", "num_experts": 8},
        ).fit(train, validation=valid)
        model.evaluate(test)   # {"income": {"auc": ..., "logloss": ...}}
    """

    def __init__(
        self,
        *,
        features: Mapping[str, Any] | Any,
        tasks: Mapping[str, Any],
        model: str | Mapping[str, Any] | Any = "mmoe",
        loss: str | Mapping[str, Any] | Any = "sum",
        optimizer: Mapping[str, Any] | Any | None = None,
        training: Mapping[str, Any] | Any | None = None,
        calibration: Mapping[str, str] | None = None,
        decision: Mapping[str, Any] | Any | None = None,
    ) -> None:
        # Kept as given, so `get_params` returns the very objects (scikit-learn's clone checks).
        self._params: dict[str, Any] = {
            "features": features,
            "tasks": tasks,
            "model": model,
            "loss": loss,
            "optimizer": optimizer,
            "training": training,
            "calibration": calibration,
            "decision": decision,
        }
        self.config: EstimatorConfig = _validated(self._params)

    # ------------------------------------------------------------------------------ params
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments, as given (scikit-learn convention): with them,
        ``MultiTaskModel(**model.get_params())`` (and ``sklearn.base.clone(model)``) is an
        unfitted model with the same settings. ``deep`` is accepted for scikit-learn; there
        are no nested estimators."""
        return dict(self._params)

    def set_params(self, **params: Any) -> MultiTaskModel:
        """Replace constructor arguments (whole sections: ``set_params(training={...})``) and
        validate the result as the constructor does; returns ``self``. A fitted model keeps
        its learned state until the next ``fit``."""
        unknown = sorted(set(params) - set(self._params))
        if unknown:
            raise ValueError(
                f"set_params: unknown parameter(s) {unknown}; MultiTaskModel takes "
                f"{sorted(self._params)}{closest(unknown[0], self._params)}"
            )
        merged = {**self._params, **params}
        self.config, self._params = _validated(merged), merged
        return self

    @classmethod
    def from_config(cls, config: EstimatorConfig) -> MultiTaskModel:
        return cls(**{name: getattr(config, name) for name in EstimatorConfig.model_fields})

    # ------------------------------------------------------------------------------ fit
    def fit(
        self,
        train: Any,
        validation: Any | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        resume: bool = False,
        callbacks: Sequence[EpochCallback] = (),
        preprocessor: Preprocessor | None = None,
    ) -> MultiTaskModel:
        """Fit the preprocessor on ``train`` and train the network.

        ``train``/``validation`` are DataFrames or CSV/Parquet paths, or mappings
        ``{task: table}`` with one dataset per task (same feature columns, each labelled for
        its task). With ``training.schedule: alternate`` each step trains one task on a batch
        of its own dataset; with ``joint`` the datasets are stacked and each row's missing
        labels are masked. ``epochs``, ``batch_size`` and ``checkpoint_every`` override the
        ``training`` section for this call. Returns ``self``. With ``training.stream``,
        ``train`` must be the path of a Parquet file, a directory of them or a glob, read
        chunk by chunk (never whole); under torchrun each process reads its own row groups and
        a Parquet ``validation`` path is evaluated sharded (docs/distributed.md).

        With ``checkpoint_dir``, a checkpoint is written there every
        ``training.checkpoint_every`` steps (default: once per epoch) and the newest two are
        kept; ``resume=True`` continues from the newest readable one, ending with the same
        weights as an uninterrupted run (see docs/checkpoints.md).

        Launched by torchrun with several processes (or in an initialized process group),
        every process calls ``fit`` on the same data and trains one DDP replica;
        ``batch_size`` is the global batch (docs/distributed.md). Checkpoints work there
        too: rank 0 writes them, every rank resumes from the same one (with the same number
        of processes).

        Each of ``callbacks`` is called with every epoch's record once the epoch is complete
        (the dict that ends in ``history_``; see `polytask.training.progress.EpochRecord`),
        on rank 0 only under torchrun: the place for loggers. With ``training.progress`` each
        epoch also writes one line to the ``polytask`` logger. A callback with a
        ``bind(network, validation)`` method gets the network and the encoded validation split
        before the first epoch (`polytask.tracking.Tracker` measures gate entropies with them).
        After the fit each history record with validation holds ``task_best``, every task's
        best epoch so far, and ``task_best_epochs_`` each task's best over the fit.

        ``train`` and ``validation`` may also be `EncodedData` encoded by ``preprocessor``, a
        fitted `Preprocessor` of the same features and tasks (which the model keeps): several
        models then train on one encoded copy of the data (``polytask compare`` does so).
        A fitted ``preprocessor`` given with tables is used as it is, not fitted again (a
        run file's ``data.preprocessor``, from ``polytask fit-preprocessor``).
        """
        cfg = self._fit_config(epochs, batch_size, checkpoint_every, checkpoint_dir, resume)
        tcfg, tasks = cfg.training, cfg.task_specs()
        device, group = _training_device(tcfg)
        data = read_training_data(
            train,
            validation,
            features=cfg.features,
            tasks=tasks,
            training=tcfg,
            device=device,
            preprocessor=preprocessor,
            distributed=group is not None,
        )
        data.warn_constant_labels(tasks)
        tasks = data.preprocessor.tasks  # with the label scaling fitted on the training set
        torch.manual_seed(tcfg.seed)
        network, weighting = build_network(cfg, data.preprocessor), build_weighting(cfg)
        source = data.batches(tcfg)
        parts = build.training_parts(network, weighting, cfg.optimizer, tcfg.epochs, device, source)
        trained = training_network(parts.network, tcfg)  # bf16/compile wrap it (precision.py)
        parallel = None
        if group is not None:
            parallel = DistributedTraining(
                group, network=trained, weighting=parts.weighting, tasks=tasks, training=tcfg,
                fingerprint=data.fingerprint(), local_batches=data.shard is not None,
            )  # fmt: skip
        checkpoints, start = None, None
        if checkpoint_dir is not None:
            checkpoints, start = open_checkpoints(
                checkpoint_dir,
                every=tcfg.checkpoint_every or source.steps,
                resume=resume,
                parts=parts,
                config=cfg.model_dump(mode="json"),
                fingerprint=data.fingerprint(),
                group=group,
            )
        _bind(callbacks, parts.network, data.validation)
        try:
            result = fit_loop(
                model=trained, weighting=parts.weighting, tasks=tasks, optimizer=parts.optimizer,
                scheduler=parts.scheduler, train=source, validation=data.validation_split,
                cfg=tcfg,
                checkpoints=checkpoints, start=start, distributed=parallel, callbacks=callbacks,
            )  # fmt: skip
        except TrainingError as err:  # a non-finite loss: say when a label's scale is why
            raise TrainingError(f"{err}{data.preprocessor.scaling_hint()}") from None
        self.processes_ = 1 if group is None else group.world_size
        return self._fitted(cfg, parts, data, result, checkpoints)

    def _fit_config(
        self,
        epochs: int | None,
        batch_size: int | None,
        checkpoint_every: int | None,
        checkpoint_dir: Any,
        resume: bool,
    ) -> EstimatorConfig:
        """The settings of one fit: ``self.config`` with ``fit``'s overrides, checked again
        (``self.config`` may have been changed since it was validated)."""
        cfg = self.config.model_copy(deep=True)  # self.config keeps the settings as built
        try:
            if epochs is not None:
                cfg.training.epochs = epochs
            if batch_size is not None:
                cfg.training.batch_size = batch_size
            if checkpoint_every is not None:
                cfg.training.checkpoint_every = checkpoint_every
        except ValidationError as err:
            problems = format_validation_error(err, TrainingConfig, prefix="training.")
            raise ConfigError(f"fit: {problems}") from None
        try:
            cfg.check_combinations()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if checkpoint_dir is None and (cfg.training.checkpoint_every is not None or resume):
            raise ConfigError(
                "training.checkpoint_every and resume need a folder for the checkpoints: pass "
                "fit(..., checkpoint_dir=...) (polytask train keeps them in OUT/checkpoints)"
            )
        return cfg

    def _fitted(
        self,
        cfg: EstimatorConfig,
        parts: TrainingParts,
        data: TrainingData,
        result: FitResult,
        checkpoints: Checkpointer | None,
    ) -> MultiTaskModel:
        """Keep what the fit learned (``*_`` attributes); raise `TrainingInterrupted` after
        that if Ctrl-C stopped it; fit the calibrators (``calibration``) on the validation
        split."""
        self.preprocessor_ = data.preprocessor
        self.network_ = parts.network
        self.weighting_ = parts.weighting
        self.optimizer_ = parts.optimizer
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        annotate_history(self.history_, cfg.tasks, cfg.training.monitor)
        self.task_best_epochs_ = task_best_epochs(self.history_, cfg.tasks, cfg.training.monitor)
        self.n_train_ = data.rows
        self.skipped_batches_ = result.skipped_batches
        self.resumed_from_ = None if checkpoints is None else checkpoints.resumed_from
        # stamped in the saved model and in its run's config.yaml and metrics.json
        self.run_id_: str | None = uuid.uuid4().hex
        self.interrupted_ = result.interrupted
        self.calibrators_: dict[str, Calibrator] = {}
        if result.interrupted:
            epoch, step = result.stopped_at
            raise TrainingInterrupted(
                epoch=epoch,
                step=step,
                best_epoch=result.best_epoch,
                checkpoint=None if checkpoints is None else checkpoints.latest,
            )
        if cfg.calibration and data.validation is not None:
            self.calibrate(data.validation)
        elif cfg.calibration:  # a sharded validation set is held whole by no process
            why = "and fit was given none"
            if data.validation_shard is not None:
                why = "which is sharded over the processes here"
            warnings.warn(
                f"calibration {dict(cfg.calibration)} is fitted on the validation set, {why}; "
                "call calibrate(table) with a labelled table",
                stacklevel=3,
            )
        return self

    # ------------------------------------------------------------------------------ use
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(
                "this MultiTaskModel is not fitted yet; call fit(...) or MultiTaskModel.load(dir)"
            )

    def _device(self) -> torch.device:
        return next(self.network_.parameters()).device

    def encode(self, data: Any, *, labels: bool | None = None, what: str = "data") -> EncodedData:
        """Encode a table with the fitted preprocessor (on the model's device)."""
        self._check_fitted()
        df = read_table(data, what=what)
        return self.preprocessor_.transform(df, labels=labels, what=what).to(self._device())

    def _encoded(self, data: Any, *, labels: bool | None, what: str) -> EncodedData:
        """``data`` encoded on the model's device; already-encoded data is used as it is."""
        if isinstance(data, EncodedData):
            self._check_fitted()
            return data.to(self._device())
        return self.encode(data, labels=labels, what=what)

    def evaluate(self, data: Any, *, group: str | None = None) -> dict[str, dict[str, float]]:
        """Exact per-task metrics over the whole table: ``{task: {metric: value}}``.

        Label columns absent from the table give tasks with ``count`` 0 and no metrics, and a
        warning naming each such task. ``data`` may also be `encode`'s output
        (``labels=None``), so a table used for several reports is encoded once.

        Binary tasks also report ``ece`` (expected calibration error of the probabilities
        that predict serves; ``ece_raw`` of the uncalibrated ones when the task is
        calibrated). With a group column (``group``, else ``decision.group``) in a table,
        every task gains its grouped ranking metrics (`polytask.ranking`: ``gauc``,
        ``ndcg@k``, ``recall@k`` for binary tasks, ``ndcg@k`` for regression and count) of
        its own score, and with a ``decision.score`` an entry ``score`` holds every task's
        grouped metrics under the fused ranking, as ``<task>.<metric>``."""
        frame: pd.DataFrame | None = None
        if not isinstance(data, EncodedData):
            self._check_fitted()
            data = read_table(data, what="evaluation data")
            for name in self.config.tasks:
                column = self.preprocessor_.label_column(name)
                if column not in data.columns:
                    warnings.warn(
                        f"evaluation data: task {name!r} has no metrics: its label column "
                        f"{column!r} is not in the table",
                        stacklevel=2,
                    )
            frame = data
        encoded = self._encoded(data, labels=None, what="evaluation data")
        labels = {k: v.cpu().numpy() for k, v in encoded.labels.items()}  # weights too
        return self._metrics(self._raw_outputs(encoded), labels, frame, group)

    def evaluate_sharded(
        self, path: str | os.PathLike[str], *, chunk_rows: int = CHUNK_ROWS
    ) -> dict[str, dict[str, float]]:
        """`evaluate` of a Parquet split (a file, directory or glob) too large for one
        process: exact metrics over all its rows, the same dict on every process.

        Under torchrun every process must call it (a collective): each reads its row groups
        chunk by chunk, keeps only its outputs and labels, and rank 0 gathers them (about
        ``4 x (output columns + labels)`` bytes per row, e.g. 16 B for two binary tasks),
        computes the metrics and broadcasts them. In one process the file is read chunk by
        chunk. Every task's label column must be there; grouped metrics
        (``decision.group``) need the whole table: use `evaluate`."""
        self._check_fitted()
        group = current_group()
        rank, world = (0, 1) if group is None else group
        shard = SplitShard(
            path,
            self.preprocessor_,
            rank=rank,
            world_size=world,
            chunk_rows=chunk_rows,
            what="evaluation data",
        )
        bs = self.config.training.eval_batch_size
        result: dict[str, dict[str, float]] = evaluate_shard(
            self.network_, shard, bs, self._device(), self._metrics, distributed=group is not None
        )
        return result

    def _metrics(
        self,
        outputs: dict[str, np.ndarray],
        encoded_labels: dict[str, np.ndarray],
        frame: pd.DataFrame | None = None,
        group: str | None = None,
    ) -> dict[str, dict[str, float]]:
        """`evaluate`'s metrics from the outputs and the encoded labels (and weights)."""
        result = all_metrics(self.preprocessor_.tasks, outputs, encoded_labels)
        scores = self._task_scores(outputs)
        labels = self._unscaled(encoded_labels)
        for name, task in self.config.task_specs().items():
            if task.type != "binary" or not result[name].get("count"):
                continue
            result[name]["ece"] = expected_calibration_error(scores[name], labels[name])
            if name in self.calibrators_:
                result[name]["ece_raw"] = expected_calibration_error(
                    task_type(task).predict_columns(name, task, outputs[name])[name], labels[name]
                )
        group_column = group or self.config.decision.group
        if frame is None or group_column is None:
            return result
        groups = self._group_column(frame, group_column, "evaluation data")
        k = self.config.decision.k
        counted = [name for name in scores if result[name].get("count")]
        for name in counted:
            result[name].update(self._kpis(groups, scores[name], labels[name], k))
        spec = self._score_spec()
        if spec is not None:
            fused = fused_score(scores, spec, self._task_types(), groups)
            result["score"] = {}
            for name in counted:
                kpis = self._kpis(groups, fused, labels[name], k)
                result["score"].update({f"{name}.{m}": v for m, v in kpis.items()})
        return result

    def _unscaled(self, encoded_labels: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each task's encoded labels in the label's own units (label scaling undone), float64
        with NaN where missing."""
        labels = {k: v.astype(np.float64) for k, v in encoded_labels.items()}
        for name, task in self.preprocessor_.tasks.items():
            labels[name] = labels[name] * task.label_scale + task.label_shift
        return labels

    # ------------------------------------------------------------------------ decisions
    def _task_types(self) -> dict[str, str]:
        return {name: t.type for name, t in self.config.task_specs().items()}

    def _score_spec(self) -> ScoreSpec | None:
        score = self.config.decision.score
        if score is None:
            return None
        return ScoreSpec(score.form, dict(score.weights), dict(score.transforms))

    def _raw_outputs(self, encoded: EncodedData) -> dict[str, np.ndarray]:
        return predict_outputs(self.network_, encoded, self.config.training.eval_batch_size)

    def _task_scores(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The one number per row and task that a ranking uses: the (calibrated) probability
        of a binary task, the predicted value of a regression or count task."""
        scores: dict[str, np.ndarray] = {}
        for name, task in self.preprocessor_.tasks.items():  # fitted: label scaling included
            if task.type not in DEFAULT_TRANSFORM:
                continue
            value = task_type(task).predict_columns(name, task, outputs[name])[name]
            cal = self.calibrators_.get(name)
            scores[name] = cal(outputs[name]) if cal is not None else np.asarray(value)
        return scores

    def _group_column(self, frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
        if column not in frame.columns:
            raise DataError(
                f"{what}: the group column {column!r} (decision.group / --group) is not in the "
                f"table; its columns are {[str(c) for c in frame.columns][:20]}"
            )
        return frame[column].to_numpy()

    @staticmethod
    def _kpis(groups: np.ndarray, score: np.ndarray, label: np.ndarray, k: int) -> dict[str, float]:
        """Grouped ranking metrics of a task's labels under the ranking by ``score``."""
        kind = "binary" if np.isin(label[~np.isnan(label)], (0.0, 1.0)).all() else "graded"
        found = grouped_metrics(kind, groups, score, label, k)
        return {m: v for m, v in found.items() if not m.endswith("_groups")}

    def calibrate(self, data: Any, methods: Mapping[str, str] | None = None) -> MultiTaskModel:
        """Fit the calibrators of ``methods`` (default: the ``calibration`` setting) on a
        labelled table, usually the validation split; predict and evaluate then serve
        calibrated probabilities. Returns ``self``."""
        self._check_fitted()
        if methods is not None:
            raw = {**self.config.model_dump(mode="json"), "calibration": dict(methods)}
            self.config = validate(EstimatorConfig, raw, what="calibration methods")
        chosen = self.config.calibration
        if not chosen:
            raise ConfigError(
                "calibrate: no task to calibrate; give methods={task: 'isotonic' | 'platt' | "
                "'temperature'} or set the calibration section"
            )
        encoded = self._encoded(data, labels=True, what="calibration data")
        outputs = self._raw_outputs(encoded)
        fitted: dict[str, Calibrator] = {}
        for name, method in chosen.items():
            label = encoded.labels[name].cpu().numpy().astype(np.float64)
            try:
                fitted[name] = fit_calibrator(method, outputs[name], label)
            except ValueError as err:
                raise DataError(f"calibration of task {name!r} ({method}): {err}") from None
        self.calibrators_ = fitted
        return self

    def predict(
        self,
        data: Any,
        *,
        backend: str = "torch",
        onnx_file: str | os.PathLike[str] | None = None,
    ) -> pd.DataFrame:
        """One column per task, rows in input order with the input's index: probability of the
        positive class (binary), value (regression), predicted class (multiclass, plus one
        ``<task>.proba.<class>`` column per class); then one column per auxiliary output of
        the model (ESMM's ``cvr``), decoded the same way. A calibrated task's column holds
        the calibrated probability and ``<task>.raw`` the model's own; with a
        ``decision.score`` a ``score`` column holds the fused ranking score.

        ``backend="onnx"`` runs the network's ONNX graph with onnxruntime instead of torch
        (the extra ``polytask[serve]``): the graph in ``onnx_file`` (``polytask export``'s
        output, refused unless exported from these weights), or one exported in memory when
        ``None``. The preprocessing is polytask's either way (docs/serving.md)."""
        self._check_fitted()
        graph = self._onnx_graph(backend, onnx_file)
        return self._predict_frame(read_table(data, what="prediction data"), graph)

    def predict_to(
        self,
        data: str | os.PathLike[str],
        out: str | os.PathLike[str],
        *,
        chunk_rows: int = CHUNK_ROWS,
        backend: str = "torch",
        onnx_file: str | os.PathLike[str] | None = None,
    ) -> int:
        """`predict` a CSV or Parquet file into ``out`` (``.parquet`` or ``.csv``) chunk by
        chunk, so memory stays flat however many rows the file has; returns the row count.

        Parquet is read with ``ParquetFile.iter_batches`` (only the feature columns), each
        chunk of ``chunk_rows`` rows is encoded with the fitted preprocessor, predicted and
        appended; rows keep the input order. ``out`` appears only when every row is written.
        ``backend`` and ``onnx_file`` are `predict`'s.
        """
        self._check_fitted()
        graph = self._onnx_graph(backend, onnx_file)
        rows = 0
        what = "prediction data"
        with write_chunks(out) as write:
            columns = self.config.features.columns
            for chunk in read_chunks(data, columns=columns, chunk_rows=chunk_rows, what=what):
                write(self._predict_frame(chunk, graph))
                rows += len(chunk)
        return rows

    def _onnx_graph(
        self, backend: str, onnx_file: str | os.PathLike[str] | None
    ) -> OnnxGraph | None:
        """The onnxruntime graph `predict` runs, or None for the torch backend."""
        from polytask.export import check_backend, graph_for

        check_backend(backend)
        if backend == "torch":
            if onnx_file is not None:
                raise ConfigError("onnx_file is used by backend='onnx' only; found backend='torch'")
            return None
        return graph_for(self, onnx_file)

    def _predict_frame(self, df: pd.DataFrame, graph: OnnxGraph | None = None) -> pd.DataFrame:
        encoded = self.preprocessor_.transform(df, labels=False, what="prediction data")
        group = self.config.decision.group
        groups = df[group].to_numpy() if group is not None and group in df.columns else None
        return self._predict_encoded(encoded, df.index, graph, groups)

    def _predict_encoded(
        self,
        encoded: EncodedData,
        index: pd.Index,
        graph: OnnxGraph | None = None,
        groups: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """`predict`'s frame for encoded rows: the raw outputs of the torch network, or of
        its ONNX ``graph``, turned into columns by the task types, then calibrated and
        scored (`_decided`; ``groups``: each row's ``decision.group`` value, if known)."""
        if graph is None:
            outputs = self._raw_outputs(encoded.to(self._device()))
        else:
            outputs = graph.run(encoded)
        columns: dict[str, Any] = {}
        classes = self.preprocessor_.classes_
        for name, task in self.preprocessor_.tasks.items():  # fitted: label scaling included
            kind = task_type(task)
            columns.update(kind.predict_columns(name, task, outputs[name], classes.get(name)))
        for name, aux in self.network_.auxiliary_outputs.items():  # no label: no scaling
            out = outputs[name].astype(np.float64)
            columns.update(task_type(aux).predict_columns(name, TaskSpec(type=aux), out))
        return self._decided(pd.DataFrame(columns, index=index), groups, outputs)

    def _decided(
        self, frame: pd.DataFrame, groups: np.ndarray | None, logits: Mapping[str, np.ndarray]
    ) -> pd.DataFrame:
        """Predict's frame with the calibrated probabilities (``<task>.raw`` keeps the
        model's) and the fused ``score``; ``logits`` are the network's raw outputs (torch's
        or the ONNX graph's: the same)."""
        for name, cal in self.calibrators_.items():
            frame[f"{name}.raw"] = frame[name].to_numpy(dtype=np.float64)
            frame[name] = cal(logits[name])
        spec = self._score_spec()
        if spec is not None:
            scores = {t: frame[t].to_numpy(dtype=np.float64) for t in spec.weights}
            frame["score"] = fused_score(scores, spec, self._task_types(), groups)
        return frame

    def gate_statistics(self, data: Any) -> dict[str, dict[str, list[float] | float]]:
        """Mean gate weight per expert for each gate over ``data``, with its entropy (nats);
        empty for models without gates. Shows expert collapse. ``data`` may also be
        `encode`'s output."""
        encoded = self._encoded(data, labels=False, what="gate statistics data")
        return gate_statistics(self.network_, encoded, self.config.training.eval_batch_size)

    # ------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model folder atomically (`polytask.modelfile`): ``polytask.json``
        (versions, run id and the SHA-256 of every other file), ``config.yaml``,
        ``preprocessor.json``, ``weights.safetensors``, ``history.json``.

        An existing non-empty ``path`` is replaced only with ``overwrite=True``, and only
        when it is a model folder polytask wrote holding nothing else; a file or any other
        folder is never replaced. An OS error (no space, no permission) is an `OutputError`
        naming the path and the reason. In distributed training only rank 0 writes; the
        other ranks hold the same model."""
        self._check_fitted()
        target = Path(path)
        if not is_main_process():
            return target
        modelfile.check_replaceable(target, overwrite=overwrite)
        tensors = {f"network.{k}": v for k, v in self.network_.state_dict().items()}
        tensors.update({f"weighting.{k}": v for k, v in self.weighting_.state_dict().items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        files = {
            modelfile.CONFIG: yaml.safe_dump(
                self.config.model_dump(mode="json"), sort_keys=False
            ).encode("utf-8"),
            modelfile.PREPROCESSOR: json.dumps(
                self.preprocessor_.state_dict(), ensure_ascii=False
            ).encode("utf-8"),
            modelfile.HISTORY: json.dumps(jsonable(self.history_), indent=1).encode("utf-8"),
            modelfile.WEIGHTS: save_safetensors(tensors),
        }
        if self.calibrators_:
            files[modelfile.CALIBRATION] = json.dumps(
                {n: c.to_dict() for n, c in self.calibrators_.items()}, indent=1
            ).encode("utf-8")
        meta = {
            "best_epoch": self.best_epoch_,
            "n_train": self.n_train_,
            "run_id": getattr(self, "run_id_", None),
        }
        try:
            return modelfile.write_folder(target, files, meta)
        except OSError as err:
            raise OutputError(
                f"cannot save the model to {str(target)!r}: {os_reason(err)}"
            ) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> MultiTaskModel:
        """Load a model folder written by `save`. Never executes code from the folder, and
        reads nothing blindly: regular files only, each under a size cap, every JSON/YAML
        file checked against a strict schema, every file against the SHA-256 that
        polytask.json lists, the weights' shapes (from the safetensors header) against the
        config before the network is built, and every weight finite
        (`polytask.modelfile`)."""
        folder = Path(path)
        if not folder.is_dir():
            old = set_aside(folder)
            hint = (
                f"; a save interrupted by a crash left the previous model in {str(old)!r}: "
                "rename it back, or save again (which restores it first)"
                if old.is_dir()
                else ""
            )
            raise ModelFileError(
                f"model folder {str(folder)!r} does not exist (or is not a folder); expected "
                f"the folder written by MultiTaskModel.save or `polytask train`{hint}"
            )
        files = modelfile.read_folder(folder)
        config_file = folder / modelfile.CONFIG
        try:
            strict = EstimatorConfig.model_validate(files.config, strict=True)
        except ValidationError as err:
            problem = format_validation_error(err, EstimatorConfig).splitlines()[0]
            raise ModelFileError(f"{config_file}: {problem}") from None
        try:
            model = cls.from_config(strict)
        except ConfigError as err:
            raise ModelFileError(f"{config_file}: cannot be used: {err}") from None
        config = model.config
        try:
            pre = Preprocessor(features=config.features, tasks=config.task_specs()).load_state_dict(
                files.preprocessor.model_dump()
            )
        except DataError as err:
            raise ModelFileError(f"{folder / modelfile.PREPROCESSOR}: {err}") from None
        weights_file = folder / modelfile.WEIGHTS
        try:
            shapes = modelfile.tensor_shapes(weights_file, files.weights)
        except ModelFileError as err:
            # torch.save/pickle output starts with a zip header or a pickle opcode
            if not (files.weights.startswith(b"PK\x03\x04") or files.weights[:1] == b"\x80"):
                raise
            raise ModelFileError(
                f"{err} - it looks like a torch.save/pickle file, which could run code when "
                f"loaded; {_NO_PICKLE}"
            ) from None
        try:
            planned = plan_network(config, pre)
        except ConfigError as err:
            raise ModelFileError(f"{config_file}: {err}") from None
        _check_shapes(weights_file, planned, shapes)
        tensors = modelfile.load_tensors(weights_file, files.weights, f"; {_NO_PICKLE}")
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelFileError(
                    f"{weights_file}: tensor {name!r} holds NaN or infinite values; a model "
                    "with non-finite weights predicts garbage"
                )
        network = _build_network(config, pre)  # planned above
        try:
            weighting = build_weighting(config)
        except MissingExtraError as err:
            # Predicting does not need the weighting. A parameter-free one (the gradient
            # aggregators) is stood in for until something would use it.
            if _strip(tensors, "weighting."):
                raise ModelFileError(f"{folder}: cannot be loaded: {err}") from None
            weighting = _UnavailableWeighting(config, err)
        try:
            network.load_state_dict(_strip(tensors, "network."))
            weighting.load_state_dict(_strip(tensors, "weighting."))
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise ModelFileError(
                f"{weights_file}: weights do not fit the saved config: {first}"
            ) from None
        dev = resolve_device(device, "device")
        model.preprocessor_ = pre
        model.network_ = network.to(dev).eval()
        model.weighting_ = weighting.to(dev)
        model.best_epoch_ = files.meta.best_epoch
        model.n_train_ = files.meta.n_train
        model.run_id_ = files.meta.run_id
        model.history_ = files.history
        model.calibrators_ = _read_calibrators(folder / modelfile.CALIBRATION, files, config)
        mixed = modelfile.check_run(folder, model.run_id_)
        if mixed is not None:
            warnings.warn(mixed, modelfile.MixedRunWarning, stacklevel=2)
        return model

    def __repr__(self) -> str:
        fitted = "fitted" if hasattr(self, "network_") else "not fitted"
        return (
            f"MultiTaskModel(model={self.config.model.name!r}, tasks={list(self.config.tasks)}, "
            f"loss={self.config.loss.weighting!r}, {fitted})"
        )


def _training_device(training: TrainingConfig) -> tuple[torch.device, ProcessGroup | None]:
    """The device a fit trains on, and its process group when torchrun started several
    processes (each rank on its own device); sets ``training.num_threads``."""
    if training.num_threads:
        torch.set_num_threads(training.num_threads)
    device = resolve_device(training.device)
    group = join_process_group(device)
    return (device, None) if group is None else (group.device, group)


def _bind(callbacks: Sequence[EpochCallback], network: MultiTaskNet, validation: Any) -> None:
    """``bind(network, validation)`` of each callback that has it, before the first epoch
    (`polytask.tracking.Tracker` measures the model with them)."""
    for callback in callbacks:
        if (bind := getattr(callback, "bind", None)) is not None:
            bind(network, validation)


class _UnavailableWeighting(Weighting):
    """Stands in for a saved model's weighting whose optional dependency is not installed:
    the model predicts, evaluates and saves as usual (the weighting has no tensors); using the
    weighting itself raises the original error, which names the pip extra."""

    def __init__(self, config: EstimatorConfig, error: MissingExtraError) -> None:
        super().__init__(tasks=config.task_specs())
        self.error = error

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        raise MissingExtraError(str(self.error))


def _read_calibrators(
    path: Path, files: modelfile.ModelFolder, config: EstimatorConfig
) -> dict[str, Calibrator]:
    """The fitted calibrators of a model folder (none when it has no calibration.json)."""
    raw = files.calibration
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ModelFileError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    found: dict[str, Calibrator] = {}
    for name, entry in raw.items():
        if name not in config.calibration or not isinstance(entry, dict):
            raise ModelFileError(
                f"{path}: entry {name!r} does not match the saved calibration setting "
                f"{dict(config.calibration)}"
            )
        try:
            found[name] = Calibrator.from_dict(entry)
        except ValueError as err:
            raise ModelFileError(f"{path}: task {name!r}: {err}") from None
    return found


def _check_shapes(
    path: Path, planned: MultiTaskNet, found: Mapping[str, tuple[str, tuple[int, ...]]]
) -> None:
    """Refuse weights whose names or shapes (from the safetensors header) are not those of
    the network the config describes, before that network is built."""
    expected = {f"network.{k}": tuple(v.shape) for k, v in planned.state_dict().items()}
    network = {k: shape for k, (_, shape) in found.items() if k.startswith("network.")}
    missing = sorted(set(expected) - set(network))
    unexpected = sorted(set(network) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: weights do not fit the saved config: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    for name, shape in expected.items():
        if network[name] != shape:
            raise ModelFileError(
                f"{path}: weights do not fit the saved config: {name} has shape "
                f"{list(network[name])}, the config gives {list(shape)}"
            )


def _validated(params: Mapping[str, Any]) -> EstimatorConfig:
    """The constructor's arguments validated into one config (None: the section's default).
    The smallest network these settings can give is planned too, before any data is read: a
    size beyond model.max_parameters fails here, not after the data is loaded."""
    raw = {k: v for k, v in params.items() if v is not None}
    config: EstimatorConfig = validate(EstimatorConfig, _plain(raw), what="MultiTaskModel settings")
    plan_network(config, _SmallestSizes(config))
    return config


def _plain(value: Any) -> Any:
    """Pydantic objects to plain data so every entry point validates the same way."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="python")  # extra="allow" keys included
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: string keys, lists, plain numbers, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and (np.isnan(value) or np.isinf(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
