"""``polytask train | evaluate | predict | export | serve | compare | plot | tune | demo``.

Errors a user can fix print one ``error: ...`` line (or one per problem for a config) and
exit with status 2; anything else is a bug and keeps its traceback.

Only the standard library is imported at module level: torch, pandas, pydantic and rich are
imported inside the command that needs them, so ``polytask --version`` and ``--help`` are
fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polytask._defaults import CHUNK_ROWS
from polytask._version import __version__
from polytask.errors import ConfigError, DataError, PolytaskError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from polytask.estimator import MultiTaskModel

CONFIG_DOC = "docs/config.md"
OVERRIDE_HELP = (
    "KEY=VALUE overrides of run-file keys, after the run file or after --out; VALUE is YAML: "
    "training.epochs=3, 'optimizer.group_lr={towers.*: 3e-3}', 'model={name: mmoe}'. "
    f"Every key and its default: {CONFIG_DOC}"
)


def _width() -> int:
    """The terminal's width; 80 when output is not a terminal (a log, a pipe)."""
    if sys.stdout.isatty():
        return os.get_terminal_size(sys.stdout.fileno()).columns
    try:
        return max(40, int(os.environ.get("COLUMNS", "80")))
    except ValueError:
        return 80


def _console(quiet: bool = False) -> Console:
    from rich.console import Console

    return Console(highlight=False, width=_width(), quiet=quiet)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def fitted_tables(
    title: str,
    first: str,
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str]]],
    width: int,
) -> list[Table]:
    """One or more tables of the same rows that each fit ``width`` columns: when the value
    columns do not fit side by side they are wrapped into further tables (each repeating the
    first column), so no cell is ever cut or abbreviated."""
    from rich.table import Table

    first_width = max([len(first), *(len(name) for name, _ in rows)]) + 4
    groups: list[list[int]] = [[]]
    used = first_width
    for j in range(len(columns)):
        w = max([len(columns[j]), *(len(values[j]) for _, values in rows)]) + 3  # pad + rule
        if groups[-1] and used + w > width:
            groups.append([])
            used = first_width
        groups[-1].append(j)
        used += w
    tables = []
    for k, group in enumerate(groups):
        part = f" ({k + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=f"{title}{part}".strip() or None)
        table.add_column(first, no_wrap=True)
        for j in group:
            table.add_column(columns[j], justify="right", no_wrap=True)
        for name, values in rows:
            table.add_row(name, *[values[j] for j in group])
        tables.append(table)
    return tables


def metrics_table(
    title: str, metrics: Mapping[str, Mapping[str, float]], width: int = 80
) -> list[Table]:
    """Per-task metrics, one row per task, wrapped to ``width`` columns."""
    cols = [k for k in dict.fromkeys(k for m in metrics.values() for k in m) if k != "count"]
    rows = [
        (task, [*(_fmt(m.get(c, "")) for c in cols), str(int(m.get("count", 0)))])
        for task, m in metrics.items()
    ]
    return fitted_tables(title, "task", [*cols, "rows"], rows, width)


