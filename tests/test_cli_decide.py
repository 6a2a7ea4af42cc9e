"""`polytask calibrate` and `polytask decide` end to end on the funnel example's run file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from polytask.cli import main
from polytask.ranking import grouped_metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_calibrate_decide_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "make_funnel_tables.py"),
            "--out",
            str(data),
            "--rows",
            "20000",
        ],
        check=True,
        capture_output=True,
    )
    run = yaml.safe_load((REPO / "examples" / "funnel_decision.yaml").read_text())
    for split in ("train", "validation", "test"):
        run["data"][split] = str(data / f"{split}.csv")
    run["training"].update(epochs=3, batch_size=256)
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(run))
    out = tmp_path / "run"
    assert main(["train", str(run_file), "--out", str(out)]) == 0
    model_dir = out / "model"
    assert main(["calibrate", str(model_dir), "--method", "click=platt"]) == 0
    assert "expected calibration error" in capsys.readouterr().out
    assert (
        main(
            [
                "decide",
                str(model_dir),
                "--maximize",
                "purchase.gauc",
                "--subject-to",
                "click.gauc >= 97%",
                "--trials",
                "40",
            ]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert "candidates on the front" in said
    front = pd.read_csv(model_dir / "decision" / "front.csv")
    assert front["pareto"].sum() >= 3
    assert (model_dir / "decision" / "front.png").stat().st_size > 10_000
    chosen = front[front["chosen"]].iloc[0]
    pred_file = tmp_path / "pred.csv"
    assert main(["predict", str(model_dir), "--split", "validation", "-o", str(pred_file)]) == 0
    pred = pd.read_csv(pred_file)
    valid = pd.read_csv(data / "validation.csv")
    k = run["decision"]["k"]
    for task, label in (("click", "click"), ("purchase", "conversion")):
        found = grouped_metrics("binary", valid["request"], pred["score"], valid[label], k)
        for m in ("gauc", f"ndcg@{k}", f"recall@{k}"):
            # the CSV rounds to 15-17 significant digits; predict's score went through a CSV too
            assert found[m] == pytest.approx(chosen[f"{task}.{m}"], abs=1e-9), (task, m)
    assert np.isfinite(pred["score"]).all()
    # a constraint no candidate meets names itself and the best value found
    code = main(
        [
            "decide",
            str(model_dir),
            "--maximize",
            "purchase.gauc",
            "--subject-to",
            "click.gauc >= 2",
            "--trials",
            "3",
        ]
    )
    assert code == 2
    assert "no candidate satisfies click.gauc >= 2" in capsys.readouterr().err
