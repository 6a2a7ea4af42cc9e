"""The run-file schema: one validated description of data, features, tasks, model, loss,
optimizer and training.

The YAML run file, the Python API (`MultiTaskModel(...)`) and the CLI's ``key.sub=value``
overrides are three views of these pydantic models; defaults live here and nowhere else.
Every validation error is reported at once, each naming the key, what was expected, what was
found and, for a misspelt key, the closest valid one.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polytask._schema import Strict
from polytask.data.features import CategoricalFeature, FeaturesConfig, NumericFeature
from polytask.data.stream import StreamConfig
from polytask.errors import ConfigError, closest
from polytask.metrics import valid_monitors
from polytask.modelfile import yaml_problem
from polytask.models import MODELS, Head
from polytask.tasks import TASK_TYPES, TaskSpec, task_order, task_type
from polytask.training.settings import OptimizerConfig, SchedulerConfig, TrainingConfig
from polytask.weighting import WEIGHTINGS, Weighting

__all__ = [
    "CategoricalFeature",
    "DataConfig",
    "EstimatorConfig",
    "FeaturesConfig",
    "LossConfig",
    "ModelConfig",
    "NumericFeature",
    "OptimizerConfig",
    "RunConfig",
    "SchedulerConfig",
    "SplitConfig",
    "StreamConfig",
    "TaskConfig",
    "TrainingConfig",
    "apply_overrides",
    "format_validation_error",
    "load_run_file",
    "task_order",
    "validate",
]

DEFAULT_MAX_PARAMETERS = 500_000_000
"""``model.max_parameters`` by default: 2 GiB of float32 weights (about 8 GiB with Adam's
moments and the gradients)."""

DATA_PATH_KEYS = ("path", "train", "validation", "test", "preprocessor")
"""The keys of ``data`` that hold paths (resolved against the run file's folder)."""

_RESERVED = {"mean", "loss"}  # monitor names ("mean.auc", "loss") must stay unambiguous


# --------------------------------------------------------------------------------------------
# tasks


class TaskConfig(Strict):
    """One prediction task (`polytask.tasks.TaskSpec` once validated).

    ``type`` is a registered task type (`polytask.tasks.TASK_TYPES`). ``label`` defaults to
    the task's name. A binary label is 0/1, bool, or mapped to 1 where it equals
    ``positive``. ``inputs_from`` feeds other tasks' estimates into this task's tower;
    ``detach`` (stop-gradient, the default) keeps this task's loss from training them.
    ``sample_weight`` names a column of non-negative row weights (the task's loss is then the
    weighted mean over labelled rows). ``label_scaling: auto`` lets the task type scale the
    label for training (regression: standardized; count: divided by its mean) and maps
    predictions back; ``none`` trains on the label as it is.
    """

    type: str
    label: str | None = None
    positive: Any = None
    loss: str | None = None
    huber_delta: float = Field(default=1.0, gt=0)
    weight: float = Field(default=1.0, ge=0)
    inputs_from: list[str] = Field(default_factory=list)
    detach: bool = True
    sample_weight: str | None = None
    label_scaling: Literal["auto", "none"] = "auto"
    layer: int | None = Field(default=None, ge=1)
    """A tag task of a sequence model: the encoder layer its tower reads (default: the
    last)."""

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in TASK_TYPES:
            raise ValueError(
                f"unknown task type; expected one of {list(TASK_TYPES)} (found {v!r})"
                f"{closest(v, TASK_TYPES)}"
            )
        return v

    @model_validator(mode="after")
    def _fits_type(self) -> TaskConfig:
        kind = task_type(self.type)
        kind.check(self.spec())
        if self.loss is None:
            object.__setattr__(self, "loss", kind.loss_name(self.spec()))
        return self

    def spec(self) -> TaskSpec:
        """The plain task spec the layers below take."""
        return TaskSpec.of(self)


# --------------------------------------------------------------------------------------------
# model, loss, optimizer, training, data


def _check_choice(kind: str, name: str, registry: Mapping[str, Any], params: Any) -> None:
    """``name`` is in ``registry`` and ``params`` fit its entry's parameter schema."""
    if name not in registry:
        raise ValueError(
            f"unknown {kind} {name!r}; expected one of {sorted(registry)}{closest(name, registry)}"
        )
    schema = registry[name].params
    try:
        schema.model_validate(params)
    except ValidationError as err:
        detail = format_validation_error(err, schema).replace("\n", "; ")
        raise ValueError(f"{kind} {name!r}: {detail}") from None


class ModelConfig(BaseModel):
    """``name`` picks the architecture; the other keys are that architecture's parameters,
    validated by the architecture's own schema (see :mod:`polytask.models`)."""

    model_config = ConfigDict(extra="allow")
    name: str = "mmoe"
    max_parameters: int = Field(
        default=DEFAULT_MAX_PARAMETERS,
        ge=1,
        description="the most parameters the model may have, checked before anything is "
        "allocated (docs/robustness.md)",
    )
    """The most parameters a model may have (checked on the ``meta`` device before anything
    is allocated, and again once the vocabularies are known); not passed to the
    architecture."""

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        _check_choice("model", self.name, MODELS, self.params)
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(BaseModel):
    """``weighting`` picks how task losses become one update; other keys are its parameters."""

    model_config = ConfigDict(extra="allow")
    weighting: str = "sum"

    @model_validator(mode="after")
    def _known(self) -> LossConfig:
        _check_choice("weighting", self.weighting, WEIGHTINGS, self.params)
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SplitConfig(Strict):
    """Fractions of ``data.path`` for each split; they sum to 1 and 0 drops a split."""

    train: float = Field(default=0.8, gt=0)
    validation: float = Field(default=0.1, ge=0)
    test: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = math.fsum([self.train, self.validation, self.test])
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, found {total:g}")
        return self


class DataConfig(Strict):
    """Where the tables are: separate ``train``/``validation``/``test`` files, or one ``path``
    cut by ``split`` with ``split_seed``. ``loader`` reads a file: ``auto`` (CSV or Parquet by
    extension) or a built-in dataset loader (``census_income``; ``movielens_100k`` reads the
    ml-100k folder and, without ``split``, splits each user's ratings by time). Relative paths
    are resolved against the run file's folder; ``path`` cut into train and validation only
    (``split.test: 0``) may take its ``test`` from a file of its own. ``group`` names a user
    or request id column: it is saved with the model as ``decision.group`` (grouped ranking
    metrics, `polytask decide`). ``train`` may be a directory of Parquet files or a glob with
    ``training.stream``. ``preprocessor`` is a folder written by ``polytask
    fit-preprocessor``: its fitted vocabularies and statistics are used as they are, not
    fitted on ``train`` again. ``loader: conll`` reads the CoNLL column format (one token per
    line, a blank line between sentences) into one row per sentence, ``columns`` naming its
    fields in order, each a list column (`polytask.data.conll`)."""

    loader: Literal["auto", "csv", "parquet", "census_income", "movielens_100k", "conll"] = "auto"
    columns: list[str] | None = None
    path: str | None = None
    split: SplitConfig | None = None
    split_seed: int = 0
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    group: str | None = None
    preprocessor: str | None = Field(
        default=None,
        description="a folder written by `polytask fit-preprocessor`: its vocabularies and "
        "statistics are used as they are, not fitted on `train` again",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.loader == "conll") != (self.columns is not None):
            raise ValueError(
                "data.columns names the fields of a CoNLL file and goes with loader: conll "
                f"(found loader {self.loader!r} and columns {self.columns!r})"
            )
        if self.columns is not None and (
            not self.columns or len(set(self.columns)) != len(self.columns)
        ):
            raise ValueError(f"data.columns: expected distinct names, found {self.columns}")
        if self.path is None and self.train is None:
            raise ValueError("data needs either 'path' (with 'split') or 'train'")
        if self.path is not None and self.train is not None:
            raise ValueError("data takes either 'path' or 'train'/'validation'/'test', not both")
        held_out = self.path is not None and self.split is not None and self.split.test == 0
        if self.path is not None and (
            self.validation is not None or (self.test is not None and not held_out)
        ):
            given = [k for k in ("validation", "test") if getattr(self, k) is not None]
            raise ValueError(
                f"'path' is cut into train/validation/test by 'split'; {given} would be "
                "ignored: give 'train' with 'validation'/'test', or 'path' with 'split' (and "
                "'test' only with split.test: 0)"
            )
        if self.train is not None and self.split is not None:
            raise ValueError(
                "'split' cuts 'path' and would be ignored with 'train': give 'path' with "
                "'split', or 'train' with 'validation'/'test'"
            )
        return self


class ScoreConfig(Strict):
    """The fused ranking score (`polytask.decision`): ``product`` is prod_t f_t(y_t)^w_t
    (computed in log space), ``sum`` is sum_t w_t f_t(y_t); ``transforms`` picks f_t per task
    (``prob``, ``value``, ``log``, ``rank`` within the group; default ``prob`` for binary and
    ``value`` for regression tasks). Tasks without a weight do not enter the score."""

    form: Literal["product", "sum"] = "product"
    weights: dict[str, float]
    transforms: dict[str, Literal["prob", "value", "log", "rank"]] = Field(default_factory=dict)


class DecisionConfig(Strict):
    """Decisions from several KPIs: ``group`` names the column (a user or request id) whose
    rows are ranked together, for grouped metrics (GAUC, NDCG@k, recall@k) and the ``rank``
    transform; ``k`` is the cut-off of NDCG@k and recall@k; ``score`` is the fused ranking
    score that predict writes as a ``score`` column (`polytask decide` can choose it)."""

    group: str | None = None
    k: int = Field(default=10, ge=1)
    score: ScoreConfig | None = None


class EstimatorConfig(Strict):
    """Everything but the data: what `MultiTaskModel` is built from and saves."""

    features: FeaturesConfig
    tasks: dict[str, TaskConfig]
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    calibration: dict[str, Literal["isotonic", "platt", "temperature"]] = Field(
        default_factory=dict
    )
    decision: DecisionConfig = Field(default_factory=DecisionConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_name(cls, v: Any) -> Any:
        return {"weighting": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _cross_checks(self) -> EstimatorConfig:
        if not self.tasks:
            raise ValueError("tasks: at least one task is needed")
        for name in self.tasks:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) or name in _RESERVED:
                raise ValueError(
                    f"task name {name!r}: expected letters, digits, '_' or '-' (not starting with "
                    f"a digit) and none of {sorted(_RESERVED)}"
                )
        features = set(self.features.columns)
        for name, task in self.tasks.items():
            label = task.label or name
            if label in features:
                raise ValueError(
                    f"task {name!r}: label column {label!r} is also listed as a feature; "
                    "a label among the features leaks the answer"
                )
            if task.sample_weight is not None and task.sample_weight in (label, *features):
                what = "its label" if task.sample_weight == label else "a feature"
                raise ValueError(
                    f"task {name!r}: sample_weight column {task.sample_weight!r} is {what}; "
                    "expected a column of row weights of its own"
                )
            for src in task.inputs_from:
                if src not in self.tasks:
                    raise ValueError(
                        f"task {name!r}: inputs_from names unknown task {src!r}; expected one of "
                        f"{sorted(self.tasks)}{closest(src, self.tasks)}"
                    )
                if src == name:
                    raise ValueError(f"task {name!r}: inputs_from names the task itself")
        task_order({n: t.inputs_from for n, t in self.tasks.items()})  # raises on cycles
        self._decision_fits_tasks()
        _check_numbers(self.model_dump(mode="python"))
        self._known_monitor()
        self._model_fits_tasks()
        self.check_combinations()
        return self

    def check_combinations(self) -> None:
        """Settings that are valid one by one but not together (ValueError). Run at
        validation; `MultiTaskModel.fit` runs it again on the settings it trains with."""
        # The class tells; building it would run its constructor (RLW seeds its generator
        # from the global seed).
        build = WEIGHTINGS[self.loss.weighting].build
        combines = getattr(build, "single", Weighting.single) is Weighting.single
        if self.training.schedule == "alternate" and combines:
            raise ValueError(
                f"loss.weighting {self.loss.weighting!r} combines tasks within a step and "
                "cannot be used with training.schedule: alternate; use sum, weighted or "
                "uncertainty"
            )

    def _decision_fits_tasks(self) -> None:
        for name in self.calibration:
            if name not in self.tasks:
                raise ValueError(
                    f"calibration: unknown task {name!r}; expected one of {sorted(self.tasks)}"
                    f"{closest(name, self.tasks)}"
                )
            if self.tasks[name].type != "binary":
                raise ValueError(
                    f"calibration.{name}: calibration maps a binary task's score to a "
                    f"probability; {name!r} is a {self.tasks[name].type} task"
                )
        score = self.decision.score
        if score is not None:
            from polytask.decision import ScoreSpec

            if "score" in self.tasks:
                raise ValueError(
                    "decision.score: a task is named 'score', the column the fused score "
                    "takes; rename the task"
                )
            ScoreSpec(score.form, dict(score.weights), dict(score.transforms)).check(
                {n: t.type for n, t in self.tasks.items()}
            )
        group = self.decision.group
        if group is not None and group in {t.label or n for n, t in self.tasks.items()}:
            raise ValueError(f"decision.group: {group!r} is a label column, not a group id")

    def _known_monitor(self) -> None:
        monitors = valid_monitors(self.task_specs())
        m = self.training.monitor
        if m not in monitors:
            raise ValueError(
                f"training.monitor: unknown monitor {m!r}; expected one of {monitors}"
                f"{closest(m, monitors)}"
            )

    def _model_fits_tasks(self) -> None:
        """A model that constrains the tasks (ESMM) or names features (PEPNet) checks them
        here, before any data is read; sentences, sequence models and per-token tasks go
        together."""
        entry = MODELS[self.model.name]
        tokens = self.features.tokens is not None
        if entry.sequence and not tokens:
            raise ValueError(f"model {self.model.name!r} reads sentences: it needs features.tokens")
        if tokens and not entry.sequence:
            raise ValueError(
                f"features.tokens (sentences) needs a sequence model (bilstm or transformer); "
                f"model {self.model.name!r} reads rows"
            )
        for name, t in self.tasks.items():
            if task_type(t.type).per_token and not tokens:
                raise ValueError(
                    f"task {name!r}: a {t.type} task labels tokens and needs features.tokens "
                    "with a sequence model (bilstm or transformer)"
                )
            if tokens and not task_type(t.type).per_token:
                raise ValueError(
                    f"task {name!r}: a {t.type} task labels rows; a sequence model takes "
                    "per-token (tag) tasks only"
                )
            if t.layer is not None and not entry.sequence:
                raise ValueError(
                    f"task {name!r}: layer picks an encoder layer of a sequence model; model "
                    f"{self.model.name!r} has none"
                )
        params = entry.params.model_validate(self.model.params)
        heads = [
            Head(name=n, type=t.type, inputs_from=t.inputs_from, detach=t.detach, layer=t.layer)
            for n, t in self.task_specs().items()
        ]
        try:
            if entry.check_features is not None:
                entry.check_features(params, [c.name for c in self.features.categorical])
            if entry.check_heads is not None:
                entry.check_heads(params, heads)
        except ValueError as err:
            raise ValueError(f"model {self.model.name!r}: {err}") from None

    def task_specs(self) -> dict[str, TaskSpec]:
        """The tasks as plain specs, in the order written."""
        return {name: t.spec() for name, t in self.tasks.items()}


class RunConfig(EstimatorConfig):
    """A whole run file: the estimator's settings plus the data section."""

    data: DataConfig

    @model_validator(mode="after")
    def _group_to_decision(self) -> RunConfig:
        given = self.data.group
        if given is not None:
            if self.decision.group not in (None, given):
                raise ValueError(
                    f"data.group {given!r} and decision.group {self.decision.group!r} differ; "
                    "give one of them"
                )
            self.decision.group = given
        return self

    @model_validator(mode="after")
    def _data_fits_training(self) -> RunConfig:
        if self.training.stream is not None:
            if self.data.path is not None:
                raise ValueError(
                    "training.stream reads the training set chunk by chunk and cannot split "
                    "data.path: data.train must name a Parquet file, a directory of them or a "
                    "glob (validation and test tables as data.validation and data.test)"
                )
            if self.data.loader not in ("auto", "parquet"):
                raise ValueError(
                    f"training.stream reads data.train as Parquet; data.loader "
                    f"{self.data.loader!r} cannot be streamed (use 'auto' or 'parquet')"
                )
        if self.training.schedule == "alternate":
            raise ValueError(
                "training.schedule: alternate trains each task on its own table, which a run "
                "file's data section cannot give yet; use the Python API: "
                "MultiTaskModel(...).fit({task: table, ...})"
            )
        return self


_INT_LIMIT = 2**63
"""Integers in a config must fit in 64 bits (torch sizes, seeds and counts do)."""


def _check_numbers(value: Any, key: str = "") -> None:
    """Every number in a config is finite and fits in 64 bits: ``lr: .inf`` or a 5000-digit
    ``num_experts`` is an error naming the key, not a crash or a NaN loss later."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_numbers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_numbers(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, found {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
        digits = len(str(abs(value))) if abs(value) < 10**4000 else "thousands of"
        raise ValueError(f"{key}: {digits}-digit integer; expected one below 2**63")


# --------------------------------------------------------------------------------------------
# errors, loading, overrides


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys at ``loc`` (the parent of a rejected key), for 'did you mean'."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = _unwrap_model(field.annotation)
        else:
            current = _unwrap_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", None) or ()):
        found = _unwrap_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def format_validation_error(
    err: ValidationError,
    root: type[BaseModel],
    prefix: str = "",
    blame: Callable[[str, str], str | None] | None = None,
) -> str:
    """One line per problem: ``key.path: what was wrong (found ...)``. ``blame(key, line)``
    may name where the value came from (a command-line override); it leads that line."""
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        key = f"{prefix}{'.'.join(str(x) for x in loc)}"
        msg = e["msg"].removeprefix("Value error, ")
        found = e.get("input")
        if e["type"] == "extra_forbidden":
            valid = _field_names(root, loc[:-1])
            hint = closest(str(loc[-1]), valid)
            line = f"{key}: unknown key; valid keys here are {sorted(valid)}{hint}"
        elif not key or not loc:  # a check across sections (tasks vs features) names its keys
            line = msg
        elif e["type"] in {"missing"}:
            line = f"{key}: required key is missing"
        elif isinstance(found, dict | list) or e["type"].startswith("value_error"):
            line = f"{key}: {msg}"
        else:
            line = f"{key}: {msg} (found {found!r})"
        source = blame(key, line) if blame is not None else None
        lines.append(f"{source}: {line}" if source else line)
    return "\n".join(lines)


def _override_blame(overrides: Sequence[str]) -> Callable[[str, str], str | None]:
    """``blame`` for `format_validation_error`: the override that set the key of a problem
    (the last one, as it is the one that took effect), or None when the run file did."""
    keys = [
        (item.partition("=")[0].strip(), item.partition("=")[2].strip(), item) for item in overrides
    ]

    def blame(key: str, line: str) -> str | None:
        for okey, value, item in reversed(keys):
            if key and (key == okey or key.startswith(okey + ".")):
                return f"override {item!r}"
            if key and okey.startswith(key + "."):
                # A parameter checked by its section (model, loss): the line names the
                # parameter or quotes the value.
                rest = okey[len(key) + 1 :].split(".")[0]
                if re.search(rf"\b{re.escape(rest)}\b", line) or f"'{value}'" in line:
                    return f"override {item!r}"
            if not key and line.startswith(okey + ":"):
                return f"override {item!r}"
        return None

    return blame


def validate(
    model: type[BaseModel],
    raw: Mapping[str, Any],
    *,
    what: str = "config",
    overrides: Sequence[str] = (),
) -> Any:
    """Validate ``raw`` against ``model``; every problem goes in one `ConfigError`. A problem
    whose value came from one of ``overrides`` names that override."""
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"invalid {what}: expected a mapping of sections, found {type(raw).__name__}"
        )
    try:
        return model.model_validate(dict(raw))
    except ValidationError as err:
        blame = _override_blame(overrides) if overrides else None
        text = format_validation_error(err, model, blame=blame)
        lines = text.splitlines()
        if overrides and all(line.startswith("override '") for line in lines):
            what = f"override(s) of {what}"
        elif any(line.startswith("override '") for line in lines):
            what = f"{what} with its overrides"
        raise ConfigError(f"invalid {what}:\n{text}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3``, ``true``, ``[1,2]``)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} needs key=value (e.g. {item.strip() or 'training.epochs'}=3)"
            )
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: value {text!r} is not valid YAML ({yaml_problem(err)})"
            ) from None
        except ValueError as err:  # an integer of more than 4300 digits
            raise ConfigError(
                f"override {key.strip()}: value cannot be read ({str(err).split(';')[0]}); "
                "numbers in a config must fit in 64 bits"
            ) from None
    return out


def load_run_file(path: str | Path, overrides: list[str] | None = None) -> tuple[RunConfig, Path]:
    """Read, override and validate a YAML run file. Returns the config and the file's folder."""
    p = Path(path)
    what = f"run file {str(p)!r}"
    raw = read_yaml_file(p, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"{what}: expected a mapping of sections, found {raw!r}")
    raw = apply_overrides(raw, overrides or [])
    base = p.resolve().parent
    _cwd_paths(raw, overrides or [], base)
    return validate(RunConfig, raw, what=what, overrides=overrides or []), base


def read_yaml_file(path: Path, what: str) -> Any:
    """The YAML document of the file at ``path`` (a run file, a search space); every problem
    reading it is a `ConfigError` that starts with ``what``."""
    if not path.exists():
        raise ConfigError(f"{what} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} is not a file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} cannot be read as UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {yaml_problem(err)}") from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise ConfigError(
            f"{what}: a value cannot be read ({str(err).split(';')[0]}); "
            "numbers in a config must fit in 64 bits"
        ) from None


def _cwd_paths(raw: dict[str, Any], overrides: Sequence[str], base: Path) -> None:
    """A relative data path given as an override is resolved against the run file's folder
    ``base``, like one in the file; when no such file exists there but one does relative to
    the current folder (where the command was typed), that one is meant: it is made absolute."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    keys = {item.partition("=")[0].strip() for item in overrides}
    for name in DATA_PATH_KEYS:
        value = data.get(name)
        if not ({"data", f"data.{name}"} & keys) or not isinstance(value, str):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and not (base / path).exists() and path.exists():
            data[name] = str(path.resolve())
