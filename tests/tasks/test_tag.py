"""The tag task type through the estimator: sentences in, one tag list per sentence out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from polytask import MultiTaskModel
from polytask._chunks import chunk_scores
from polytask.data import Preprocessor
from polytask.data.features import FeaturesConfig
from polytask.data.tokens import UNKNOWN_INDEX, SentencePreprocessor, word_shape
from polytask.errors import ConfigError, DataError
from polytask.metrics import task_metrics
from polytask.tasks import TaskSpec

POS = {"the": "DT", "a": "DT", "cat": "NN", "dog": "NN", "sat": "VBD", "ran": "VBD", "on": "IN"}
POS |= {"mat": "NN", "big": "JJ", "red": "JJ", "Paris": "NNP", "in": "IN"}


def sentences(n: int, seed: int = 0) -> pd.DataFrame:
    """Toy sentences ``[det] [adj] noun verb [prep det noun]`` with POS and IOB chunk tags."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, list[str]]] = []
    for _ in range(n):
        words, chunk = [], []
        np_ = [str(rng.choice(["the", "a"]))]
        if rng.random() < 0.5:
            np_.append(str(rng.choice(["big", "red"])))
        np_.append(str(rng.choice(["cat", "dog", "mat"])))
        words += np_
        chunk += ["B-NP"] + ["I-NP"] * (len(np_) - 1)
        words.append(str(rng.choice(["sat", "ran"])))
        chunk.append("B-VP")
        if rng.random() < 0.6:
            words += [str(rng.choice(["on", "in"])), "the", str(rng.choice(["mat", "Paris"]))]
            chunk += ["B-PP", "B-NP", "I-NP"]
        words[0] = words[0].capitalize()
        rows.append(
            {
                "word": words,
                "pos": [POS[w.lower()] if w != "Paris" else "NNP" for w in words],
                "chunk": chunk,
            }
        )
    for r in rows:
        r["pos"] = [POS.get(w, POS.get(w.lower(), "NN")) for w in r["word"]]
    return pd.DataFrame(rows)


def config(**model: Any) -> dict[str, Any]:
    return {
        "features": {"tokens": {"column": "word", "embedding_dim": 8, "char_filters": 4}},
        "tasks": {
            "pos": {"type": "tag", "layer": 1},
            "chunk": {"type": "tag", "inputs_from": ["pos"]},
        },
        "model": {"name": "bilstm", "hidden": 16, **model},
        "optimizer": {"lr": 0.02},
        "training": {"epochs": 6, "batch_size": 16, "progress": False},
    }


@pytest.fixture(scope="module")
def fitted() -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(**config()).fit(sentences(200), sentences(40, seed=1))


def test_learns_the_toy_grammar(fitted: MultiTaskModel) -> None:
    m = fitted.evaluate(sentences(60, seed=2))
    assert m["pos"]["accuracy"] > 0.95 and m["chunk"]["f1"] > 0.9
    assert np.isnan(m["pos"]["f1"])  # POS tags are not IOB chunks
    assert m["pos"]["count"] == sentences(60, seed=2)["word"].map(len).sum()


def test_predict_gives_one_tag_list_per_sentence_after_save_and_load(
    fitted: MultiTaskModel, tmp_path: Path
) -> None:
    raw = pd.DataFrame(
        {"word": [["The", "dog", "ran"], ["A", "zebra", "sat", "on", "the", "mat"], ["Cats"]]}
    )
    before = fitted.predict(raw)
    fitted.save(tmp_path / "m")
    loaded = MultiTaskModel.load(tmp_path / "m")
    after = loaded.predict(raw)
    pd.testing.assert_frame_equal(before, after)
    assert list(after.columns) == ["pos", "chunk"]
    for words, pos, chunk in zip(raw["word"], after["pos"], after["chunk"], strict=True):
        assert len(pos) == len(words) == len(chunk)
    assert after["pos"][0] == ["DT", "NN", "VBD"]
    assert after["chunk"][0] == ["B-NP", "I-NP", "B-VP"]


def test_an_unknown_word_maps_to_unknown(fitted: MultiTaskModel) -> None:
    enc = fitted.encode(pd.DataFrame({"word": [["the", "zebra"]]}), labels=False)
    vocab = fitted.preprocessor_.vocabularies_
    assert vocab is not None and "zebra" not in vocab["words"]
    assert enc.categorical[0, 1, 0] == UNKNOWN_INDEX
    assert enc.categorical[0, 0, 0] == vocab["words"].index("the") + 2


