"""MovieLens-100K: one row per rating, the history strictly before each rating (checked
against a brute-force recomputation), genres, the split by time within each user, and the
example run file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from polytask.datasets import MOVIELENS_GENRES, load_movielens_100k, split_by_column
from polytask.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ratings(movielens_dir: Path) -> pd.DataFrame:
    return load_movielens_100k(movielens_dir)


def test_one_row_per_rating_with_the_documented_columns(ratings):
    assert len(ratings) == 100_000
    assert ratings["user_id"].nunique() == 943
    assert ratings["movie_id"].nunique() == 1682
    assert ratings["rating"].value_counts().sort_index().tolist() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]  # fmt: skip  (PROVENANCE.md)
    assert (ratings["like"] == (ratings["rating"] >= 4)).all()
    assert (ratings["dislike"] == (ratings["rating"] <= 2)).all()
    first = ratings.iloc[0]  # user 1's first rating: no history
    assert list(first["history"]) == [] and list(first["history_ratings"]) == []
    toy_story = ratings[ratings["movie_id"] == 1].iloc[0]
    assert list(toy_story["genres"]) == ["Animation", "Children's", "Comedy"]
    assert toy_story["release_year"] == 1995
    assert set(ratings["genres"].explode().dropna()) <= set(MOVIELENS_GENRES)
    user1 = ratings[ratings["user_id"] == 1].iloc[0]
    assert (user1["age"], user1["gender"], user1["occupation"], user1["zip_prefix"]) == (
        24, "M", "technician", "85",
    )  # fmt: skip


def test_history_holds_only_strictly_earlier_ratings(ratings):
    rng = np.random.default_rng(0)
    for i in rng.choice(len(ratings), 300, replace=False):
        row = ratings.iloc[i]
        mine = ratings[ratings["user_id"] == row["user_id"]]
        earlier = mine[mine["timestamp"] < row["timestamp"]]
        expected = earlier.sort_values(["timestamp", "movie_id"]).iloc[-20:]
        assert list(row["history"]) == expected["movie_id"].tolist(), i
        assert list(row["history_ratings"]) == expected["rating"].tolist(), i


def test_split_by_time_within_each_user(ratings):
    train, valid, test = split_by_column(ratings)
    assert len(train) + len(valid) + len(test) == 100_000
    assert "split" not in train.columns
    for part in (train, valid, test):
        assert part["user_id"].nunique() == 943  # every user in every split
    last_train = train.groupby("user_id")["timestamp"].max()
    first_valid = valid.groupby("user_id")["timestamp"].min()
    last_valid = valid.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    assert (first_valid >= last_train).all()
    assert (first_test >= last_valid).all()
    assert 0.09 < len(test) / 100_000 < 0.12


def test_missing_files_are_named(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(DataError, match=r"lacks \['u.item', 'u.user'\]"):
        load_movielens_100k(tmp_path)


@pytest.mark.slow
def test_example_trains_and_scores_every_task(tmp_path, movielens_dir):
    from polytask.cli import main

    spec = yaml.safe_load((REPO / "examples" / "movielens_mtl.yaml").read_text())
    spec["data"]["path"] = str(movielens_dir)
    spec["training"]["epochs"] = 1
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]) == 0
    import json

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"rating", "like", "dislike"}
    assert metrics["test"]["like"]["auc"] > 0.65