def gates_table(gates: Mapping[str, Mapping[str, Any]], width: int = 80) -> list[Any]:
    """Mean gate weight per expert and the entropy: one row per gate, or, when that is too
    wide for ``width`` and one column per gate is not, one row per expert; wrapped into
    several tables only when neither fits. The title is a line of its own above."""
    from rich.text import Text

    n = max(len(g["mean_weight"]) for g in gates.values())

    def weight(g: Mapping[str, Any], e: int) -> str:
        return f"{g['mean_weight'][e]:.3f}" if e < len(g["mean_weight"]) else ""

    experts = [f"e{e}" for e in range(n)]
    rows = [
        (name, [*(weight(g, e) for e in range(n)), f"{g['entropy']:.3f}"])
        for name, g in gates.items()
    ]
    tables = fitted_tables("", "gate", [*experts, "entropy"], rows, width)
    if len(tables) > 1:
        by_expert = [
            (label, [weight(g, e) for g in gates.values()]) for e, label in enumerate(experts)
        ]
        by_expert.append(("entropy", [f"{g['entropy']:.3f}" for g in gates.values()]))
        transposed = fitted_tables("", "expert", list(gates), by_expert, width)
        if len(transposed) == 1:
            tables = transposed
    title = "mean gate weight per expert (entropy in nats; log E = uniform)"
    return [Text(title), *tables]


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from polytask.config import load_run_file
    from polytask.run import run_training
    from polytask.tracking import epochs_apart
    from polytask.training.distributed import is_main_process
    from polytask.training.progress import printed_to_stdout

    cfg, base = load_run_file(args.run_file, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.run_file).stem
    main_process = is_main_process()  # under torchrun, only rank 0 prints
    console = _console(quiet=not main_process)
    console.print(
        f"training [bold]{cfg.model.name}[/] on tasks {list(cfg.tasks)} "
        f"({cfg.loss.weighting} weighting) -> {out}"
    )
    # A line per epoch on stdout, so `polytask train RUN > log` keeps them.
    with printed_to_stdout():
        metrics = run_training(
            cfg,
            base,
            out,
            resume=args.resume,
            overwrite=args.overwrite,
            run_file=Path(args.run_file),
        )
    if not main_process:
        return 0
    width = console.width
    for split in ("validation", "test"):
        if split in metrics:
            console.print(*metrics_table(split, metrics[split], width))
    if "gates" in metrics:
        console.print(*gates_table(metrics["gates"], width))
    if metrics.get("skipped_batches"):
        console.print(
            f"skipped {metrics['skipped_batches']} batch(es) with a non-finite loss "
            "(training.on_nan: skip)"
        )
    best = metrics["best_epoch"]
    if best is None:
        best_text = "no validation split, so no best epoch (the model is the last epoch's)"
    else:
        best_text = f"best epoch {best} (training.monitor {cfg.training.monitor})"
    processes = metrics.get("processes", 1)
    by = f" by {processes} processes (torchrun)" if processes > 1 else ""
    console.print(
        f"trained{by}: {metrics['train_samples_per_s']:,.0f} train samples/s; {best_text}; "
        f"wrote {out / 'model'} and {out / 'metrics.json'}"
    )
    apart = epochs_apart(metrics.get("task_best_epochs", {}), cfg.training.monitor, best)
    if apart:
        console.print(apart, markup=False)
    return 0


def cmd_fit_preprocessor(args: argparse.Namespace) -> int:
    from polytask.config import load_run_file
    from polytask.run import fit_preprocessor_to
    from polytask.training.distributed import is_main_process

    cfg, base = load_run_file(args.run_file, args.overrides)
    summary = fit_preprocessor_to(cfg, base, Path(args.output))
    if is_main_process():
        sizes = summary["vocabularies"]
        by = f" by {summary['processes']} processes" if summary["processes"] > 1 else ""
        print(
            f"fitted{by} on {summary['rows']:,} rows ({len(sizes)} vocabularies, "
            f"{sum(sizes.values()):,} values); wrote {args.output}; use it with "
            f"data.preprocessor={args.output}"
        )
    return 0


def _table_of(args: argparse.Namespace) -> tuple[Any, str]:
    """The table ``evaluate``/``predict`` read: the DATA file, or with ``--split`` that split
    of the run that trained the model (its ``config.yaml`` names the data)."""
    if args.split is None:
        if args.data is None:
            raise DataError("give a DATA file, or --split train|validation|test")
        if args.run is not None:
            raise DataError("--run picks the run whose --split to read; it needs --split")
        return args.data, str(args.data)
    if args.data is not None:
        raise DataError(f"give a DATA file or --split, not both (found {args.data!r})")
    from polytask.run import load_run_split

    run = Path(args.run) if args.run is not None else Path(args.model_dir).resolve().parent
    return load_run_split(run, args.split), f"{args.split} split of {run}"


