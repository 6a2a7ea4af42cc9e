"""Pictures of runs, drawn with matplotlib (the optional extra ``plot``).

``polytask plot RUN_DIR`` reads what ``polytask train --out RUN_DIR`` wrote and draws:

- ``curves.png``: per task, the training and validation loss over epochs and the validation
  metric its best epoch is judged by, with that task's best epoch (solid line) and the
  monitor's (dashed);
- ``weights.png``: the weighting's task weights or sigmas over epochs (when it reports any);
- ``gates.png``: the mean gate weight per expert and gate (one gate per task) on the test
  split, as a heatmap (gated models);
- ``gate_entropy.png``: each gate's entropy over epochs (when ``training.loggers`` measured it);
- ``calibration.png``: for binary tasks, the reliability curve on the test split (mean
  predicted probability against the observed rate, 10 equal-mass bins) with its ECE.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polytask._atomic import atomic_path
from polytask.errors import ConfigError, MissingExtraError, install_hint


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; a missing matplotlib is a
    `MissingExtraError` naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(f"plots need matplotlib: {install_hint('plot')}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 90) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path


def _grid(n: int, size: tuple[float, float] = (4.2, 3.2)) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    best: Mapping[str, Mapping[str, Any]],
    monitor_epoch: int | None,
    path: Path,
) -> Path:
    """Per task: training and validation loss, the judged validation metric on a second
    axis, and the best epochs."""
    tasks = list(history[0]["train_loss"])
    fig, axes = _grid(len(tasks))
    epochs = [r["epoch"] for r in history]
    for ax, task in zip(axes, tasks, strict=True):
        ax.plot(epochs, [r["train_loss"][task] for r in history], "o-", label="train loss")
        valid = [r.get("validation", {}).get(task, {}) for r in history]
        if any("loss" in v for v in valid):
            ax.plot(epochs, [v.get("loss", math.nan) for v in valid], "s-", label="val loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        handles, labels = ax.get_legend_handles_labels()
        b = best.get(task)
        if b is not None and b["metric"] != "loss":
            twin = ax.twinx()
            values = [v.get(b["metric"], math.nan) for v in valid]
            twin.plot(epochs, values, "^-", color="tab:green", label=f"val {b['metric']}")
            twin.set_ylabel(b["metric"])
            h, label = twin.get_legend_handles_labels()
            handles, labels = handles + h, labels + label
        if b is not None:
            handles.append(ax.axvline(b["epoch"], color="tab:red", linewidth=1))
            labels.append(f"{task} best ({b['epoch']})")
        if monitor_epoch is not None:
            handles.append(ax.axvline(monitor_epoch, color="grey", linestyle="--", linewidth=1))
            labels.append(f"monitor best ({monitor_epoch})")
        ax.legend(handles, labels, fontsize=7, loc="best")
        ax.set_title(task)
    fig.tight_layout()
    return save(fig, path)


def plot_weights(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """The weighting's ``weight.<task>`` or ``sigma.<task>`` over epochs; None if none."""
    keys = [k for k in history[-1] if k.partition(".")[0] in ("weight", "sigma")]
    if not keys:
        return None
    series = {key: [r.get(key, math.nan) for r in history] for key in keys}
    kind = "sigma" if keys[0].startswith("sigma") else "weight"
    axes = (f"task {kind}", f"task {kind}s over epochs")
    return _over_epochs([r["epoch"] for r in history], series, axes, path)


