"""``polytask compare``: does sharing help my tasks? Each model over several seeds, next to
single-task baselines, on one encoded copy of the run file's data.

For every model named (``single_task`` is one model per task) and every seed the run file's
training runs on the same splits, which are read and encoded once; the test split (else the
validation split) is scored once per run. ``compare.csv`` holds every score (``model, seed,
task, metric, value``), ``compare.md`` the mean ± standard deviation per task and model with
the best per task marked and negative transfer flagged, ``compare.png`` the same as bars.

A multi-task model shows *negative transfer* on a task when its mean is worse than the
single-task mean by more than the seeds' spread: the sum of the two sample standard
deviations (with one seed there is no spread, and any loss is flagged).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polytask._atomic import atomic_write_text
from polytask.config import EstimatorConfig, ModelConfig, RunConfig, TaskConfig, validate
from polytask.errors import ConfigError, MissingExtraError, PolytaskError, closest
from polytask.metrics import HIGHER_IS_BETTER
from polytask.tracking import task_monitor_metrics

SINGLE_TASK = "single_task"
"""The baseline: one model per task, a shared-bottom network with the run's tower and input
settings."""


_TOWER_KEYS = ("tower_units", "activation", "dropout", "norm")


@dataclass
class Failure:
    model: str
    seed: int
    error: str


@dataclass
class Comparison:
    """What `compare` measured: one row per ``(model, seed, task, metric)``."""

    models: list[str]
    tasks: list[str]
    seeds: list[int]
    primary: dict[str, str]
    """The metric each task is compared on."""
    split: str
    """The split scored: ``test``, else ``validation``."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    """Sample standard deviation over seeds (0 with one seed)."""
    n: int


@dataclass(frozen=True)
class NegativeTransfer:
    model: str
    task: str
    metric: str
    value: float
    single: float
    gap: float
    """How much worse than single-task (positive)."""
    spread: float


# ------------------------------------------------------------------------------ model specs
def model_spec(name: str, base: ModelConfig) -> dict[str, Any]:
    """The ``model`` section for ``name`` in a comparison whose run file has ``base``.

    The run file's own model keeps its settings; another model takes the settings it shares
    with it (tower, activation, expert or shared-layer widths; ``expert_units`` and
    ``shared_units`` stand in for each other) and its defaults for the rest.
    ``single_task`` is a shared-bottom network (for sentences: the run file's sequence model,
    one task each)."""
    from polytask.models import MODELS

    single = base.name if MODELS[base.name].sequence else "shared_bottom"
    target = single if name == SINGLE_TASK else name
    if target not in MODELS:
        choices = [SINGLE_TASK, *sorted(MODELS)]
        raise ConfigError(
            f"--models: unknown model {name!r}; expected some of {choices}{closest(name, choices)}"
        )
    if target == base.name:
        return {"name": target, **base.params}
    fields = MODELS[target].params.model_fields
    params = {k: v for k, v in base.params.items() if k in fields}
    width = base.params.get("expert_units") or base.params.get("shared_units")
    for key in ("shared_units", "expert_units"):
        if key in fields and key not in params and width:
            params[key] = width
    if name == SINGLE_TASK:
        params = {k: v for k, v in params.items() if k in (*_TOWER_KEYS, "shared_units")}
    return {"name": target, **params}


def _single_monitor(monitor: str, task: str, task_cfg: TaskConfig) -> str:
    """The run's monitor for a one-task model: ``mean.auc`` becomes ``task.auc``; a monitor
    of another task, the same metric of this one (else its loss)."""
    from polytask.metrics import valid_monitors

    if monitor == "loss":
        return monitor
    metric = monitor.partition(".")[2]
    candidate = f"{task}.{metric}"
    return candidate if candidate in valid_monitors({task: task_cfg.spec()}) else "loss"


def run_configs(
    cfg: EstimatorConfig,
    models: Sequence[str],
    specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[EstimatorConfig]]:
    """The validated settings of each model's runs (one per task for ``single_task``);
    ``specs`` gives some models their own ``model`` section."""
    if not models:
        raise ConfigError("--models: name at least one model")
    dupes = sorted({m for m in models if list(models).count(m) > 1})
    if dupes:
        raise ConfigError(f"--models: {dupes} named more than once")
    if cfg.training.stream is not None or cfg.training.schedule != "joint":
        raise ConfigError(
            "compare trains every model on one encoded table: training.stream and "
            "training.schedule: alternate are not supported"
        )
    base = cfg.model_dump(mode="python", exclude={"data"})
    out: dict[str, list[EstimatorConfig]] = {}
    for name in models:
        spec = dict(specs[name]) if specs and name in specs else model_spec(name, cfg.model)
        if name != SINGLE_TASK:
            raw = {**base, "model": spec}
            out[name] = [validate(EstimatorConfig, raw, what=f"settings of model {name!r}")]
            continue
        runs = []
        for task, task_cfg in cfg.tasks.items():
            one = task_cfg.model_copy(update={"inputs_from": []})
            training = {
                **base["training"],
                "monitor": _single_monitor(cfg.training.monitor, task, one),
            }
            raw = {
                **base,
                "tasks": {task: one.model_dump(mode="python")},
                "model": spec,
                "loss": {"weighting": "sum"},
                "training": training,
            }
            runs.append(validate(EstimatorConfig, raw, what=f"single-task settings of {task!r}"))
        out[name] = runs
    return out


def primary_metrics(cfg: EstimatorConfig) -> dict[str, str]:
    """Each task's compared metric: the monitor's (``mean.auc``, ``income.auc``) where the
    task reports it and it is not a loss, else the task type's usual one."""
    monitor = cfg.training.monitor
    loss = monitor.rpartition(".")[2] == "loss"  # no task reports a metric named ""
    return task_monitor_metrics(cfg.task_specs(), "" if loss else monitor)


