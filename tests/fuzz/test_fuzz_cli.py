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
def model_dir(tmp_path_factory) -> Path:
    frame = pd.DataFrame(
        {
            "c1": ["a", "b", "😀", None, 3, 3.0] * 4,
            "c2": [True, False, None, "x", "", "\u202eRTL"] * 4,
            "n1": [0.5, None, -1.0, 2.0, float("inf"), 3.0] * 4,
            "n2": ["1", "2.5", "", "nan", "4", "-1e3"] * 4,
            "b": [0, 1, 1, 0, 1, 0] * 4,
            "r": [1.0, 2.0, None, 0.5, 3.0, 1.5] * 4,
            "m": ["x", "y", "z", "x", "y", None] * 4,
        }
    )
    tasks = {"b": {"type": "binary"}, "r": {"type": "regression"}, "m": {"type": "multiclass"}}
    model = MultiTaskModel(
        features=FEATURES,
        tasks=tasks,
        model={"name": "mmoe", "num_experts": 2, "expert_units": [4], "tower_units": [4]},
        training={"epochs": 1, "progress": False},
    ).fit(frame)
    return model.save(tmp_path_factory.mktemp("cli") / "model")


rows = st.one_of(prediction_tables(), wild_tables().map(lambda case: case.frame))


@settings(max_examples=BUDGET)
@given(rows, st.booleans())
def test_predict_on_a_generated_csv(model_dir: Path, frame: pd.DataFrame, index: bool):
    with tempfile.TemporaryDirectory() as tmp:
        data, output = Path(tmp) / "rows.csv", Path(tmp) / "predictions.csv"
        frame.to_csv(data, index=index)
        code, _ = run(["predict", str(model_dir), str(data), "-o", str(output)])
        if code == 0:
            predictions = pd.read_csv(output, keep_default_na=False)
            assert len(predictions) == len(pd.read_csv(data))
            assert predictions["b"].between(0, 1).all()
            assert set(predictions["m"]) <= {"x", "y", "z"}
        else:
            assert not output.exists()


@settings(max_examples=max(3, BUDGET // 2))
@given(st.one_of(valid_tables(), wild_tables()), st.sampled_from(["mmoe", "shared_bottom"]))
def test_train_on_a_generated_run_file(case: Case, name: str):
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
        code, _ = run(["train", str(folder / "run.yaml"), "--out", str(folder / "out")])
        if code == 0:
            assert MultiTaskModel.load(folder / "out" / "model").config.tasks.keys() == tasks.keys()