def plot_gates(gates: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """Heatmap of the mean gate weight per expert (columns) and gate (rows)."""
    if not gates:
        return None
    import numpy as np

    plt = pyplot()
    names = list(gates)
    width = max(len(g["mean_weight"]) for g in gates.values())
    grid = np.full((len(names), width), np.nan)
    for i, g in enumerate(gates.values()):
        grid[i, : len(g["mean_weight"])] = g["mean_weight"]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 + 0.6 * width), max(2.6, 1.2 + 0.5 * len(names))))
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(width), [f"e{e}" for e in range(width)])
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(width):
            if not np.isnan(grid[i, j]):
                color = "white" if grid[i, j] < 0.6 * np.nanmax(grid) else "black"
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color=color)  # fmt: skip
    ax.set_xlabel("expert")
    ax.set_title("mean gate weight (test split)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return save(fig, path)


def plot_gate_entropy(history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    records = [r for r in history if r.get("gate_entropy")]
    if not records:
        return None
    series = {
        gate: [r["gate_entropy"].get(gate, math.nan) for r in records]
        for gate in records[-1]["gate_entropy"]
    }
    axes = ("entropy of the mean gate weight (nats)", "gate entropy over epochs (validation)")
    return _over_epochs([r["epoch"] for r in records], series, axes, path)


def _over_epochs(
    epochs: list[Any], series: Mapping[str, list[float]], axes: tuple[str, str], path: Path
) -> Path:
    """One line per entry of ``series`` over ``epochs``; ``axes``: the y label and the title."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, values in series.items():
        ax.plot(epochs, values, "o-", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(axes[0])
    ax.set_title(axes[1])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_calibration(curves: Mapping[str, tuple[Any, Any, float]], path: Path) -> Path | None:
    """Reliability curves ``{task: (mean predicted, observed rate, ECE)}``."""
    if not curves:
        return None
    fig, axes = _grid(len(curves), size=(3.8, 3.6))
    for ax, (task, (mean_p, rate, ece)) in zip(axes, curves.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
        ax.plot(mean_p, rate, "o-", label=f"model (ECE {ece:.4f})")
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed positive rate")
        ax.set_title(f"{task}: calibration (test split)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def calibration_curves(run_dir: Path) -> dict[str, tuple[Any, Any, float]]:
    """Reliability curve and ECE of each binary task of the run on its test split."""
    from polytask.calibration import expected_calibration_error, reliability_curve
    from polytask.estimator import MultiTaskModel
    from polytask.run import load_run_split

    model = MultiTaskModel.load(run_dir / "model")
    binary = [n for n, t in model.config.tasks.items() if t.type == "binary"]
    if not binary:
        return {}
    test = load_run_split(run_dir, "test")
    predictions = model.predict(test)
    encoded = model.encode(test, labels=True, what="test split")
    curves = {}
    for task in binary:
        prob = predictions[task].to_numpy()
        label = encoded.labels[task].cpu().numpy()
        mean_p, rate, _ = reliability_curve(prob, label, bins=10)
        curves[task] = (mean_p, rate, expected_calibration_error(prob, label, bins=10))
    return curves


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every picture of a ``polytask train`` output folder, written to ``out`` (default
    ``RUN_DIR/plots``); returns the files written."""
    run = Path(run_dir)
    target = Path(out) if out is not None else run / "plots"
    history_file = run / "model" / "history.json"
    if not history_file.is_file():
        raise ConfigError(
            f"{str(run)!r} is not a polytask train output folder: {history_file} is missing "
            "(give the folder passed to 'polytask train --out')"
        )
    pyplot()  # a missing matplotlib is reported before anything is read
    history = json.loads(history_file.read_text(encoding="utf-8"))
    if not history:
        raise ConfigError(f"{history_file} holds no epochs")
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    best = metrics.get("task_best_epochs") or history[-1].get("task_best", {})
    drawn = [
        plot_curves(history, best, metrics.get("best_epoch"), target / "curves.png"),
        plot_weights(history, target / "weights.png"),
        plot_gates(metrics.get("gates", {}), target / "gates.png"),
        plot_gate_entropy(history, target / "gate_entropy.png"),
    ]
    if (run / "config.yaml").is_file():
        try:
            curves = calibration_curves(run)
        except ConfigError as err:  # e.g. a run without a test split
            if "has no test split" not in str(err):
                raise
            curves = {}
        drawn.append(plot_calibration(curves, target / "calibration.png"))
    return [path for path in drawn if path is not None]