def test_min_freq_sends_rare_words_to_unknown() -> None:
    features = FeaturesConfig.model_validate({"tokens": {"column": "word", "min_freq": 2}})
    pre = Preprocessor(features=features, tasks={"pos": TaskSpec(type="tag")})
    assert isinstance(pre, SentencePreprocessor)
    df = pd.DataFrame({"word": [["a", "b", "a"], ["A"]], "pos": [["X", "Y", "X"], ["Y"]]})
    enc = pre.fit_transform(df)
    assert pre.vocabularies_ is not None and pre.vocabularies_["words"] == ["a"]
    assert enc.categorical[:, :, 0].tolist() == [[2, 1, 2], [2, 0, 0]]  # A lowercased; padding 0
    assert enc.labels["pos"][1].isnan().tolist() == [False, True, True]
    assert word_shape("McDonald's") == "XxXx'x" and word_shape("1,000.5") == "d,d.d"


def test_a_sentence_with_a_wrong_number_of_tags_is_named() -> None:
    df = sentences(5)
    df.at[3, "chunk"] = df.at[3, "chunk"][:-1]
    with pytest.raises(
        DataError,
        match=r"training set: sentence 3 \('A cat ran'; rows counted from 0\) has \d+ "
        r"tokens in column 'word' but \d+ tags in "
        r"column 'chunk'",
    ) as err:
        MultiTaskModel(**config()).fit(df)
    assert "\n" not in str(err.value)


def test_a_token_column_without_lists_is_refused() -> None:
    df = sentences(5)
    df["word"] = df["word"].map(" ".join)
    with pytest.raises(DataError, match=r"sentence 0: column 'word' holds str"):
        MultiTaskModel(**config()).fit(df)


def test_a_layer_deeper_than_the_encoder_is_a_config_error() -> None:
    cfg = config(layers=2)
    cfg["tasks"]["pos"]["layer"] = 3
    with pytest.raises(
        ConfigError, match=r"task 'pos': layer 3 is deeper than the encoder, which has 2 layer"
    ):
        MultiTaskModel(**cfg)


def test_sequence_settings_that_do_not_fit_are_refused() -> None:
    cfg = config()
    cfg["model"] = {"name": "mmoe"}
    with pytest.raises(ConfigError, match=r"features.tokens .* needs a sequence model"):
        MultiTaskModel(**cfg)
    cfg = config()
    cfg["tasks"]["pos"] = {"type": "multiclass"}
    with pytest.raises(ConfigError, match="task 'pos': a multiclass task labels rows"):
        MultiTaskModel(**cfg)


def test_tag_metrics_are_conllevals_and_an_unseen_tag_counts_wrong() -> None:
    tags = ("B-NP", "B-VP", "I-NP", "O")
    spec = TaskSpec(type="tag", tags=tags)
    gold = [["B-NP", "I-NP", "B-VP"], ["I-NP", "O"]]
    guess = [["B-NP", "B-NP", "B-VP"], ["B-NP", "O"]]  # decodable: IOB2 (B- first)
    y = np.full((2, 4), np.nan)
    out = np.zeros((2, 4, 4))
    for i, (g, p) in enumerate(zip(gold, guess, strict=True)):
        for t, (a, b) in enumerate(zip(g, p, strict=True)):
            y[i, t] = tags.index(a)
            out[i, t, tags.index(b)] = 5.0
    m = task_metrics(spec, out, y)
    assert m["count"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert {k: m[k] for k in ("precision", "recall", "f1")} == pytest.approx(
        chunk_scores(gold, guess)
    )
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 4, 2 / 3))  # by hand
    y[1, 1] = -1  # a tag never seen in training: wrong whatever the guess
    assert task_metrics(spec, out, y)["accuracy"] == pytest.approx(2 / 5)


def test_alternate_training_on_one_dataset_per_task() -> None:
    df = sentences(160)
    pos_set = df.iloc[:80][["word", "pos"]]
    chunk_set = df.iloc[80:][["word", "chunk"]]
    cfg = config()
    cfg["training"]["schedule"] = "alternate"
    model = MultiTaskModel(**cfg).fit({"pos": pos_set, "chunk": chunk_set})
    m = model.evaluate(sentences(40, seed=3))
    assert m["pos"]["accuracy"] > 0.9 and m["chunk"]["f1"] > 0.8


