"""A run's output folder: checked before training, never clobbered, never mixed.

`polytask train RUN --out DIR` refuses a non-empty DIR unless --overwrite is given, and even
then replaces only what polytask wrote; the output path is checked (created, probed) before
any training; a model that cannot be saved where asked is kept elsewhere and its path
printed; model, config.yaml and metrics.json carry one run id; leftovers of killed writes
go at the next write."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pandas as pd
import pytest

import polytask.run
from polytask import MultiTaskModel, modelfile
from polytask.cli import main

RUN = """\
features: {categorical: [color], numeric: [x]}
tasks: {click: {type: binary}}
model: {name: shared_bottom, shared_units: [4], tower_units: [2]}
training: {epochs: 1, progress: false}
data: {train: train.csv}
"""


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run.yaml").write_text(RUN)
    frame = pd.DataFrame(
        {"color": ["a", "b", "c", "a"] * 5, "x": [1.0, 2, 3, 4] * 5, "click": [0, 1, 0, 1] * 5}
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def train(run_dir: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["train", str(run_dir / "run.yaml"), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: the checks under test come before it."""

    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(MultiTaskModel, "fit", fit)


def test_a_folder_holding_a_foreign_file_is_refused_and_left_intact(run_dir, capsys):
    out = run_dir / "out"
    (out / "model" / "src").mkdir(parents=True)
    (out / "model" / "src" / "notes.txt").write_text("mine")
    code, err = train(run_dir, out, capsys)
    assert code == 2
    line = error_line(err)
    assert f"output folder {str(out)!r} is not empty (it holds model)" in line
    assert "--overwrite" in line
    assert (out / "model" / "src" / "notes.txt").read_text() == "mine"
    # --overwrite does not make polytask delete a folder it did not write
    code, err = train(run_dir, out, capsys, "--overwrite")
    assert code == 2
    assert "['model'] were not written by polytask" in error_line(err)
    assert (out / "model" / "src" / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_only_what_polytask_wrote(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    first = json.loads((out / "metrics.json").read_text())["run_id"]
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    code, err = train(run_dir, out, capsys)
    assert code == 2 and "is not empty" in error_line(err)
    assert json.loads((out / "metrics.json").read_text())["run_id"] == first  # untouched
    assert train(run_dir, out, capsys, "--overwrite")[0] == 0
    second = json.loads((out / "metrics.json").read_text())["run_id"]
    assert second != first
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine").is_dir()
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "history.csv",  # training.loggers' default
        "metrics.json",
        "mine",
        "model",
        "notes.txt",
    ]
    # the three outputs carry the same run id
    assert MultiTaskModel.load(out / "model").run_id_ == second
    assert (out / "config.yaml").read_text().startswith(f"# polytask run {second}\n")


def test_overwrite_refuses_a_foreign_file_inside_the_model_folder(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    (out / "model" / "notes.txt").write_text("mine")
    code, err = train(run_dir, out, capsys, "--overwrite")
    assert code == 2
    assert "also holds ['notes.txt']" in error_line(err)
    assert (out / "model" / "notes.txt").read_text() == "mine"


def test_a_users_config_yaml_is_not_replaced(run_dir, capsys):
    out = run_dir / "out"
    out.mkdir()
    (out / "config.yaml").write_text("my: settings\n")
    code, err = train(run_dir, out, capsys, "--overwrite")
    assert code == 2
    assert "['config.yaml'] were not written by polytask" in error_line(err)
    assert (out / "config.yaml").read_text() == "my: settings\n"


def test_overwrite_removes_the_previous_runs_checkpoints(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys, "training.checkpoint_every=1")[0] == 0
    assert any((out / "checkpoints").iterdir())
    assert train(run_dir, out, capsys, "--overwrite")[0] == 0
    assert not (out / "checkpoints").exists()  # a later --resume cannot continue the old run


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a-file", "is a file, not a folder; choose another --out"),
        ("x" * 300, "File name too long"),
        ("/sys/kernel", "cannot write in output folder '/sys/kernel': "),
        ("/sys/polytask-run", "cannot create output folder '/sys/polytask-run': "),
    ],
)
def test_the_output_path_is_checked_before_training(run_dir, capsys, no_training, where, reason):
    (run_dir / "a-file").write_text("mine")
    out = run_dir / where if not where.startswith("/") else Path(where)
    code, err = train(run_dir, out, capsys)
    assert code == 2
    assert reason in error_line(err)
    assert (run_dir / "a-file").read_text() == "mine"