# ------------------------------------------------------------------------------ running
def compare(
    cfg: RunConfig,
    base: Path,
    models: Sequence[str],
    *,
    seeds: int = 3,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Train each of ``models`` with seeds ``training.seed, +1, ... +seeds-1`` on the run
    file's splits (``base``: the run file's folder) and score it; a run that fails is
    recorded in ``failures`` and the others go on. ``specs`` gives some models their own
    ``model`` section (by default `model_spec`)."""
    from polytask.run import load_splits

    run_configs(cfg, models, specs)  # every model's settings are checked before reading
    splits = load_splits(cfg.data, base)
    assert not isinstance(splits.train, Path)  # no streaming here
    return compare_splits(
        cfg,
        splits.train,
        splits.validation,
        splits.test,
        models,
        seeds=seeds,
        specs=specs,
        log=log,
    )


def compare_splits(
    cfg: EstimatorConfig,
    train_frame: Any,
    validation_frame: Any | None,
    test_frame: Any | None,
    models: Sequence[str],
    *,
    seeds: int = 3,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> Comparison:
    """`compare` on tables already read: each is encoded once, for every run."""
    import torch

    from polytask.data import Preprocessor
    from polytask.estimator import MultiTaskModel, resolve_device

    if seeds < 1:
        raise ConfigError(f"--seeds: expected at least 1, found {seeds}")
    configs = run_configs(cfg, models, specs)
    device = resolve_device(cfg.training.device)
    shared = Preprocessor(features=cfg.features, tasks=cfg.task_specs())
    train = shared.fit_transform(train_frame, labels=True, what="training set").to(device)

    def encoded(frame: Any | None, what: str) -> Any | None:
        return None if frame is None else shared.transform(frame, labels=True, what=what).to(device)

    valid = encoded(validation_frame, "validation set")
    test = encoded(test_frame, "test set")
    scored = test if test is not None else valid
    if scored is None:
        raise ConfigError(
            "compare scores each run on the test split, else the validation split; the run "
            "file has neither (give data.test, or a split with test > 0)"
        )
    state = shared.state_dict()
    result = Comparison(
        models=list(models),
        tasks=list(cfg.tasks),
        seeds=[cfg.training.seed + i for i in range(seeds)],
        primary=primary_metrics(cfg),
        split="test" if test is not None else "validation",
    )
    for seed in result.seeds:
        for name, runs in configs.items():
            start = time.perf_counter()
            rows: list[dict[str, Any]] = []
            try:
                for run in runs:
                    run = run.model_copy(deep=True)
                    run.training.seed = seed
                    run.training.progress = False
                    own = {
                        key: {t: v for t, v in state[key].items() if t in run.tasks}
                        for key in ("classes", "label_scaling")
                    }
                    pre = Preprocessor(features=run.features, tasks=run.task_specs())
                    pre.load_state_dict({**state, **own})
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = MultiTaskModel.from_config(run).fit(
                            train, validation=valid, preprocessor=pre
                        )
                    rows += [
                        {"model": name, "seed": seed, "task": task, "metric": m, "value": float(v)}
                        for task, metrics in model.evaluate(scored).items()
                        for m, v in metrics.items()
                        if m != "count"
                    ]
            except (PolytaskError, RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as err:
                message = str(err).splitlines()[0] if str(err) else type(err).__name__
                result.failures.append(Failure(name, seed, f"{type(err).__name__}: {message}"))
                log(f"{name} seed {seed}: FAILED ({message})")
                continue
            elapsed = time.perf_counter() - start
            result.seconds[name] = result.seconds.get(name, 0.0) + elapsed
            result.rows += rows
            shown = ", ".join(
                f"{r['task']} {r['metric']} {r['value']:.4f}"
                for r in rows
                if r["metric"] == result.primary[r["task"]]
            )
            log(f"{name} seed {seed}: {shown} ({elapsed:.1f} s)")
    return result


# ------------------------------------------------------------------------------ statistics
def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Summary]:
    """Mean and sample standard deviation over seeds per ``(model, task, metric)``; NaN
    scores (an AUC over one class) are left out."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["task"], r["metric"]), []).append(float(r["value"]))
    out = {}
    for key, values in groups.items():
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            out[key] = Summary(math.nan, math.nan, 0)
            continue
        std = statistics.stdev(finite) if len(finite) > 1 else 0.0
        out[key] = Summary(statistics.fmean(finite), std, len(finite))
    return out


