"""Loader for MovieLens-100K (GroupLens): one row per rating, with the user's earlier movies
as a behaviour sequence, the movie's genres as a list, and a split by time within each user.

F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets: History and Context", ACM
TiiS 2015. Files: ``u.data`` (user, movie, rating, timestamp), ``u.item`` (latin-1; title,
release date, 19 genre flags), ``u.user`` (age, gender, occupation, zip code).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from polytask.errors import DataError

MOVIELENS_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""The genre flags of ``u.item``, in file order (``u.genre``)."""

MOVIELENS_TASKS: dict[str, dict[str, str]] = {
    "rating": {"type": "regression", "label": "rating"},
    "like": {"type": "binary", "label": "like"},
    "dislike": {"type": "binary", "label": "dislike"},
}
"""``rating`` (1-5, regression), ``like`` (rating >= 4) and ``dislike`` (rating <= 2): a
recommender must also avoid what a user will hate, and a rating of 3 is neither, so dislike
is not the complement of like."""

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Each user's ratings in time order: the first 80% train, the next 10% validation, the last
10% test (each at least one rating; every user has at least 20)."""


def _files(path: Path) -> dict[str, Path]:
    files = {name: path / name for name in ("u.data", "u.item", "u.user")}
    missing = [name for name, f in files.items() if not f.is_file()]
    if missing:
        raise DataError(
            f"load_movielens_100k: {str(path)!r} lacks {missing}; expected the ml-100k folder "
            "(u.data, u.item, u.user from GroupLens)"
        )
    return files


def load_movielens_100k(path: str | os.PathLike[str], *, history: int = 20) -> pd.DataFrame:
    """One row per rating of the ml-100k folder at ``path`` (100,000 rows).

    Columns:

    - ``user_id``, ``movie_id`` (ints), ``timestamp`` (Unix seconds);
    - ``history``: the ids of the (at most) ``history`` movies the user rated strictly before
      this rating's timestamp, oldest first (a pyarrow list column; ratings at the same second
      are not each other's history, so nothing at or after the row's time leaks in);
    - ``history_ratings``: the ratings (1-5) the user gave those movies, in the same order:
      the feedback of each behaviour, known before this rating as the ids are;
    - ``genres``: the movie's genres (a pyarrow list of names); ``release_year`` (float, NaN
      when unknown);
    - ``age`` (int), ``gender``, ``occupation``, ``zip_prefix`` (the first two characters of
      the zip code);
    - labels: ``rating`` (1-5), ``like`` (rating >= 4), ``dislike`` (rating <= 2), 0/1;
    - ``split``: ``train``, ``validation`` or ``test``: within each user, ratings in time
      order (ties by movie id) are cut 80/10/10 (`SPLIT_FRACTIONS`), so a user's latest
      ratings are validation and test and every user is in every split.

    Rows are ordered by user, then time. Everything is computed with vectorised numpy and
    pyarrow operations (no per-row Python)."""
    import pyarrow as pa

    if isinstance(history, bool) or not isinstance(history, int) or history < 1:
        raise DataError(f"load_movielens_100k: history expected an int >= 1, found {history!r}")
    files = _files(Path(path))
    try:
        ratings = pd.read_csv(
            files["u.data"],
            sep="\t",
            names=["user_id", "movie_id", "rating", "timestamp"],
            dtype="int64",
        )
        items = pd.read_csv(
            files["u.item"],
            sep="|",
            names=["movie_id", "title", "release", "video", "url", *MOVIELENS_GENRES],
            encoding="latin-1",
        )
        users = pd.read_csv(
            files["u.user"],
            sep="|",
            names=["user_id", "age", "gender", "occupation", "zip"],
            dtype={"zip": str},
        )
    except (ValueError, pd.errors.ParserError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise DataError(f"load_movielens_100k: {str(path)!r} is not ml-100k: {first}") from None

    df = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    df = df.reset_index(drop=True)
    n = len(df)
    user = df["user_id"].to_numpy()
    ts = df["timestamp"].to_numpy()
    movie = df["movie_id"].to_numpy()
    pos = np.arange(n)
    new_user = np.r_[True, user[1:] != user[:-1]]
    start = np.maximum.accumulate(np.where(new_user, pos, 0))  # first row of the user
    # first row of the same (user, timestamp): everything before it is strictly earlier
    new_time = new_user | np.r_[True, ts[1:] != ts[:-1]]
    first_at_time = np.maximum.accumulate(np.where(new_time, pos, 0))
    lo = np.maximum(start, first_at_time - history)
    lengths = first_at_time - lo
    offsets = np.r_[0, np.cumsum(lengths)]
    earlier = np.repeat(lo, lengths) + (np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths))
    # the rows of each history, oldest first
    for column, source in (("history", movie), ("history_ratings", df["rating"].to_numpy())):
        lists = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), pa.array(source[earlier], pa.int64())
        )
        df[column] = pd.Series(pd.arrays.ArrowExtensionArray(lists))

    flags = items[list(MOVIELENS_GENRES)].to_numpy(dtype=bool)
    names = np.array(MOVIELENS_GENRES, dtype=object)
    genre_offsets = np.r_[0, np.cumsum(flags.sum(1))]
    genre_lists = pa.ListArray.from_arrays(
        pa.array(genre_offsets, pa.int32()), pa.array(np.broadcast_to(names, flags.shape)[flags])
    )
    genres = pd.Series(pd.arrays.ArrowExtensionArray(genre_lists), index=items["movie_id"])
    release = pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce")
    year = pd.Series(release.dt.year.to_numpy(dtype=float), index=items["movie_id"])
    row_of_movie = pd.Index(items["movie_id"]).get_indexer(pd.Index(movie))
    if (row_of_movie < 0).any():
        raise DataError("load_movielens_100k: u.data rates movies that u.item does not list")
    df["genres"] = genres.iloc[row_of_movie].reset_index(drop=True)
    df["release_year"] = year.to_numpy()[row_of_movie]

    users = users.assign(zip_prefix=users["zip"].str[:2]).set_index("user_id")
    row_of_user = users.index.get_indexer(pd.Index(user))
    if (row_of_user < 0).any():
        raise DataError("load_movielens_100k: u.data rates by users that u.user does not list")
    for column in ("age", "gender", "occupation", "zip_prefix"):
        df[column] = users[column].to_numpy()[row_of_user]

    df["like"] = (df["rating"] >= 4).astype("int64")
    df["dislike"] = (df["rating"] <= 2).astype("int64")
    count = np.diff(np.r_[np.flatnonzero(new_user), n])
    size = np.repeat(count, count)
    rank = pos - start  # position in the user's time order
    train_end = np.floor(size * SPLIT_FRACTIONS[0]).astype(np.int64)
    valid_end = np.maximum(train_end + 1, np.floor(size * sum(SPLIT_FRACTIONS[:2])))
    valid_end = np.minimum(valid_end, size - 1)
    df["split"] = np.where(
        rank < train_end, "train", np.where(rank < valid_end, "validation", "test")
    )
    columns = [
        "user_id", "movie_id", "timestamp", "history", "history_ratings", "genres",
        "release_year", "age", "gender", "occupation", "zip_prefix", "rating", "like", "dislike",
        "split",
    ]  # fmt: skip
    return df[columns]


def split_by_column(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The train, validation and test rows of a frame with a ``split`` column, without it."""
    parts = tuple(
        frame[frame["split"] == name].drop(columns="split").reset_index(drop=True)
        for name in ("train", "validation", "test")
    )
    return parts[0], parts[1], parts[2]