def test_parquet_list_columns_read_like_lists(tmp_path: Path, fitted: MultiTaskModel) -> None:
    df = sentences(20, seed=4)
    df.to_parquet(tmp_path / "s.parquet")
    from polytask.data import read_table

    back = read_table(tmp_path / "s.parquet")
    assert isinstance(back["word"][0], np.ndarray)  # pandas reads a list column as arrays
    a, b = fitted.evaluate(df), fitted.evaluate(back)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    pd.testing.assert_frame_equal(fitted.predict(df), fitted.predict(back))


def write_conll(path: Path, df: pd.DataFrame) -> Path:
    lines = []
    for w, p, c in zip(df["word"], df["pos"], df["chunk"], strict=True):
        lines += [f"{a} {b} {d}" for a, b, d in zip(w, p, c, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_polytask_train_reads_conll_files(tmp_path: Path) -> None:
    write_conll(tmp_path / "train.txt", sentences(120))
    write_conll(tmp_path / "test.txt", sentences(30, seed=5))
    cfg = config()
    cfg["data"] = {
        "loader": "conll", "columns": ["word", "pos", "chunk"], "path": "train.txt",
        "split": {"train": 0.8, "validation": 0.2, "test": 0.0}, "test": "test.txt",
    }  # fmt: skip
    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    command = ["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]
    subprocess.run([sys.executable, "-m", "polytask", *command], check=True, capture_output=True)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test"]["pos"]["count"] == sentences(30, seed=5)["word"].map(len).sum()
    assert 0 <= metrics["test"]["chunk"]["f1"] <= 1


def test_copies_of_a_sentence_preprocessor_stay_one() -> None:
    import copy
    import pickle

    features = FeaturesConfig.model_validate({"tokens": {"column": "word"}})
    pre = Preprocessor(features=features, tasks={"pos": TaskSpec(type="tag")})
    pre.fit(sentences(10))
    for other in (copy.deepcopy(pre), pickle.loads(pickle.dumps(pre))):
        assert isinstance(other, SentencePreprocessor)
        assert other.state_dict() == pre.state_dict()


def test_checkpoints_resume_a_sentence_model_exactly(tmp_path: Path) -> None:
    df, valid = sentences(64), sentences(16, seed=1)
    cfg = config()
    cfg["training"]["epochs"] = 2
    whole = MultiTaskModel(**cfg).fit(df, valid, checkpoint_dir=tmp_path / "a")
    MultiTaskModel(**cfg).fit(df, valid, epochs=1, checkpoint_dir=tmp_path / "b")
    resumed = MultiTaskModel(**cfg).fit(df, valid, checkpoint_dir=tmp_path / "b", resume=True)
    a, b = whole.network_.state_dict(), resumed.network_.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_the_transformer_learns_the_toy_grammar() -> None:
    cfg = config()
    cfg["model"] = {"name": "transformer", "width": 16, "heads": 2, "feedforward": 32}
    cfg["training"]["epochs"] = 8
    torch.manual_seed(0)
    model = MultiTaskModel(**cfg).fit(sentences(200), sentences(40, seed=1))
    m = model.evaluate(sentences(60, seed=2))
    assert m["pos"]["accuracy"] > 0.9 and m["chunk"]["f1"] > 0.8


def test_polytask_compare_trains_sentence_models(tmp_path: Path) -> None:
    """``single_task`` is the run's sequence model with one task."""
    import yaml

    write_conll(tmp_path / "train.txt", sentences(80))
    write_conll(tmp_path / "test.txt", sentences(20, seed=5))
    cfg = config()
    cfg["training"]["epochs"] = 1
    cfg["data"] = {
        "loader": "conll", "columns": ["word", "pos", "chunk"], "path": "train.txt",
        "split": {"train": 0.8, "validation": 0.2, "test": 0.0}, "test": "test.txt",
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    models = ["--models", "single_task", "bilstm", "--seeds", "1", "--out", str(tmp_path / "c")]
    command = [sys.executable, "-m", "polytask", "compare", str(tmp_path / "run.yaml"), *models]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "c" / "compare.csv")
    assert {"single_task", "bilstm"} <= set(table.iloc[:, 0])
