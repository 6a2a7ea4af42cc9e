"""polytask fit-preprocessor: fit once on a Parquet directory, reuse with data.preprocessor."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from polytask import MultiTaskModel
from polytask.cli import main


@pytest.fixture
def streamed_run(tmp_path: Path, toy_frame: pd.DataFrame) -> Path:
    folder = tmp_path / "train"
    folder.mkdir()
    for i, start in enumerate(range(0, 1400, 500)):
        toy_frame.iloc[start : min(start + 500, 1400)].to_parquet(folder / f"part-{i}.parquet")
    toy_frame.iloc[1400:].to_csv(tmp_path / "test.csv", index=False)
    spec = {
        "data": {"train": "train", "test": "test.csv"},
        "features": {"categorical": ["color", "size"], "numeric": ["x", "z"]},
        "tasks": {"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        "model": {"name": "mmoe", "num_experts": 2, "expert_units": [8], "tower_units": [4]},
        "training": {
            "epochs": 1,
            "batch_size": 128,
            "monitor": "loss",
            "stream": {"buffer_rows": 400, "chunk_rows": 200},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_fit_once_then_train_with_data_preprocessor(
    streamed_run: Path, tmp_path: Path, toy_frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    prep = tmp_path / "prep"
    assert main(["fit-preprocessor", str(streamed_run), "-o", str(prep)]) == 0
    assert "fitted on 1,400 rows" in capsys.readouterr().out
    saved = json.loads((prep / "preprocessor.json").read_text())
    # the streamed fit over the directory is the in-memory fit of the same rows
    model = MultiTaskModel(
        features={"categorical": ["color", "size"], "numeric": ["x", "z"]},
        tasks={"click": {"type": "binary"}, "dwell": {"type": "regression"}},
        training={"epochs": 1, "progress": False},
    ).fit(toy_frame.iloc[:1400])
    reference = model.preprocessor_.state_dict()
    assert saved["vocabularies"] == reference["vocabularies"]
    for name, st in reference["numeric"].items():
        assert saved["numeric"][name]["mean"] == pytest.approx(st["mean"], rel=1e-12)
    # a fixed preprocessor: the run uses it as it is (here, a vocabulary edited on purpose)
    saved["vocabularies"]["color"] = ["blue", "red"]
    (prep / "preprocessor.json").write_text(json.dumps(saved))
    out = tmp_path / "out"
    assert main(["train", str(streamed_run), "--out", str(out), "data.preprocessor=prep"]) == 0
    trained = MultiTaskModel.load(out / "model")
    assert trained.preprocessor_.vocabularies_["color"] == ["blue", "red"]
    assert json.loads((out / "metrics.json").read_text())["rows"]["train"] == 1400
    # another schema is refused, naming the section
    other = ["data.preprocessor=prep", "features.numeric=[x]"]
    assert main(["train", str(streamed_run), "--out", str(tmp_path / "o2"), *other]) == 2
    assert "was fitted for other features than this run's" in capsys.readouterr().err
    # the output folder is replaced whole: a folder of other files is refused
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    assert main(["fit-preprocessor", str(streamed_run), "-o", str(tmp_path / "busy")]) != 0
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


def test_without_streaming_the_split_table_is_fitted(
    tmp_path: Path, toy_frame: pd.DataFrame
) -> None:
    toy_frame.to_csv(tmp_path / "table.csv", index=False)
    spec = {
        "data": {"path": "table.csv", "split": {"train": 0.5, "validation": 0.25, "test": 0.25}},
        "features": {"categorical": ["color"], "numeric": ["x"]},
        "tasks": {"kind": {"type": "multiclass"}},
        "model": {"name": "shared_bottom", "shared_units": [4], "tower_units": [4]},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    prep = tmp_path / "prep"
    assert main(["fit-preprocessor", str(tmp_path / "run.yaml"), "-o", str(prep)]) == 0
    fitted = json.loads((prep / "fitted.json").read_text())
    assert fitted["rows"] == 1000 and fitted["features"]["categorical"][0]["name"] == "color"
    assert json.loads((prep / "preprocessor.json").read_text())["classes"]["kind"] == [
        "a",
        "b",
        "c",
    ]