def best_models(
    summary: Mapping[tuple[str, str, str], Summary], models: Sequence[str], task: str, metric: str
) -> list[str]:
    """The model(s) with the best mean on ``task``'s ``metric``."""
    means = {
        m: summary[(m, task, metric)].mean
        for m in models
        if (m, task, metric) in summary and not math.isnan(summary[(m, task, metric)].mean)
    }
    if not means:
        return []
    best = max(means.values()) if HIGHER_IS_BETTER.get(metric, False) else min(means.values())
    return [m for m, v in means.items() if v == best]


def negative_transfer(
    summary: Mapping[tuple[str, str, str], Summary],
    models: Sequence[str],
    primary: Mapping[str, str],
) -> list[NegativeTransfer]:
    """Every (multi-task model, task) whose mean is worse than ``single_task``'s by more than
    the sum of the two standard deviations over seeds."""
    flags = []
    for task, metric in primary.items():
        ref = summary.get((SINGLE_TASK, task, metric))
        if ref is None or math.isnan(ref.mean):
            continue
        for model in models:
            s = summary.get((model, task, metric))
            if model == SINGLE_TASK or s is None or math.isnan(s.mean):
                continue
            gap = abs(s.mean - ref.mean)
            spread = s.std + ref.std
            worse = ref.mean > s.mean if HIGHER_IS_BETTER.get(metric, False) else ref.mean < s.mean
            if worse and gap > spread:
                flags.append(NegativeTransfer(model, task, metric, s.mean, ref.mean, gap, spread))
    return flags


# ------------------------------------------------------------------------------ writing
def _cell(s: Summary | None) -> str:
    if s is None or s.n == 0:
        return "-"
    return f"{s.mean:.4f} ± {s.std:.4f}"


def csv_text(result: Comparison) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=["model", "seed", "task", "metric", "value"], lineterminator="\n"
    )
    writer.writeheader()
    for r in result.rows:
        writer.writerow({**r, "value": repr(float(r["value"]))})
    return buf.getvalue()


