"""The CLI turns every `PolytaskError` into one ``error:`` block on stderr and exit status 2,
without a traceback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from polytask.cli import main

RUN = """\
features: {categorical: [color], numeric: [x]}
tasks: {click: {type: binary}}
model: {name: shared_bottom, shared_units: [4], tower_units: [2]}
training: {epochs: 1, progress: false}
data: {train: train.csv}
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def error_block(err: str) -> list[str]:
    """The lines of the one ``error:`` block that stderr must hold."""
    lines = err.rstrip("\n").splitlines()
    assert lines and lines[0].startswith("error: ")
    assert sum(line.startswith("error:") for line in lines) == 1
    return lines


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run.yaml").write_text(RUN)
    frame = pd.DataFrame(
        {"color": ["a", "b", "c", "a"], "x": [1.0, 2, 3, 4], "click": [0, 1, 0, 1]}
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def test_missing_run_file(tmp_path, capsys):
    code, err = run(["train", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert error_block(err) == [f"error: run file {str(tmp_path / 'nope.yaml')!r} does not exist"]


def test_invalid_yaml(run_dir, capsys):
    (run_dir / "run.yaml").write_text("features: {categorical: [color\n")
    code, err = run(["train", str(run_dir / "run.yaml")], capsys)
    assert code == 2
    (line,) = error_block(err)
    assert "is not valid YAML: line 2, column 1" in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.epochs", "override 'training.epochs' needs key=value"),
        ("training.epochs=[", "override 'training.epochs=[': value '[' is not valid YAML"),
        ("training..epochs=1", "empty key segment"),
    ],
)
def test_bad_override(run_dir, capsys, override, expected):
    code, err = run(["train", str(run_dir / "run.yaml"), override], capsys)
    assert code == 2
    (line,) = error_block(err)
    assert expected in line


def test_config_problems_one_line_each(run_dir, capsys):
    argv = ["train", str(run_dir / "run.yaml"), "training.epcohs=2", "model.name=mmeo"]
    code, err = run(argv, capsys)
    assert code == 2
    header, *lines = error_block(err)
    assert header == f"error: invalid override(s) of run file {str(run_dir / 'run.yaml')!r}:"
    assert len(lines) == 2
    assert any("did you mean 'epochs'?" in x for x in lines)
    assert any("did you mean 'mmoe'?" in x for x in lines)


def test_missing_training_data(run_dir, capsys):
    argv = ["train", str(run_dir / "run.yaml"), "--out", str(run_dir / "out")]
    (run_dir / "train.csv").unlink()
    code, err = run(argv, capsys)
    assert code == 2
    assert error_block(err) == [
        "error: data.train: file 'train.csv' not found: relative paths are resolved against "
        f"the run file's folder {str(run_dir.resolve())!r}, and "
        f"{str(run_dir.resolve() / 'train.csv')!r} does not exist"
    ]


def test_train_then_predict_with_a_missing_column(run_dir, capsys):
    out = run_dir / "out"
    code, _ = run(["train", str(run_dir / "run.yaml"), "--out", str(out)], capsys)
    assert code == 0
    pd.DataFrame({"color": ["a"]}).to_csv(run_dir / "new.csv", index=False)
    argv = ["predict", str(out / "model"), str(run_dir / "new.csv"), "-o", str(run_dir / "p.csv")]
    code, err = run(argv, capsys)
    assert code == 2
    assert error_block(err) == [
        "error: prediction data: missing column(s) ['x'] required by the schema; the table has "
        "columns ['color']"
    ]
    assert not (run_dir / "p.csv").exists()


def test_predict_with_a_missing_model(tmp_path, capsys):
    argv = ["predict", str(tmp_path / "nomodel"), str(tmp_path / "t.csv"), "-o", "p.csv"]
    code, err = run(argv, capsys)
    assert code == 2
    (line,) = error_block(err)
    assert line.startswith(f"error: model folder {str(tmp_path / 'nomodel')!r} does not exist")


def test_evaluate_with_a_corrupt_model(tmp_path, capsys):
    (tmp_path / "polytask.json").write_text("{not json")
    code, err = run(["evaluate", str(tmp_path), str(tmp_path / "t.csv")], capsys)
    assert code == 2
    (line,) = error_block(err)
    assert line.startswith(f"error: {tmp_path / 'polytask.json'}: not valid JSON")


def test_usage_errors_are_argparses(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict"])
    assert exc.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err
