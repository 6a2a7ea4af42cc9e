"""``polytask tune``: search run-file settings with Optuna (the optional extra ``tune``).

The search space is a small YAML file of run-file keys, each with a range or a list::

    optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # float, log scale
    model.num_experts: {low: 2, high: 8, step: 2}          # int (both bounds ints)
    model.gate_temperature: {low: 0.5, high: 2.0}
    training.batch_size: {choices: [512, 1024, 2048]}

Every key and every value the space can take is checked against the run file's schema before
any trial, with the run file's errors (the key named, the closest valid one suggested).

Each trial trains the run file with its values on the training split and is scored on the
validation split (never the test split): one objective (``--objective``, default the run's
monitor) is searched with TPE and trials whose validation score after an epoch is worse
than the median of earlier trials at that epoch are pruned; several (``--objectives a.auc
b.rmse``) with NSGA-II, and the Pareto front over them is written as CSV and PNG.
The best trial's run file (``best.yaml``; one per Pareto trial with several objectives) is
written ready for ``polytask train``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from polytask._atomic import atomic_write_text
from polytask._schema import Strict
from polytask.config import (
    RunConfig,
    format_validation_error,
    load_run_file,
    read_yaml_file,
)
from polytask.errors import (
    ConfigError,
    MissingExtraError,
    PolytaskError,
    closest,
    install_hint,
)


class Dimension(Strict):
    """One key of the search space: a range (``low``, ``high``, optional ``log`` or
    ``step``) or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    choices: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None and ranged:
            raise ValueError("give either low/high or choices, not both")
        if self.choices is None:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both low and high (or give choices)")
            if self.low > self.high:
                raise ValueError(f"low {self.low} is above high {self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"log: true needs low > 0, found {self.low}")
            if self.log and self.step is not None:
                raise ValueError("log and step cannot be combined")
        elif self.log or self.step is not None:
            raise ValueError("log and step apply to a range, not to choices")
        return self

    _raw_ints: bool = False
    """Whether the file wrote both bounds as integers (an int range)."""

    @property
    def integer(self) -> bool:
        return (
            self.choices is None
            and self._raw_ints
            and (self.step is None or float(self.step).is_integer())
        )

    def points(self) -> list[Any]:
        """The values checked against the run file: the bounds, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        number = int if self.integer else float
        return [number(self.low), number(self.high)]


def load_space(
    path: str | Path, run_file: str | Path, overrides: Sequence[str] = ()
) -> dict[str, Dimension]:
    """Read and check a search-space file against ``run_file`` (with ``overrides``)."""
    what = f"search space {str(path)!r}"
    raw = read_yaml_file(Path(path), what)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{what}: expected a mapping of run-file keys to ranges "
            "(optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}), found "
            f"{type(raw).__name__ if raw else 'nothing'}"
        )
    space: dict[str, Dimension] = {}
    problems: list[str] = []
    for key, spec in raw.items():
        if not isinstance(spec, dict):
            problems.append(
                f"{key}: expected {{low: ..., high: ...}} or {{choices: [...]}}, found {spec!r}"
            )
            continue
        try:
            dim = Dimension.model_validate(spec)
        except ValidationError as err:
            detail = format_validation_error(err, Dimension)
            problems += [
                f"{key}.{line}" if line[:1] != " " else line for line in detail.splitlines()
            ]
            continue
        dim._raw_ints = all(
            isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool)
            for k in ("low", "high")
        )
        space[str(key)] = dim
    if problems:
        raise ConfigError(f"invalid {what}:\n" + "\n".join(problems))
    for key, dim in space.items():  # every point of every key must fit the run file
        for value in dim.points():
            try:
                load_run_file(run_file, [*overrides, f"{key}={json.dumps(value)}"])
            except ConfigError as err:
                detail = str(err).partition(":\n")[2] or str(err)
                raise ConfigError(
                    f"{what}: {key} = {value!r} does not fit the run file: "
                    + detail.replace("\n", "; ")
                ) from None
    return space


def check_objectives(cfg: RunConfig, objectives: Sequence[str]) -> list[str]:
    from polytask.metrics import valid_monitors

    valid = valid_monitors(cfg.task_specs())
    for name in objectives:
        if name not in valid:
            raise ConfigError(f"objective {name!r}: expected one of {valid}{closest(name, valid)}")
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"objectives {list(objectives)}: each may be named once")
    return list(objectives)


@dataclass
class TuneResult:
    objectives: list[str]
    directions: list[str]
    trials: list[dict[str, Any]] = field(default_factory=list)
    """``number``, ``state``, ``values`` (one per objective, None if not complete),
    ``params``."""
    best: list[int] = field(default_factory=list)
    """The best trial (one objective) or the Pareto front (several)."""
    written: list[Path] = field(default_factory=list)


def suggest(trial: Any, key: str, dim: Dimension) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(key, dim.choices)
    assert dim.low is not None and dim.high is not None
    if dim.integer:
        step = int(dim.step) if dim.step is not None else 1
        return trial.suggest_int(key, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)


def tune(
    run_file: str | Path,
    space_file: str | Path,
    *,
    trials: int,
    objectives: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    out: Path,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Run the study and write ``out/trials.csv``, ``out/best.yaml`` (one objective) or
    ``out/pareto.csv``, ``out/pareto.png`` and ``out/pareto_trial_<n>.yaml`` (several)."""
    import pandas as pd

    from polytask.data import Preprocessor
    from polytask.estimator import MultiTaskModel
    from polytask.metrics import monitor_mode, monitor_value
    from polytask.run import load_splits, run_config_dump

    try:
        import optuna
    except ImportError:
        raise MissingExtraError(f"polytask tune needs optuna: {install_hint('tune')}") from None
    if trials < 1:
        raise ConfigError(f"--trials: expected at least 1, found {trials}")
    cfg, base = load_run_file(run_file, list(overrides))
    names = check_objectives(cfg, objectives or [cfg.training.monitor])
    space = load_space(space_file, run_file, overrides)
    if cfg.training.stream is not None or cfg.training.schedule != "joint":
        raise ConfigError(
            "polytask tune trains every trial on one table read once: training.stream and "
            "training.schedule: alternate are not supported"
        )
    splits = load_splits(cfg.data, base)
    if splits.validation is None:
        raise ConfigError(
            "polytask tune scores trials on the validation split; the run file has none "
            "(give data.validation, or a split with validation > 0)"
        )
    train_table, valid_table = splits.train, splits.validation
    assert isinstance(train_table, pd.DataFrame)  # not streamed
    assert isinstance(valid_table, pd.DataFrame)  # not sharded
    directions: list[Any] = ["maximize" if monitor_mode(n) == "max" else "minimize" for n in names]
    single = len(names) == 1
    seed = cfg.training.seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler if single else optuna.samplers.NSGAIISampler
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if single else None
    study = optuna.create_study(directions=directions, sampler=sampler(seed=seed), pruner=pruner)
    encoded: dict[str, tuple[Any, Any, Any]] = {}  # one encoding per features+tasks sections
    settings_of: dict[int, list[str]] = {}

    def objective(trial: Any) -> Any:
        values = {key: suggest(trial, key, dim) for key, dim in space.items()}
        settings = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        run, _ = load_run_file(run_file, [*overrides, *settings, "training.progress=false"])
        settings_of[trial.number] = settings
        key = json.dumps(run.model_dump(mode="json", include={"features", "tasks"}), sort_keys=True)
        if key not in encoded:
            pre = Preprocessor(features=run.features, tasks=run.task_specs())
            train = pre.fit_transform(train_table, labels=True, what="training set")
            valid = pre.transform(valid_table, labels=True, what="validation set")
            encoded[key] = (pre, train, valid)
        pre, train, valid = encoded[key]

        def report(record: dict[str, Any]) -> None:
            if not single or "validation" not in record:
                return
            value = monitor_value(record["validation"], names[0])
            if math.isnan(value):
                return
            trial.report(value, step=int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

        model = MultiTaskModel.from_config(run).fit(
            train, validation=valid, preprocessor=pre, callbacks=[report]
        )
        metrics = model.evaluate(valid)
        scores = [monitor_value(metrics, n) for n in names]
        shown = ", ".join(f"{n} {v:.4f}" for n, v in zip(names, scores, strict=True))
        log(f"trial {trial.number}: {shown}  {values}")
        return scores[0] if single else scores

    def pruned(study: Any, trial: Any) -> None:
        if trial.state == optuna.trial.TrialState.PRUNED:
            log(f"trial {trial.number}: pruned after epoch {trial.last_step}  {trial.params}")
        elif trial.state == optuna.trial.TrialState.FAIL:
            log(f"trial {trial.number}: failed  {trial.params}")

    study.optimize(objective, n_trials=trials, catch=(PolytaskError,), callbacks=[pruned])
    trial_rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "values": list(t.values) if t.values is not None else [None] * len(names),
            "params": dict(t.params),
        }
        for t in study.trials
    ]
    result = TuneResult(objectives=names, directions=directions, trials=trial_rows)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise ConfigError(f"polytask tune: none of the {trials} trial(s) completed")
    result.best = [study.best_trial.number] if single else [t.number for t in study.best_trials]
    result.written.append(_write_trials(result, out / "trials.csv"))
    header = f"# polytask tune of {run_file}: trial {{n}} ({', '.join(names)} on validation)\n"
    for number in result.best:
        name = "best.yaml" if single else f"pareto_trial_{number}.yaml"
        best_cfg, _ = load_run_file(run_file, [*overrides, *settings_of[number]])
        text = yaml.safe_dump(run_config_dump(best_cfg, base), sort_keys=False)
        atomic_write_text(out / name, header.format(n=number) + text)
        result.written.append(out / name)
    if not single:
        result.written.append(_write_trials(result, out / "pareto.csv", only=result.best))
        try:
            result.written.append(_pareto_png(result, out / "pareto.png"))
        except MissingExtraError as err:
            log(f"pareto.png not written: {err}")
    return result


