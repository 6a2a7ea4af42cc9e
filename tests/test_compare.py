"""`polytask compare`: negative transfer, the written table, failures, one encoded copy."""

from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pandas as pd
import pytest
import torch
import yaml

from polytask import MultiTaskModel
from polytask.cli import main
from polytask.compare import (
    SINGLE_TASK,
    Summary,
    markdown,
    model_spec,
    negative_transfer,
    run_configs,
    summarize,
)
from polytask.config import EstimatorConfig, ModelConfig, validate
from polytask.data import Preprocessor
from polytask.errors import ConfigError, TrainingError


def _rows(table: dict[tuple[str, str], list[float]], metric: str) -> list[dict[str, Any]]:
    return [
        {"model": m, "seed": i, "task": t, "metric": metric, "value": v}
        for (m, t), values in table.items()
        for i, v in enumerate(values)
    ]


def test_negative_transfer_is_flagged_beyond_the_seeds_spread() -> None:
    # AUC, higher is better. single-task: a 0.80 ± 0.01, b 0.70 ± 0.00 (sample std).
    rows = _rows(
        {
            (SINGLE_TASK, "a"): [0.79, 0.80, 0.81],
            (SINGLE_TASK, "b"): [0.70, 0.70, 0.70],
            # worse on a by 0.05 > spread 0.01 + 0.01: flagged; better on b
            ("mmoe", "a"): [0.74, 0.75, 0.76],
            ("mmoe", "b"): [0.72, 0.72, 0.72],
            # worse on a by 0.015 < spread 0.01 + 0.01: within noise; worse on b by 0.01 > 0
            ("shared_bottom", "a"): [0.775, 0.785, 0.795],
            ("shared_bottom", "b"): [0.69, 0.69, 0.69],
        },
        "auc",
    )
    summary = summarize(rows)
    assert summary[("mmoe", "a", "auc")].mean == pytest.approx(0.75)
    assert summary[("mmoe", "a", "auc")].std == pytest.approx(0.01)
    flags = negative_transfer(
        summary, [SINGLE_TASK, "mmoe", "shared_bottom"], {"a": "auc", "b": "auc"}
    )
    assert {(f.model, f.task) for f in flags} == {("mmoe", "a"), ("shared_bottom", "b")}
    mmoe_a = next(f for f in flags if f.model == "mmoe")
    assert mmoe_a.gap == pytest.approx(0.05) and mmoe_a.spread == pytest.approx(0.02)


def test_lower_is_better_metrics_flag_a_higher_error() -> None:
    summary = {
        (SINGLE_TASK, "y", "rmse"): Summary(1.0, 0.05, 3),
        ("mmoe", "y", "rmse"): Summary(1.2, 0.05, 3),  # worse by 0.2 > 0.1
        ("cgc", "y", "rmse"): Summary(0.8, 0.05, 3),  # better
    }
    flags = negative_transfer(summary, [SINGLE_TASK, "mmoe", "cgc"], {"y": "rmse"})
    assert [(f.model, f.task) for f in flags] == [("mmoe", "y")]


def test_markdown_marks_the_best_and_the_flags() -> None:
    from polytask.compare import Comparison

    result = Comparison(
        models=[SINGLE_TASK, "mmoe"],
        tasks=["a", "b"],
        seeds=[0, 1],
        primary={"a": "auc", "b": "rmse"},
        split="test",
    )
    result.rows = _rows({(SINGLE_TASK, "a"): [0.8, 0.8], ("mmoe", "a"): [0.7, 0.7]}, "auc")
    result.rows += _rows({(SINGLE_TASK, "b"): [1.0, 1.2], ("mmoe", "b"): [0.5, 0.7]}, "rmse")
    text = markdown(result, "toy")
    assert "| single_task | **0.8000 ± 0.0000** | 1.1000 ± 0.1414 |" in text
    assert "| mmoe | 0.7000 ± 0.0000 ⚠ | **0.6000 ± 0.1414** |" in text
    assert "mmoe on a: auc 0.7000 vs single-task 0.8000" in text


def test_model_spec_carries_the_shared_settings() -> None:
    base = ModelConfig.model_validate(
        {"name": "mmoe", "num_experts": 4, "expert_units": [32], "tower_units": [8]}
    )
    assert model_spec("mmoe", base) == {
        "name": "mmoe",
        "num_experts": 4,
        "expert_units": [32],
        "tower_units": [8],
    }
    assert model_spec("cgc", base) == {"name": "cgc", "expert_units": [32], "tower_units": [8]}
    assert model_spec("shared_bottom", base) == {
        "name": "shared_bottom",
        "shared_units": [32],
        "tower_units": [8],
    }
    assert model_spec(SINGLE_TASK, base) == model_spec("shared_bottom", base)
    with pytest.raises(ConfigError, match="did you mean 'mmoe'"):
        model_spec("mmeo", base)


def test_single_task_runs_have_one_task_each(toy_features: Any) -> None:
    cfg = validate(
        EstimatorConfig,
        {
            "features": toy_features,
            "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
            "loss": "uncertainty",
            "training": {"monitor": "mean.auc"},
        },
    )
    runs = run_configs(cfg, [SINGLE_TASK, "mmoe"])
    assert [list(r.tasks) for r in runs[SINGLE_TASK]] == [["click"], ["dwell"]]
    assert [r.training.monitor for r in runs[SINGLE_TASK]] == ["click.auc", "loss"]
    assert all(r.loss.weighting == "sum" for r in runs[SINGLE_TASK])
    assert runs["mmoe"][0].loss.weighting == "uncertainty"
    with pytest.raises(ConfigError, match="more than once"):
        run_configs(cfg, ["mmoe", "mmoe"])


