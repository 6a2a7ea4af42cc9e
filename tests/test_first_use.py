"""What a new user meets first: fast startup, help that says what each option does, messages
that name what was wrong (the override, the folder, the task), tables that fit a terminal,
and evaluate/predict on the run's own splits."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from rich.console import Console

from polytask.cli import build_parser, gates_table, main, metrics_table

HEAVY = ("torch", "pandas", "sklearn", "pydantic", "pyarrow", "rich", "numpy", "yaml")


def imported_after(code: str) -> list[str]:
    """The heavy modules that ``code`` left imported, in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_import_and_cli_parser_pull_in_no_heavy_module() -> None:
    assert imported_after("import polytask, polytask.cli; polytask.cli.build_parser()") == []


def test_version_and_help_import_no_heavy_module() -> None:
    for argv in (["--version"], ["--help"], ["train", "--help"], ["predict", "--help"]):
        code = (
            f"from polytask.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        )
        assert imported_after(code) == [], argv


def test_training_imports_no_solver_stack_unless_a_weighting_needs_it() -> None:
    # torchjd pulls in scipy, cvxpy and the QP solvers; AUC is computed without sklearn.
    code = "import polytask.run, polytask.cli\nimport sys\n" + (
        "print(sorted(m for m in ('torchjd', 'scipy', 'sklearn', 'cvxpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_lazy_names_are_still_there() -> None:
    import polytask
    from polytask.config import RunConfig
    from polytask.estimator import MultiTaskModel

    assert polytask.MultiTaskModel is MultiTaskModel
    assert polytask.RunConfig is RunConfig
    assert {"MultiTaskModel", "load_run_file"} <= set(dir(polytask))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = polytask.nope  # type: ignore[attr-defined]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_help_describes_every_option_with_its_default(name: str) -> None:
    parser = subcommands()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest}: no help"
        if action.option_strings:  # options have defaults; required ones say so
            assert "default" in action.help or action.required, f"{name} {action.dest}"


def test_train_help_says_overrides_are_yaml_and_points_to_the_key_reference(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "VALUE is YAML" in text
    assert "'model={name: mmoe}'" in text
    assert "docs/config.md" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "docs/config.md" in capsys.readouterr().out


RUN = """\
features: {categorical: [color], numeric: [x]}
tasks: {click: {type: binary}, dwell: {type: regression}}
model: {name: shared_bottom, shared_units: [4], tower_units: [2]}
training: {epochs: 1, progress: false}
data: {path: table.csv, split: {train: 0.6, validation: 0.2, test: 0.2}}
"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run.yaml").write_text(RUN)
    frame = pd.DataFrame(
        {
            "color": ["a", "b", "c", "a", "b"] * 20,
            "x": [float(i % 7) for i in range(100)],
            "click": [0, 1] * 50,
            "dwell": [float(i % 5) for i in range(100)],
        }
    )
    frame.to_csv(tmp_path / "table.csv", index=False)
    return tmp_path


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.rstrip("\n").splitlines()


@pytest.mark.parametrize(
    "argv",
    [["training.epochs"], ["--out", "OUT", "training.epochs"], ["training.epochs", "--out", "OUT"]],
)
def test_an_override_without_equals_says_key_value(run_dir, capsys, argv) -> None:
    argv = [str(run_dir / "out") if a == "OUT" else a for a in argv]
    assert main(["train", str(run_dir / "run.yaml"), *argv]) == 2
    assert error_lines(capsys) == [
        "error: override 'training.epochs' needs key=value (e.g. training.epochs=3)"
    ]


def test_a_bad_override_value_names_the_override_not_the_run_file(run_dir, capsys) -> None:
    assert main(["train", str(run_dir / "run.yaml"), "training.epochs=abc"]) == 2
    header, line = error_lines(capsys)
    assert header == f"error: invalid override(s) of run file {str(run_dir / 'run.yaml')!r}:"
    assert line.startswith("override 'training.epochs=abc': training.epochs: Input should be")


def test_a_bad_model_parameter_override_names_the_override(run_dir, capsys) -> None:
    assert main(["train", str(run_dir / "run.yaml"), "model.shared_units=abc"]) == 2
    _, line = error_lines(capsys)
    assert line.startswith("override 'model.shared_units=abc': model: model 'shared_bottom'")


def test_a_run_file_problem_is_not_blamed_on_a_good_override(run_dir, capsys) -> None:
    (run_dir / "run.yaml").write_text(RUN.replace("epochs: 1", "epochs: zero"))
    assert main(["train", str(run_dir / "run.yaml"), "training.seed=3"]) == 2
    header, line = error_lines(capsys)
    assert header == f"error: invalid run file {str(run_dir / 'run.yaml')!r}:"
    assert line.startswith("training.epochs: Input should be a valid integer")


def test_a_data_override_relative_to_the_current_folder_is_found(
    run_dir, tmp_path_factory, monkeypatch, capsys
) -> None:
    here = tmp_path_factory.mktemp("cwd")
    pd.read_csv(run_dir / "table.csv").to_csv(here / "mine.csv", index=False)
    monkeypatch.chdir(here)
    out = here / "out"
    assert main(["train", str(run_dir / "run.yaml"), "--out", str(out), "data.path=mine.csv"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["path"] == str(here.resolve() / "mine.csv")


def test_a_relative_data_path_found_in_neither_folder_names_the_folder_used(
    run_dir, tmp_path_factory, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    assert main(["train", str(run_dir / "run.yaml"), "data.path=nope.csv"]) == 2
    (line,) = error_lines(capsys)
    folder = str(run_dir.resolve())
    assert line == (
        "error: data.path: file 'nope.csv' not found: relative paths are resolved against the "
        f"run file's folder {folder!r}, and {str(Path(folder) / 'nope.csv')!r} does not exist"
    )


def render(tables, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for table in tables:
        console.print(table)
    return console.export_text()


@pytest.mark.parametrize("experts", [2, 8, 16, 24])
def test_gate_tables_fit_80_columns_and_keep_every_number(experts: int) -> None:
    gates = {
        f"task_{t}": {
            "mean_weight": [0.123456 + e / 1000 for e in range(experts)],
            "entropy": 2.0794415,
        }
        for t in range(3)
    }
    text = render(gates_table(gates, 80), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for e in range(experts):
        assert re.search(rf"\be{e}\b", text), e
        assert f"{0.123456 + e / 1000:.3f}" in text
    assert "…" not in text and "2.079" in text


def test_the_census_gate_table_is_one_table_in_80_columns() -> None:
    # MMoE with 8 experts and 2 tasks: 85 columns one row per gate, so one row per expert.
    gates = {t: {"mean_weight": [0.125] * 8, "entropy": 2.0794} for t in ("income", "marital")}
    _, *tables = gates_table(gates, 80)
    assert len(tables) == 1
    text = render(tables, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "2.079" in text and "e7" in text and "income" in text


def test_metrics_tables_fit_80_columns_and_keep_every_number() -> None:
    m = {"auc": 0.912345, "logloss": 0.312345, "loss": 0.312345, "count": 12345.0}
    r = {"rmse": 1.234567, "mae": 0.987654, "loss": 1.5241, "count": 12345.0}
    c = {"accuracy": 0.876543, "logloss": 0.45678, "loss": 0.45678, "count": 12345.0}
    metrics = {"a_long_task_name": m, "regression_task": r, "multiclass_task": c}
    text = render(metrics_table("/some/long/path/to/a/table.parquet", metrics, 60), 60)
    assert max(len(line) for line in text.splitlines()) <= 60
    for value in ("0.9123", "0.3123", "1.2346", "0.9877", "0.8765", "0.4568", "12345"):
        assert value in text
    assert "…" not in text


@pytest.fixture
def trained(run_dir: Path) -> Path:
    out = run_dir / "runs" / "r"
    assert main(["train", str(run_dir / "run.yaml"), "--out", str(out)]) == 0
    return out


def test_config_yaml_names_the_data_by_absolute_paths(trained: Path, run_dir: Path) -> None:
    saved = yaml.safe_load((trained / "config.yaml").read_text())
    assert saved["data"]["path"] == str((run_dir / "table.csv").resolve())


def test_evaluate_and_predict_read_the_runs_own_split(trained, run_dir, capsys) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    capsys.readouterr()
    # The run folder defaults to the model folder's parent.
    assert main(["evaluate", str(trained / "model"), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["test"]
    argv = ["evaluate", str(trained / "model"), "--split", "validation", "--run", str(trained)]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == metrics["validation"]
    target = run_dir / "pred.csv"
    assert main(["predict", str(trained / "model"), "--split", "test", "-o", str(target)]) == 0
    assert len(pd.read_csv(target)) == metrics["rows"]["test"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "error: give a DATA file, or --split train|validation|test"),
        (["table.csv", "--split", "test"], "error: give a DATA file or --split, not both"),
        (["--split", "test", "--run", "."], "error: run folder '.' has no config.yaml"),
    ],
)
def test_evaluate_needs_one_table(trained, run_dir, capsys, monkeypatch, extra, message) -> None:
    monkeypatch.chdir(run_dir)
    capsys.readouterr()
    assert main(["evaluate", str(trained / "model"), *extra]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(message)


def test_evaluate_warns_of_a_missing_label_column_naming_the_task(trained, run_dir, capsys):
    pd.read_csv(run_dir / "table.csv").drop(columns="dwell").to_csv(run_dir / "t.csv")
    capsys.readouterr()
    assert main(["evaluate", str(trained / "model"), str(run_dir / "t.csv")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "warning: evaluation data: task 'dwell' has no metrics: its label column 'dwell' is "
        "not in the table"
    ]
    assert "click" in captured.out and "dwell" not in captured.out  # no blank row
    pd.read_csv(run_dir / "table.csv").drop(columns=["dwell", "click"]).to_csv(run_dir / "t.csv")
    assert main(["evaluate", str(trained / "model"), str(run_dir / "t.csv")]) == 2
    assert "no task has its label column" in capsys.readouterr().err