def _model_and_table(
    args: argparse.Namespace, default_split: str | None = None
) -> tuple[MultiTaskModel, Any, str]:
    """The saved model and the table it is to read (`_table_of`); ``default_split`` when
    given no DATA and no --split (``decide``/``calibrate``: the run's validation split)."""
    from polytask.estimator import MultiTaskModel

    model = MultiTaskModel.load(args.model_dir)
    if args.data is None and args.split is None:
        args.split = default_split
    return model, *_table_of(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, table, name = _model_and_table(args)
    metrics = model.evaluate(table, group=args.group)
    # A task whose label column is absent has no metrics (evaluate warned, naming it).
    scored = {t: m for t, m in metrics.items() if set(m) != {"count"} or m["count"] > 0}
    if not scored:
        raise DataError(f"{name}: no task has its label column, so there is nothing to evaluate")
    if args.json:
        print(json.dumps(scored, indent=2))
    else:
        console = _console()
        console.print(*metrics_table(name, scored, console.width))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from polytask.data import write_table
    from polytask.estimator import MultiTaskModel
    from polytask.export import ONNX_FILE

    model = MultiTaskModel.load(args.model_dir)
    if args.group is not None:
        model.config.decision.group = args.group
    backend: dict[str, Any] = {}
    if args.backend == "onnx":  # MODEL_DIR/model.onnx unless --onnx-file names another graph
        onnx_file = args.onnx_file or str(Path(args.model_dir) / ONNX_FILE)
        backend = {"backend": "onnx", "onnx_file": onnx_file}
    elif args.onnx_file is not None:
        raise PolytaskError("--onnx-file is read by --backend onnx only")
    # A file streams chunk by chunk whatever its format, so memory stays flat in its rows;
    # a model with decision.group scores each group as a whole, so it reads the file whole.
    whole = model.config.decision.group is not None and args.chunk_rows is None
    if args.split is None and args.data is not None and not whole:
        chunk_rows = CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows
        rows = model.predict_to(args.data, args.output, chunk_rows=chunk_rows, **backend)
        print(f"wrote {rows} rows to {args.output} (streamed, {chunk_rows} rows at a time)")
        return 0
    table, _ = _table_of(args)
    predictions = model.predict(table, **backend)
    write_table(predictions, args.output)
    print(f"wrote {len(predictions)} rows x {predictions.shape[1]} columns to {args.output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from polytask.estimator import MultiTaskModel
    from polytask.export import ONNX_FILE, OPSET, export_onnx

    model = MultiTaskModel.load(args.model_dir)
    out = Path(args.output) if args.output else Path(args.model_dir) / ONNX_FILE
    export_onnx(model, out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes, opset {OPSET})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from polytask.serve import serve

    keys = ("host", "port", "backend", "onnx_file", "workers", "max_rows", "threads", "log_level")
    serve(args.model_dir, **{key: getattr(args, key) for key in keys})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Shared-bottom vs MMoE on the MMoE paper's synthetic data with weakly related tasks."""
    from rich.table import Table

    from polytask.datasets import mmoe_synthetic, split_frame
    from polytask.estimator import MultiTaskModel

    console = _console()
    frame = mmoe_synthetic(args.rows, correlation=args.correlation, dim=100, seed=args.seed)
    train, valid, test = split_frame(frame, fractions=(0.8, 0.1, 0.1), seed=args.seed)
    features = {"numeric": [c for c in frame.columns if c.startswith("x")]}
    tasks = {"y1": {"type": "regression"}, "y2": {"type": "regression"}}
    console.print(
        f"demo: {args.rows:,} rows of the MMoE paper's synthetic data (Ma et al. 2018), two "
        f"regression tasks with correlation {args.correlation}; {args.epochs} epochs each"
    )
    models: dict[str, dict[str, Any]] = {
        "shared_bottom": {"name": "shared_bottom", "shared_units": [113], "tower_units": [8]},
        "mmoe": {"name": "mmoe", "num_experts": 8, "expert_units": [16], "tower_units": [8]},
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    times: dict[str, float] = {}
    for name, spec in models.items():
        start = time.perf_counter()
        model = MultiTaskModel(
            features=features,
            tasks=tasks,
            model=spec,
            optimizer={"lr": 3e-3},
            training={
                "epochs": args.epochs,
                "batch_size": 256,
                "seed": args.seed,
                "monitor": "loss",
                "progress": False,
            },
        ).fit(train, validation=valid)
        results[name] = model.evaluate(test)
        times[name] = time.perf_counter() - start
    table = Table(title="test RMSE per task (lower is better)")
    table.add_column("model")
    for t in tasks:
        table.add_column(t, justify="right")
    table.add_column("seconds", justify="right")
    for name, res in results.items():
        table.add_row(name, *[f"{res[t]['rmse']:.4f}" for t in tasks], f"{times[name]:.1f}")
    console.print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Each model over several seeds next to single-task baselines (polytask.compare)."""
    from polytask.compare import compare, write_outputs
    from polytask.config import load_run_file

    cfg, base = load_run_file(args.run_file, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.run_file).stem}_compare"
    console = _console()
    console.print(
        f"comparing {args.models} on tasks {list(cfg.tasks)} over {args.seeds} seed(s) -> {out}"
    )
    result = compare(
        cfg,
        base,
        args.models,
        seeds=args.seeds,
        log=lambda line: console.print(line, markup=False),  # errors may hold [brackets]
    )
    written = write_outputs(result, out, title=str(args.run_file))
    table = (out / "compare.md").read_text(encoding="utf-8").split("\n## ")[0].rstrip()
    console.print(table, markup=False)
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    if result.failures:
        console.print(f"{len(result.failures)} run(s) failed; see {out / 'compare.md'}")
        return 1
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """The PNGs of a training run (polytask.plots)."""
    from polytask.plots import plot_run

    written = plot_run(args.run_dir, args.out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """Optuna search over a space of run-file keys (polytask.tune)."""
    from polytask.tune import tune

    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.run_file).stem}_tune"
    objectives = args.objectives or ([args.objective] if args.objective else None)
    console = _console()
    result = tune(
        args.run_file,
        args.space,
        trials=args.trials,
        objectives=objectives,
        overrides=args.overrides,
        out=out,
        log=lambda line: console.print(line, markup=False),
    )
    which = "best trial" if len(result.objectives) == 1 else "Pareto front"
    console.print(f"{which}: {result.best}; wrote {', '.join(str(p) for p in result.written)}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    model, table, name = _model_and_table(args, default_split="validation")
    for item in args.method or []:
        if "=" not in item:
            raise ConfigError(f"--method {item!r}: expected TASK=isotonic|platt|temperature")
    methods = dict(item.split("=", 1) for item in args.method) if args.method else None
    before = model.evaluate(table)
    model.calibrate(table, methods)
    after = model.evaluate(table)
    model.save(args.model_dir, overwrite=True)  # the same model, updated in place
    for task, method in model.config.calibration.items():
        print(
            f"{task}: {method} calibration on {name}; expected calibration error "
            f"{before[task].get('ece', float('nan')):.4f} -> {after[task]['ece']:.4f}"
        )
    print(f"saved the calibrated model in {args.model_dir}")
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from polytask.decide import decide, write_front

    model, table, name = _model_and_table(args, default_split="validation")
    result = decide(
        model,
        table,
        maximize=args.maximize,
        subject_to=args.subject_to,
        trials=args.trials,
        seed=args.seed,
        form=args.form,
        group=args.group,
    )
    model.save(args.model_dir, overwrite=True)  # the same model, updated in place
    written = write_front(result, Path(args.model_dir) / "decision")
    weights = ", ".join(f"{t} {w:.3f}" for t, w in result.weights.items())
    print(f"chosen on {name}: {model.config.decision.score.form} of {{{weights}}}")  # type: ignore[union-attr]
    for kpi, value in result.kpis.items():
        task = kpi.partition(".")[0]
        print(f"  {kpi:<24} {value:.4f}   ({task} alone: {result.own[task][kpi]:.4f})")
    print(f"{int(result.table['pareto'].sum())} of {len(result.table)} candidates on the front")
    print(f"wrote {', '.join(str(p) for p in written)}; saved the weights in {args.model_dir}")
    return 0


def _add_group(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--group",
        help="the group column (a user or request id) for grouped ranking metrics and the "
        "score's rank transform (default: the model's decision.group, saved from data.group)",
    )


def _add_backend(p: argparse.ArgumentParser, backend_help: str) -> None:
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help=backend_help)
    p.add_argument(
        "--onnx-file", help="the ONNX graph for --backend onnx (default: MODEL_DIR/model.onnx)"
    )


def _add_table_source(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "data",
        nargs="?",
        help=f"CSV or Parquet file to {verb} (or give --split instead; default: none)",
    )
    p.add_argument(
        "--split",
        choices=["train", "validation", "test"],
        help=f"{verb} this split of the run that trained the model, read as its run file "
        "reads it (default: none, DATA is read)",
    )
    p.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="with --split: the run folder (written by 'polytask train --out RUN_DIR') whose "
        "config.yaml names the data (default: the model folder's parent, e.g. runs/census "
        "for runs/census/model)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polytask",
        description="Multi-task learning for tabular data. 'polytask COMMAND --help' describes "
        f"each command; {CONFIG_DOC} lists every run-file key.",
    )
    parser.add_argument("--version", action="version", version=f"polytask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train from a run file, evaluate on its test split",
        description="Train from a YAML run file, evaluate on its validation and test splits, "
        "write OUT/model/, OUT/metrics.json and OUT/config.yaml. Every run-file key and its "
        f"default: {CONFIG_DOC}.",
        epilog="example: polytask train examples/census_mmoe.yaml --out runs/census "
        "training.epochs=3 'model={name: mmoe, num_experts: 4}'",
    )
    p.add_argument("run_file", help="YAML run file (keys: docs/config.md)")
    p.add_argument(
        "--out",
        help="output folder (default: runs/<run file name without .yaml>)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in OUT/checkpoints (default: off, "
        "start from scratch)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train into a non-empty OUT: replace the model/, metrics.json, config.yaml and "
        "checkpoints/ a previous run wrote there, nothing else (default: off, a non-empty OUT "
        "is refused)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "fit-preprocessor",
        help="fit a run file's preprocessor once, to reuse it (data.preprocessor)",
        description="Fit the preprocessor (vocabularies, numeric statistics, label classes) on "
        "the run file's training split and write it to a folder; runs with "
        "data.preprocessor: DIR use it as it is. With training.stream the fit streams the "
        "Parquet file(s); under torchrun it is sharded over the processes.",
        epilog="example: polytask fit-preprocessor run.yaml -o prep; "
        "polytask train run.yaml data.preprocessor=prep",
    )
    p.add_argument("run_file", help="YAML run file (keys: docs/config.md)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="the folder to write (required; written atomically, replacing an earlier "
        "preprocessor folder there)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_fit_preprocessor)

    p = sub.add_parser(
        "evaluate",
        help="metrics of a saved model on a labelled table",
        description="Per-task metrics of a saved model on a labelled table: a file, or a split "
        "of the run that trained it (--split). A task whose label column is absent is left out "
        "with a warning.",
        epilog="examples: polytask evaluate runs/census/model --split test; "
        "polytask evaluate runs/census/model census.parquet",
    )
    p.add_argument("model_dir", metavar="MODEL", help="a saved model folder (e.g. runs/x/model)")
    _add_table_source(p, "evaluate")
    _add_group(p)
    p.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: a table)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="predictions of a saved model for a table",
        description="Predictions of a saved model, one column per task, rows in input order. "
        "A CSV or Parquet file streams chunk by chunk, so memory stays flat in the number of rows.",
        epilog="examples: polytask predict runs/census/model --split test -o pred.parquet; "
        "polytask predict runs/census/model census.parquet -o scores.parquet",
    )
    p.add_argument("model_dir", metavar="MODEL", help="a saved model folder (e.g. runs/x/model)")
    _add_table_source(p, "predict")
    _add_group(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="OUT.csv or OUT.parquet (required; written atomically)",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        help="rows per chunk: a CSV or Parquet file is read and predicted chunk by chunk, so "
        f"memory stays flat in the number of rows (default: {CHUNK_ROWS}; a model with "
        "decision.group reads the file whole unless this is given)",
    )
    _add_backend(
        p,
        "run the network in torch, or its exported ONNX graph in onnxruntime "
        "(MODEL_DIR/model.onnx, written by `polytask export`; needs polytask[serve]) "
        "(default: torch)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a saved model's network as ONNX (docs/serving.md)")
    p.add_argument("model_dir", metavar="MODEL", help="a saved model folder (e.g. runs/x/model)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="only onnx so far (default)")
    p.add_argument("-o", "--output", help="the file to write (default: MODEL_DIR/model.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve",
        help="answer predictions over HTTP: POST /predict, GET /health, GET /metadata "
        "(needs polytask[serve]; docs/serving.md)",
    )
    p.add_argument("model_dir", metavar="MODEL", help="a saved model folder (e.g. runs/x/model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    _add_backend(p, "torch, or the ONNX graph MODEL_DIR/model.onnx in onnxruntime (default: torch)")
    p.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    p.add_argument(
        "--max-rows",
        type=int,
        default=1000,
        help="largest request, in rows; more is refused with 413 (default: 1000)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of torch/onnxruntime per worker (default: 1; requests are small, "
        "parallelism comes from concurrent requests and workers)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default: info)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "compare", help="models over several seeds vs single-task baselines (negative transfer)"
    )
    p.add_argument("run_file", help="YAML run file (its data, features, tasks and training)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["single_task", "shared_bottom", "mmoe", "cgc"],
        help="models to train: single_task (one model per task) and model names "
        "(default: single_task shared_bottom mmoe cgc)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    p.add_argument("--out", help="output folder (default runs/<run file name>_compare)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("plot", help="PNGs of a training run: curves, weights, gates, calibration")
    p.add_argument("run_dir", help="the folder given to 'polytask train --out'")
    p.add_argument("--out", help="where the PNGs go (default RUN_DIR/plots)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("tune", help="search run-file settings with Optuna (extra 'tune')")
    p.add_argument("run_file", help="YAML run file")
    p.add_argument("--space", required=True, help="YAML search space of run-file keys")
    p.add_argument("--trials", type=int, default=20, help="number of trials (default 20)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--objective", help="validation monitor to optimise (default: training.monitor)"
    )
    group.add_argument(
        "--objectives",
        nargs="+",
        help="several validation monitors: a Pareto front (default: one objective)",
    )
    p.add_argument("--out", help="output folder (default runs/<run file name>_tune)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "calibrate",
        help="fit calibrators of binary tasks on a labelled table (default: validation split)",
        description="Fit the calibration of the model's binary tasks (isotonic, platt or "
        "temperature) on a labelled table, by default the validation split of the run that "
        "trained the model, and save it in the model folder; predict and evaluate then serve "
        "calibrated probabilities (predict keeps the raw ones as <task>.raw).",
    )
    p.add_argument("model_dir", help="model folder")
    _add_table_source(p, "calibrate on")
    p.add_argument(
        "--method",
        action="append",
        metavar="TASK=METHOD",
        help="a task and its method, isotonic, platt or temperature; repeat for several "
        "tasks (default: the model's calibration setting)",
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "decide",
        help="choose the fused ranking score's weights on the trade-off between KPIs",
        description="Search the weights of the fused ranking score on a labelled table (by "
        "default the run's validation split): each candidate ranks every group's rows, every "
        "task's grouped metrics under that ranking are its KPIs, and the best --maximize among "
        "the candidates meeting every --subject-to is saved as the model's decision.score. "
        "Writes MODEL_DIR/decision/front.csv and front.png. KPIs are <task>.gauc, "
        "<task>.ndcg@K, <task>.recall@K (binary) and <task>.ndcg@K (regression, count).",
    )
    p.add_argument("model_dir", help="model folder")
    _add_table_source(p, "decide on")
    p.add_argument("--maximize", required=True, metavar="KPI", help="e.g. click.gauc")
    p.add_argument(
        "--subject-to",
        action="append",
        default=[],
        metavar="CONSTRAINT",
        help="'<task>.<metric> >= VALUE' or '>= PERCENT%%' of the KPI that the task's own "
        "ranking reaches; repeat for several (default: none)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=200,
        help="random candidates besides each task alone and the uniform point (default: 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default: 0)")
    p.add_argument(
        "--form",
        choices=["product", "sum"],
        help="product or sum of the task scores (default: the model's, else product)",
    )
    p.add_argument(
        "--group", help="the group column (default: the model's decision.group / data.group)"
    )
    p.set_defaults(func=cmd_decide)

    p = sub.add_parser(
        "demo",
        help="shared-bottom vs MMoE on built-in synthetic data",
        description="Shared-bottom vs MMoE on the MMoE paper's synthetic data (two regression "
        "tasks of a chosen correlation); prints each model's test RMSE.",
    )
    p.add_argument("--rows", type=int, default=15_000, help="rows generated (default: 15000)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per model (default: 8)")
    p.add_argument(
        "--correlation",
        type=float,
        default=0.5,
        help="correlation of the two tasks, in [-1, 1] (default: 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="data, split and training seed (default: 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after --out: collect every leftover that is not an option
    # (apply_overrides says "needs key=value" of one without '=').
    args, extra = parser.parse_known_args(argv)
    for key in ("models", "objectives"):  # compare's --models, tune's --objectives NAME ...
        if names := getattr(args, key, None):  # swallow the overrides after them
            extra += [m for m in names if "=" in m]
            setattr(args, key, [m for m in names if "=" not in m])
    if extra:
        if args.command not in ("train", "compare", "tune") or any(
            x.startswith("-") for x in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except PolytaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: one line, no traceback
        print(_interrupted(err, args), file=sys.stderr)
        return 130
    except OSError as err:  # a path that cannot be read or written: one line, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


def _interrupted(err: KeyboardInterrupt, args: argparse.Namespace) -> str:
    """The one line a Ctrl-C leaves: what was kept and how to go on."""
    from polytask.errors import TrainingInterrupted

    if not isinstance(err, TrainingInterrupted):
        return "interrupted; nothing was saved"
    line = f"interrupted at epoch {err.epoch}, step {err.step}: "
    if err.saved is not None:
        kept = f"best epoch {err.best_epoch}" if err.best_epoch else "last weights"
        line += f"saved the model so far ({kept}) to {err.saved}"
    else:
        line += "the model was not saved"
    if err.checkpoint is not None:
        run = [getattr(args, "run_file", "RUN"), *getattr(args, "overrides", [])]
        again = " ".join(["polytask", "train", *run, "--resume"])
        if getattr(args, "out", None):
            again += f" --out {args.out}"
        return f"{line}; checkpoint {err.checkpoint}: continue with `{again}`"
    return f"{line}; no checkpoint to resume from (set training.checkpoint_every)"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