@pytest.fixture
def run_file(tmp_path: Path, toy_frame: pd.DataFrame) -> Path:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.7, "validation": 0.15, "test": 0.15}},
        "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
        "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "training": {"epochs": 3, "batch_size": 256, "monitor": "mean.auc"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _csv(out: Path) -> list[dict[str, str]]:
    with open(out / "compare.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_outputs(out: Path, models: list[str], tasks: dict[str, str], seeds: int) -> None:
    """The three files exist; the table's means are the CSV's."""
    rows = _csv(out)
    assert {r["model"] for r in rows} == set(models)
    assert {r["task"] for r in rows} == set(tasks)
    assert len({r["seed"] for r in rows}) == seeds
    table = (out / "compare.md").read_text().split("\n## ")[0]
    header = next(line for line in table.splitlines() if line.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert columns == [f"{t} {m} {'↑' if m == 'auc' else '↓'}" for t, m in tasks.items()]
    for model in models:
        line = next(x for x in table.splitlines() if x.startswith(f"| {model} |"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        for cell, (task, metric) in zip(cells, tasks.items(), strict=True):
            values = [
                float(r["value"])
                for r in rows
                if (r["model"], r["task"], r["metric"]) == (model, task, metric)
            ]
            assert len(values) == seeds
            mean, std = re.findall(r"(\d+\.\d+) ± (\d+\.\d+)", cell)[0]
            assert float(mean) == pytest.approx(statistics.fmean(values), abs=5e-5)
            expected_std = statistics.stdev(values) if seeds > 1 else 0.0
            assert float(std) == pytest.approx(expected_std, abs=5e-5)
    image = mpimg.imread(out / "compare.png")
    assert image.shape[0] > 100 and image.shape[1] > 200 and float(image.std()) > 0.05


def test_cli_compare_writes_csv_table_and_png(run_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code = main(
        ["compare", str(run_file), "--models", "single_task", "mmoe", "training.epochs=1",
         "--seeds", "2", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    _check_outputs(out, ["single_task", "mmoe"], {"click": "auc", "dwell": "rmse"}, seeds=2)


def test_a_failed_run_is_reported_and_the_others_go_on(
    run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = MultiTaskModel.fit

    def failing(self: MultiTaskModel, *args: Any, **kwargs: Any) -> MultiTaskModel:
        if self.config.model.name == "cgc":
            raise TrainingError("task 'click': loss is nan at step 3")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(MultiTaskModel, "fit", failing)
    out = tmp_path / "cmp"
    code = main(["compare", str(run_file), "--models", "mmoe", "cgc", "--seeds", "1",
                 "--out", str(out), "training.epochs=1"])  # fmt: skip
    assert code == 1
    text = (out / "compare.md").read_text()
    assert "- cgc seed 0: TrainingError: task 'click': loss is nan at step 3" in text
    assert {r["model"] for r in _csv(out)} == {"mmoe"}


def test_unknown_model_is_a_one_line_error(
    run_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(run_file), "--models", "single_task", "cgcc"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'cgcc'" in err and "did you mean 'cgc'" in err


def test_fit_on_encoded_data_equals_fit_on_the_table(
    toy_frame: pd.DataFrame, toy_features: Any, toy_tasks: Any
) -> None:
    settings: dict[str, Any] = {
        "features": toy_features,
        "tasks": toy_tasks,
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "training": {"epochs": 2, "batch_size": 256, "progress": False},
    }
    train, valid = toy_frame.iloc[:1500], toy_frame.iloc[1500:]
    a = MultiTaskModel(**settings).fit(train, validation=valid)
    cfg = a.config
    pre = Preprocessor(features=cfg.features, tasks=cfg.tasks)
    encoded = pre.fit_transform(train)
    b = MultiTaskModel(**settings).fit(
        encoded, validation=pre.transform(valid, labels=True), preprocessor=pre
    )
    for (name, x), y in zip(a.network_.state_dict().items(), b.network_.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(x, y), name
    assert a.history_[-1]["validation"] == b.history_[-1]["validation"]
    with pytest.raises(ConfigError, match="needs the fitted Preprocessor"):
        MultiTaskModel(**settings).fit(encoded)
    other = Preprocessor(features=cfg.features, tasks={"click": cfg.tasks["click"]})
    with pytest.raises(ConfigError, match="other features or tasks"):
        MultiTaskModel(**settings).fit(encoded, preprocessor=other.fit(train))


@pytest.mark.slow
def test_compare_census_single_task_vs_mmoe(tmp_path: Path, census_test_file: Path) -> None:
    """The issue's check: census, single_task and mmoe, 2 seeds, 2 epochs."""
    out = tmp_path / "cmp"
    run = Path(__file__).resolve().parents[1] / "examples" / "census_mmoe.yaml"
    args = ["--models", "single_task", "mmoe", "--seeds", "2", "training.epochs=2"]
    code = main(["compare", str(run), *args, f"data.path={census_test_file}", "--out", str(out)])
    assert code == 0
    _check_outputs(out, ["single_task", "mmoe"], {"income": "auc", "marital": "auc"}, seeds=2)
    assert not any(math.isnan(float(r["value"])) for r in _csv(out))
