"""List-valued features, behaviour sequences and hashed ids through the estimator: fit,
save, load and predict on raw rows, streamed training, and what export and serve say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from polytask import MultiTaskModel

FEATURES: dict[str, Any] = {
    "categorical": [
        "item",
        {"name": "user", "hash_buckets": 64},
        {"name": "tags", "sep": "|", "pooling": "max"},
        {"name": "history", "pooling": "attention", "query": "item", "shared_with": "item"},
    ],
    "numeric": ["x"],
}
TASKS = {"click": {"type": "binary"}, "score": {"type": "regression"}}


def table(n: int = 500, seed: int = 0) -> pd.DataFrame:
    """The click depends on whether the item is in the user's history."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 20, n)
    history = [rng.integers(0, 20, rng.integers(0, 6)).tolist() for _ in range(n)]
    tags = [
        "|".join(rng.choice(list("abcde"), rng.integers(0, 3), replace=False)) for _ in range(n)
    ]
    seen = np.array([i in h for i, h in zip(item, history, strict=True)])
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "item": item,
            "user": [f"u{k}" for k in rng.integers(0, 300, n)],
            "tags": tags,
            "history": history,
            "x": x,
            "click": (seen | (rng.random(n) < 0.1)).astype(int),
            "score": x + 0.1 * rng.normal(size=n),
        }
    )


def fit(model: str = "mmoe", **training: Any) -> MultiTaskModel:
    df = table()
    return MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model=model,
        training={"epochs": 6, "batch_size": 64, "progress": False, "seed": 0, **training},
    ).fit(df.iloc[:400], validation=df.iloc[400:])


def test_save_load_predict_on_raw_rows_is_identical(tmp_path: Path):
    model = fit()
    rows = table(80, seed=5).drop(columns=["click", "score"])
    rows.loc[0, "history"] = [999, 1000]  # ids never seen: unknown
    rows.loc[1, "history"] = None
    rows.loc[2, "user"] = "someone new"  # hashed: needs nothing new
    before = model.predict(rows)
    model.save(tmp_path / "m")
    again = MultiTaskModel.load(tmp_path / "m").predict(rows)
    pd.testing.assert_frame_equal(before, again)
    assert before.notna().all().all()


def test_the_sequence_is_learned():
    # the click is whether the item is in the history: attention over it learns that, and
    # the same network without the history cannot
    def auc(features: dict[str, Any]) -> float:
        model = MultiTaskModel(
            features=features,
            tasks=TASKS,
            model="mmoe",
            optimizer={"name": "adam", "lr": 0.01},
            training={"epochs": 20, "batch_size": 128, "progress": False, "seed": 0},
        ).fit(table(3000))
        return float(model.evaluate(table(500, seed=9))["click"]["auc"])

    without = {**FEATURES, "categorical": FEATURES["categorical"][:3]}
    with_history, without_history = auc(FEATURES), auc(without)
    assert with_history > 0.7
    assert without_history < 0.6


@pytest.mark.parametrize("model", ["shared_bottom", "cgc", "stem", "pepnet"])
def test_other_models_take_list_inputs(model):
    assert fit(model, epochs=1).predict(table(10, seed=3)).shape[0] == 10


def test_streamed_training_takes_the_new_features(tmp_path: Path):
    path = tmp_path / "train.parquet"
    df = table()
    df.iloc[:400].to_parquet(path)  # history is a Parquet list column
    streamed = MultiTaskModel(
        features=FEATURES,
        tasks=TASKS,
        model="mmoe",
        training={
            "epochs": 2,
            "batch_size": 64,
            "progress": False,
            "seed": 0,
            "stream": {"chunk_rows": 150, "buffer_rows": 200},
        },
    ).fit(str(path), validation=df.iloc[400:])
    in_memory = fit(epochs=2)
    pre_s, pre_m = streamed.preprocessor_, in_memory.preprocessor_
    assert pre_s.state_dict()["vocabularies"] == pre_m.state_dict()["vocabularies"]
    assert pre_s.list_lengths_ == pre_m.list_lengths_
    assert pre_s.cardinalities == pre_m.cardinalities
    assert np.isfinite(streamed.predict(df.iloc[400:])["click"]).all()


def test_export_refuses_list_features_clearly(tmp_path: Path):
    from polytask.export import ExportError, export_onnx

    with pytest.raises(ExportError, match=r"list-valued feature\(s\) \['tags', 'history'\]"):
        export_onnx(fit(epochs=1), tmp_path / "m.onnx")


def test_a_hashed_model_exports_and_onnx_predicts_as_torch(tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="onnxruntime comes with the dev extra")
    df = table()
    model = MultiTaskModel(
        features={"categorical": ["item", {"name": "user", "hash_buckets": 64}], "numeric": ["x"]},
        tasks=TASKS,
        model="mmoe",
        training={"epochs": 1, "batch_size": 64, "progress": False},
    ).fit(df)
    rows = table(50, seed=4).drop(columns=["click", "score"])
    rows.loc[0, "user"] = "never seen"
    torch_out = model.predict(rows)
    onnx_out = model.predict(rows, backend="onnx")
    pd.testing.assert_frame_equal(torch_out, onnx_out, atol=1e-5, rtol=1e-5)


def test_serve_refuses_list_features_and_serves_hashed_ids(tmp_path: Path):
    pytest.importorskip("fastapi", reason="serving needs the serve extra")
    from polytask.errors import PolytaskError
    from polytask.serve import Service

    with pytest.raises(PolytaskError, match=r"list-valued feature\(s\) \['tags', 'history'\]"):
        Service(fit(epochs=1).save(tmp_path / "lists"))
    hashed = MultiTaskModel(
        features={"categorical": ["item", {"name": "user", "hash_buckets": 64}], "numeric": ["x"]},
        tasks=TASKS,
        model="mmoe",
        training={"epochs": 1, "batch_size": 64, "progress": False},
    ).fit(table())
    service = Service(hashed.save(tmp_path / "hashed"))
    rows = [{"item": 3, "user": "u7", "x": 0.5}, {"item": 4, "user": "new user", "x": None}]
    got = service.predict(json.dumps({"rows": rows}).encode())["predictions"]
    expected = hashed.predict(pd.DataFrame(rows))
    assert [r["click"] for r in got] == pytest.approx(expected["click"].tolist(), rel=1e-6)
