"""Fuzzed tables through the CLI: ``polytask predict`` on a CSV written from a generated
table, and ``polytask train`` on a tiny generated run file. Each run exits 0 with its output
written, or 2 with one ``error:`` block on stderr; never a traceback."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fuzz_tables import FEATURES, Case, prediction_tables, valid_tables, wild_tables
from hypothesis import event, given, settings
from hypothesis import strategies as st

from polytask import MultiTaskModel
from polytask.cli import main

BUDGET = max(5, settings.default.max_examples // 4)


def run(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``polytask argv``; a traceback means a bug."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    stderr = err.getvalue()
    event(f"polytask {argv[0]}: exit {code}")
    assert "Traceback" not in stderr
    if code != 0:
        assert code == 2
        assert stderr.startswith("error: ") and stderr.count("error:") == 1
    return code, stderr


@pytest.fixture(scope="module")
def model_dir(fuzz_model: MultiTaskModel, tmp_path_factory) -> Path:
    return fuzz_model.save(tmp_path_factory.mktemp("cli") / "model")


# (table, valid): prediction tables must be predicted; a broken (wild) table may be refused,
# or may have become valid on its way through CSV text.
rows = st.one_of(
    prediction_tables().map(lambda frame: (frame, True)),
    wild_tables().map(lambda case: (case.frame, False)),
)


@settings(max_examples=BUDGET)
@given(rows, st.booleans())
def test_predict_on_a_generated_csv(model_dir: Path, table: tuple[pd.DataFrame, bool], index: bool):
    frame, valid = table
    with tempfile.TemporaryDirectory() as tmp:
        data, output = Path(tmp) / "rows.csv", Path(tmp) / "predictions.csv"
        frame.to_csv(data, index=index)
        code, stderr = run(["predict", str(model_dir), str(data), "-o", str(output)])
        assert code == 0 or not valid, stderr
        if code == 0:
            predictions = pd.read_csv(output, keep_default_na=False)
            assert len(predictions) == len(pd.read_csv(data))
            assert predictions["b"].between(0, 1).all()
            assert set(predictions["m"]) <= {"x", "y", "z"}
        else:
            assert not output.exists()


@settings(max_examples=max(3, BUDGET // 2))
@given(
    st.one_of(
        valid_tables().map(lambda case: (case, True)),
        wild_tables().map(lambda case: (case, False)),
    ),
    st.sampled_from(["mmoe", "shared_bottom"]),
)
def test_train_on_a_generated_run_file(drawn: tuple[Case, bool], name: str):
    case, valid = drawn
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        case.frame.to_csv(folder / "train.csv", index=False)
        tasks = case.tasks or {"b": {"type": "binary"}}
        units = {"shared_units": [4]} if name == "shared_bottom" else {"num_experts": 2}
        run_file = {
            "features": FEATURES,
            "tasks": tasks,
            "model": {"name": name, "tower_units": [4], **units},
            "training": {"epochs": 1, "progress": False},
            "data": {"train": "train.csv"},
        }
        (folder / "run.yaml").write_text(yaml.safe_dump(run_file, allow_unicode=True))
        code, stderr = run(["train", str(folder / "run.yaml"), "--out", str(folder / "out")])
        assert code == 0 or not valid, stderr
        if code == 0:
            assert MultiTaskModel.load(folder / "out" / "model").config.tasks.keys() == tasks.keys()