def markdown(result: Comparison, title: str) -> str:
    """The report: the primary metric per task and model, all metrics, failed runs."""
    summary = summarize(result.rows)
    flags = negative_transfer(summary, result.models, result.primary)
    flagged = {(f.model, f.task) for f in flags}
    arrows = {t: "↑" if HIGHER_IS_BETTER.get(m, False) else "↓" for t, m in result.primary.items()}
    lines = [
        f"# polytask compare: {title}",
        "",
        f"Scored on the {result.split} split; mean ± sample standard deviation over "
        f"{len(result.seeds)} seed(s) {result.seeds}. **Bold**: the best mean per task. "
        "⚠: negative transfer, worse than `single_task` by more than the sum of the two "
        "standard deviations.",
        "",
        "| model | "
        + " | ".join(f"{t} {result.primary[t]} {arrows[t]}" for t in result.tasks)
        + " |",
        "|---|" + "---|" * len(result.tasks),
    ]
    for model in result.models:
        cells = []
        for task in result.tasks:
            metric = result.primary[task]
            cell = _cell(summary.get((model, task, metric)))
            if model in best_models(summary, result.models, task, metric):
                cell = f"**{cell}**"
            if (model, task) in flagged:
                cell += " ⚠"
            cells.append(cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    if flags:
        lines += ["Negative transfer:", ""]
        lines += [
            f"- {f.model} on {f.task}: {f.metric} {f.value:.4f} vs single-task "
            f"{f.single:.4f} (worse by {f.gap:.4f}, spread {f.spread:.4f})"
            for f in flags
        ]
    elif SINGLE_TASK in result.models:
        lines.append(
            "No negative transfer: no multi-task model is worse than single-task by "
            "more than the seeds' spread."
        )
    lines += [
        "",
        "## Every metric",
        "",
        "| model | task | metric | mean | std | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for (model, task, metric), s in summary.items():
        lines.append(f"| {model} | {task} | {metric} | {s.mean:.4f} | {s.std:.4f} | {s.n} |")
    if result.seconds:
        lines += [
            "",
            "Training time over all seeds: "
            + ", ".join(f"{m} {s:.0f} s" for m, s in result.seconds.items()),
        ]
    if result.failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {f.model} seed {f.seed}: {f.error}" for f in result.failures]
    return "\n".join(lines) + "\n"


def write_png(result: Comparison, path: Path) -> None:
    """One panel per task: the mean of its metric per model with ± std error bars; the
    single-task mean as a dashed line."""
    from polytask.plots import pyplot, save

    plt = pyplot()
    summary = summarize(result.rows)
    n = len(result.tasks)
    fig, axes = plt.subplots(
        1, n, figsize=(max(4.0, 1.0 + 1.1 * len(result.models)) * n, 3.6), squeeze=False
    )
    for ax, task in zip(axes[0], result.tasks, strict=True):
        metric = result.primary[task]
        stats = [summary.get((m, task, metric)) for m in result.models]
        means = [s.mean if s else math.nan for s in stats]
        stds = [s.std if s else 0.0 for s in stats]
        best = best_models(summary, result.models, task, metric)
        colors = ["tab:orange" if m in best else "tab:blue" for m in result.models]
        ax.bar(range(len(means)), means, yerr=stds, color=colors, capsize=4)
        ref = summary.get((SINGLE_TASK, task, metric))
        if ref is not None and not math.isnan(ref.mean):
            ax.axhline(ref.mean, color="grey", linestyle="--", linewidth=1, label="single_task")
        finite = [(m, s) for m, s in zip(means, stds, strict=True) if not math.isnan(m)]
        if finite:
            low = min(m - s for m, s in finite)
            high = max(m + s for m, s in finite)
            pad = max((high - low) * 0.5, 1e-4)
            ax.set_ylim(low - pad, high + pad)
        ax.set_xticks(range(len(means)), result.models, rotation=20)
        arrow = "higher" if HIGHER_IS_BETTER.get(metric, False) else "lower"
        ax.set_title(f"{task}: {result.split} {metric} ({arrow} is better)")
    fig.tight_layout()
    save(fig, path, dpi=100)


def write_outputs(result: Comparison, out: Path, title: str) -> list[Path]:
    """Write compare.csv, compare.md and (with matplotlib) compare.png; return the paths."""
    written = [out / "compare.csv", out / "compare.md"]
    atomic_write_text(written[0], csv_text(result))
    atomic_write_text(written[1], markdown(result, title))
    if result.rows:
        try:
            write_png(result, out / "compare.png")
            written.append(out / "compare.png")
        except MissingExtraError as err:
            warnings.warn(f"compare.png not written: {err}", stacklevel=2)
    return written