def _write_trials(result: TuneResult, path: Path, only: Sequence[int] | None = None) -> Path:
    keys = list(dict.fromkeys(k for t in result.trials for k in t["params"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trial", "state", *result.objectives, *keys])
    for t in result.trials:
        if only is not None and t["number"] not in only:
            continue
        values = ["" if v is None else repr(float(v)) for v in t["values"]]
        writer.writerow([t["number"], t["state"], *values, *[t["params"].get(k, "") for k in keys]])
    atomic_write_text(path, buf.getvalue())
    return path


def _pareto_png(result: TuneResult, path: Path) -> Path:
    """Every complete trial on the first two objectives; the Pareto front highlighted."""
    from polytask.plots import pyplot, save

    plt = pyplot()
    x_name, y_name = result.objectives[0], result.objectives[1]
    done = [t for t in result.trials if t["state"] == "COMPLETE"]
    front = [t for t in done if t["number"] in result.best]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter([t["values"][0] for t in done], [t["values"][1] for t in done], color="tab:blue",
               alpha=0.5, label="trials")  # fmt: skip
    front.sort(key=lambda t: t["values"][0])
    ax.plot([t["values"][0] for t in front], [t["values"][1] for t in front], "o-",
            color="tab:orange", label="Pareto front")  # fmt: skip
    for t in front:
        ax.annotate(str(t["number"]), (t["values"][0], t["values"][1]), fontsize=7)
    ax.set_xlabel(f"{x_name} ({result.directions[0]})")
    ax.set_ylabel(f"{y_name} ({result.directions[1]})")
    ax.set_title("validation scores of the trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