def test_the_root_folder_is_refused_before_training(run_dir, capsys, no_training):
    code, err = train(run_dir, Path("/"), capsys)
    assert code == 2
    line = error_line(err)  # not empty (as root) or not writable (as anyone else)
    assert "output folder '/'" in line


def test_a_failed_run_leaves_no_empty_folder(run_dir, capsys):
    (run_dir / "train.csv").write_text("color,x\n")  # no label column
    out = run_dir / "out"
    code, _ = train(run_dir, out, capsys)
    assert code == 2
    assert not out.exists()


def test_a_model_that_cannot_be_saved_is_kept_elsewhere(run_dir, capsys, monkeypatch):
    out = run_dir / "out"
    write = modelfile.write_folder

    def disk_full(target, files, meta):
        if target == out / "model":
            raise OSError(28, "No space left on device")
        return write(target, files, meta)

    monkeypatch.setattr(modelfile, "write_folder", disk_full)
    code, err = train(run_dir, out, capsys)
    assert code == 2
    line = error_line(err)
    assert line.startswith(
        f"error: cannot save the model to {str(out / 'model')!r}: No space left on device; "
        "the trained model was saved to "
    )
    rescued = Path(line.rsplit(" was saved to ", 1)[1].removesuffix(" instead")[1:-1])
    assert rescued.parent == run_dir and rescued.name.startswith("out-model-")
    assert MultiTaskModel.load(rescued).predict(pd.read_csv(run_dir / "train.csv")).shape == (20, 1)


def test_a_kill_between_the_writes_never_mixes_two_runs(run_dir, capsys, monkeypatch):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the model, before config/metrics

    monkeypatch.setattr(polytask.run, "atomic_write_text", killed)
    assert main(["train", str(run_dir / "run.yaml"), "--out", str(out), "--overwrite"]) == 130
    # the new run's model and epoch log; no other run's config.yaml or metrics.json
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "model"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no MixedRunWarning: nothing of another run is left
        MultiTaskModel.load(out / "model")


def test_loading_a_model_beside_another_runs_metrics_warns(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model_run = metrics["run_id"]
    metrics["run_id"] = other = uuid.uuid4().hex
    (out / "metrics.json").write_text(json.dumps(metrics))
    with pytest.warns(modelfile.MixedRunWarning) as record:
        MultiTaskModel.load(out / "model")
    assert str(record[0].message) == (
        f"{out / 'metrics.json'} belongs to another run (run id {other}) than the model in "
        f"{out / 'model'} (run id {model_run}): the run that wrote this model did not finish "
        "writing its results"
    )
    code = main(["evaluate", str(out / "model"), str(run_dir / "train.csv")])
    assert code == 0
    assert "warning: " in capsys.readouterr().err


def test_leftovers_of_killed_writes_go_at_the_next_write(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    leftovers = [
        out / ".model.k3j_x9q2.tmp",
        out / f".model.old.{uuid.uuid4().hex}.del",
        out / ".metrics.json.ab12cd34.tmp",
    ]
    for path in leftovers[:2]:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "weights.safetensors").write_bytes(b"x" * 100)
    leftovers[2].write_text("{")
    (out / ".model.notmine").mkdir()  # not a name polytask's writes leave
    assert train(run_dir, out, capsys, "--overwrite")[0] == 0
    assert not any(p.exists() for p in leftovers)
    assert (out / ".model.notmine").is_dir()


def test_api_save_cleans_its_own_leftovers(run_dir, capsys, tmp_path):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    model = MultiTaskModel.load(out / "model")
    stale = tmp_path / ".m.abcdefgh.tmp"
    stale.mkdir()
    model.save(tmp_path / "m")
    assert not stale.exists()


def test_predict_to_an_unwritable_place_is_one_line(run_dir, capsys):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0
    for output in ("/sys/kernel/pred.csv", "/sys/kernel/pred.parquet"):
        code = main(["predict", str(out / "model"), str(run_dir / "train.csv"), "-o", output])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        line = error_line(err)
        assert "/sys/kernel" in line


def test_predict_streams_a_csv_by_default(run_dir, capsys, monkeypatch):
    out = run_dir / "out"
    assert train(run_dir, out, capsys)[0] == 0

    def whole(*args, **kwargs):
        raise AssertionError("the file was read whole")

    monkeypatch.setattr(MultiTaskModel, "predict", whole)
    argv = ["predict", str(out / "model"), str(run_dir / "train.csv"), "-o", str(run_dir / "p.csv")]
    assert main(argv) == 0
    assert "(streamed, 65536 rows at a time)" in capsys.readouterr().out
    assert len(pd.read_csv(run_dir / "p.csv")) == 20
