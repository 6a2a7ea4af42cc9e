"""``polytask train | evaluate | predict | demo``.

Errors a user can fix print one ``error: ...`` line (or one per problem for a config) and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from polytask._version import __version__
from polytask.data.chunks import CHUNK_ROWS
from polytask.errors import PolytaskError


def _console(quiet: bool = False) -> Console:
    # Wide enough for a gate table of 8+ experts when output is not a terminal.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140, quiet=quiet)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def metrics_table(title: str, metrics: Mapping[str, Mapping[str, float]]) -> Table:
    table = Table(title=title)
    table.add_column("task")
    cols: list[str] = []
    for m in metrics.values():
        cols += [k for k in m if k not in cols and k != "count"]
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("rows", justify="right")
    for task, m in metrics.items():
        table.add_row(task, *[_fmt(m.get(c, "")) for c in cols], str(int(m.get("count", 0))))
    return table


def gates_table(gates: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="mean gate weight per expert (entropy in nats; log E = uniform)")
    table.add_column("gate")
    n = max(len(g["mean_weight"]) for g in gates.values())
    for e in range(n):
        table.add_column(f"e{e}", justify="right")
    table.add_column("entropy", justify="right")
    for name, g in gates.items():
        table.add_row(name, *[f"{w:.3f}" for w in g["mean_weight"]], f"{g['entropy']:.3f}")
    return table


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from polytask.config import load_run_file
    from polytask.run import run_training
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
    with warnings.catch_warnings(), printed_to_stdout():
        warnings.showwarning = _show_warning
        metrics = run_training(cfg, base, out, resume=args.resume)
    if not main_process:
        return 0
    if "validation" in metrics:
        console.print(metrics_table("validation", metrics["validation"]))
    if "test" in metrics:
        console.print(metrics_table("test", metrics["test"]))
    if "gates" in metrics:
        console.print(gates_table(metrics["gates"]))
    if metrics.get("skipped_batches"):
        console.print(
            f"skipped {metrics['skipped_batches']} batch(es) with a non-finite loss "
            "(training.on_nan: skip)"
        )
    console.print(
        f"train samples/s {metrics['train_samples_per_s']:,.0f}; best epoch "
        f"{metrics['best_epoch']}; wrote {out / 'model'} and {out / 'metrics.json'}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from polytask.estimator import MultiTaskModel

    model = MultiTaskModel.load(args.model_dir)
    metrics = model.evaluate(args.data)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _console().print(metrics_table(f"{args.data}", metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from polytask.data import write_table
    from polytask.data.chunks import is_parquet
    from polytask.estimator import MultiTaskModel

    model = MultiTaskModel.load(args.model_dir)
    if args.chunk_rows is not None or is_parquet(args.data):
        chunk_rows = CHUNK_ROWS if args.chunk_rows is None else args.chunk_rows
        rows = model.predict_to(args.data, args.output, chunk_rows=chunk_rows)
        print(f"wrote {rows} rows to {args.output} (streamed, {chunk_rows} rows at a time)")
        return 0
    predictions = model.predict(args.data)
    write_table(predictions, args.output)
    print(f"wrote {len(predictions)} rows x {predictions.shape[1]} columns to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Shared-bottom vs MMoE on the MMoE paper's synthetic data with weakly related tasks."""
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
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        result = compare(cfg, base, args.models, seeds=args.seeds, log=console.print)
        written = write_outputs(result, out, title=str(args.run_file))
    console.print((out / "compare.md").read_text(encoding="utf-8").split("\n## ")[0].rstrip())
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    if result.failures:
        console.print(f"{len(result.failures)} run(s) failed; see {out / 'compare.md'}")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polytask", description="Multi-task learning for tabular data."
    )
    parser.add_argument("--version", action="version", version=f"polytask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train from a run file, evaluate on its test split")
    p.add_argument("run_file", help="YAML run file")
    p.add_argument("--out", help="output folder (default runs/<run file name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in OUT/checkpoints",
    )
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the run file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a saved model on a labelled table")
    p.add_argument("model_dir")
    p.add_argument("data", help="CSV or Parquet file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predictions of a saved model for a table")
    p.add_argument("model_dir")
    p.add_argument("data", help="CSV or Parquet file")
    p.add_argument("-o", "--output", required=True, help="OUT.csv or OUT.parquet")
    p.add_argument(
        "--chunk-rows",
        type=int,
        help="stream the file this many rows at a time, so memory stays flat in the number "
        f"of rows (Parquet input streams by default, {CHUNK_ROWS} rows at a time)",
    )
    p.set_defaults(func=cmd_predict)

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
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the run file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="shared-bottom vs MMoE on built-in synthetic data")
    p.add_argument("--rows", type=int, default=15_000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--correlation", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before or after --out: collect every leftover key=value.
    args, extra = parser.parse_known_args(argv)
    if args.command == "compare":  # --models NAME ... swallows the overrides after it
        extra += [m for m in args.models if "=" in m]
        args.models = [m for m in args.models if "=" not in m]
    if extra:
        if args.command not in ("train", "compare") or not all(
            "=" in x and not x.startswith("-") for x in extra
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args))
    except PolytaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
