"""`polytask plot` (the PNGs decode and are not blank) and `polytask tune` (space checks,
single and multi-objective studies, a best run file that trains)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pandas as pd
import pytest
import yaml

from polytask.cli import main
from polytask.errors import ConfigError
from polytask.tune import load_space


@pytest.fixture
def run_file(tmp_path: Path, toy_frame: pd.DataFrame) -> Path:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
        "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        "model": {"name": "mmoe", "num_experts": 3, "expert_units": [8], "tower_units": [4]},
        "loss": "uncertainty",
        "training": {"epochs": 3, "batch_size": 256, "monitor": "mean.auc"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _non_trivial(path: Path, min_height: int = 150, min_width: int = 200) -> None:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_height and image.shape[1] >= min_width
    assert float(image[..., :3].std()) > 0.05, f"{path.name} is (nearly) blank"


def test_plot_writes_every_picture(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out)]) == 0
    assert main(["plot", str(out)]) == 0
    names = {p.name for p in (out / "plots").iterdir()}
    assert names == {
        "curves.png",
        "weights.png",  # uncertainty weighting: sigmas
        "gates.png",
        "gate_entropy.png",  # measured by the default csv logger's tracker
        "calibration.png",  # click is binary
    }
    for name in names:
        _non_trivial(out / "plots" / name)


def test_plot_of_a_folder_that_is_no_run(tmp_path: Path, capsys: Any) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "is not a polytask train output folder" in capsys.readouterr().err


def test_plot_without_matplotlib_names_the_extra(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    out = tmp_path / "out"
    assert main(["train", str(run_file), "--out", str(out), "training.epochs=1"]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(out)]) == 2
    assert "pip install 'polytask[plot]'" in capsys.readouterr().err


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer.lrr: {low: 0.001, high: 0.01}", "did you mean 'lr'"),
        ("model.num_expert: {low: 2, high: 4}", "did you mean 'num_experts'"),
        ("optimizer.lr: {lowe: 0.001, high: 0.01}", "did you mean 'low'"),
        ("optimizer.lr: {low: 0.1, high: 0.01}", "low 0.1 is above high 0.01"),
        ("optimizer.lr: {low: 0.0, high: 0.01, log: true}", "log: true needs low > 0"),
        ("optimizer.lr: {high: 0.01}", "needs both low and high"),
        ("optimizer.lr: 0.01", "expected {low: ..., high: ...} or {choices: [...]}"),
        ("optimizer.name: {choices: [adam, lion]}", "optimizer.name"),
        ("training.batch_size: {low: 0, high: 8}", "training.batch_size = 0"),
        ("[1, 2]", "expected a mapping of run-file keys"),
    ],
)
def test_space_errors_name_the_key(tmp_path: Path, run_file: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="search space") as err:
        load_space(_space(tmp_path, text), run_file)
    assert message in str(err.value)


def test_space_kinds(tmp_path: Path, run_file: Path) -> None:
    space = load_space(
        _space(
            tmp_path,
            "optimizer.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
            "model.num_experts: {low: 2, high: 6, step: 2}\n"
            "model.gate_temperature: {low: 1, high: 2.5}\n"
            "training.batch_size: {choices: [128, 256]}\n",
        ),
        run_file,
    )
    assert not space["optimizer.lr"].integer and space["optimizer.lr"].log
    assert space["model.num_experts"].integer
    assert space["model.num_experts"].points() == [2, 6]
    assert not space["model.gate_temperature"].integer
    assert space["training.batch_size"].points() == [128, 256]


def test_tune_four_trials_writes_a_best_run_file_that_trains(
    tmp_path: Path, run_file: Path, capsys: Any
) -> None:
    space = _space(
        tmp_path,
        "optimizer.lr: {low: 1.0e-3, high: 3.0e-2, log: true}\n"
        "model.num_experts: {low: 2, high: 4}\n",
    )
    out = tmp_path / "tune"
    args = ["tune", str(run_file), "--space", str(space), "--trials", "4", "--out", str(out)]
    assert main([*args, "training.epochs=2"]) == 0
    with open(out / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 4
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: float(t["mean.auc"]))
    text = (out / "best.yaml").read_text()
    assert text.startswith(f"# polytask tune of {run_file}: trial {best['trial']}")
    cfg = yaml.safe_load(text)
    assert cfg["optimizer"]["lr"] == pytest.approx(float(best["optimizer.lr"]))
    assert cfg["model"]["num_experts"] == int(best["model.num_experts"])
    assert cfg["training"]["epochs"] == 2  # the override is kept
    # ready for polytask train, from any folder (data paths made absolute)
    trained = tmp_path / "best_run"
    assert main(["train", str(out / "best.yaml"), "--out", str(trained)]) == 0
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2


def test_tune_several_objectives_writes_the_pareto_front(tmp_path: Path, run_file: Path) -> None:
    space = _space(tmp_path, "optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}\n")
    out = tmp_path / "tune"
    args = ["tune", str(run_file), "--space", str(space), "--trials", "4", "--out", str(out)]
    code = main([*args, "--objectives", "click.auc", "dwell.rmse", "training.epochs=1"])
    assert code == 0
    with open(out / "trials.csv", newline="") as f:
        trials = [t for t in csv.DictReader(f) if t["state"] == "COMPLETE"]
    with open(out / "pareto.csv", newline="") as f:
        front = list(csv.DictReader(f))
    assert front
    points = [(float(t["click.auc"]), float(t["dwell.rmse"])) for t in trials]
    for t in front:  # no trial dominates a front member (higher AUC, lower RMSE)
        auc, rmse = float(t["click.auc"]), float(t["dwell.rmse"])
        assert not any(a >= auc and r <= rmse and (a, r) != (auc, rmse) for a, r in points)
        assert (out / f"pareto_trial_{t['trial']}.yaml").is_file()
    _non_trivial(out / "pareto.png")


def test_tune_objective_errors(tmp_path: Path, run_file: Path, capsys: Any) -> None:
    space = _space(tmp_path, "optimizer.lr: {low: 1.0e-4, high: 3.0e-2}\n")
    args = ["tune", str(run_file), "--space", str(space), "--trials", "1"]
    assert main([*args, "--objective", "click.acu"]) == 2
    assert "did you mean 'click.auc'" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_on_census(tmp_path: Path, census_test_file: Path) -> None:
    """The issue's check: 4 trials on census write a best run file that trains."""
    run = Path(__file__).resolve().parents[1] / "examples" / "census_mmoe.yaml"
    space = Path(__file__).resolve().parents[1] / "examples" / "census_space.yaml"
    out = tmp_path / "tune"
    data = f"data.path={census_test_file}"
    code = main(["tune", str(run), "--space", str(space), "--trials", "4", "--out", str(out),
                 "training.epochs=1", data])  # fmt: skip
    assert code == 0
    assert main(["train", str(out / "best.yaml"), "--out", str(tmp_path / "best")]) == 0
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert metrics["test"]["income"]["auc"] > 0.85
