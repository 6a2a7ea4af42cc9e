"""List-valued categorical features and hashed ids: reading, encoding, state, bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from polytask import DataError
from polytask.config import FeaturesConfig, TaskConfig
from polytask.data import EncodedData, Preprocessor
from polytask.data.preprocess import HASH_KEY, IdLikeColumnWarning, hash_buckets


def pre(*categorical: Any, numeric: tuple[str, ...] = ()) -> Preprocessor:
    return Preprocessor(
        features=FeaturesConfig(categorical=list(categorical), numeric=list(numeric)),
        tasks={"y": TaskConfig(type="binary").spec()},
    )


def frame(**columns: Any) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame({**columns, "y": [i % 2 for i in range(n)]})


def test_sep_lists_are_padded_left_aligned_with_zero():
    p = pre({"name": "tags", "sep": "|"})
    data = p.fit_transform(frame(tags=["b|a", "", None, "c", "a|a|c"]))
    assert p.vocabularies_ == {"tags": ["a", "b", "c"]}
    assert p.list_lengths_ == {"tags": 3}  # the longest training row
    assert data.lists["tags"].tolist() == [
        [3, 2, 0],
        [0, 0, 0],  # an empty string is an empty list
        [0, 0, 0],  # a missing cell too
        [4, 0, 0],
        [2, 2, 4],
    ]
    assert data.categorical.shape == (5, 0)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([[1, 2], [], None, [3]], dtype=object),  # Python lists
        pd.Series([np.array([1, 2]), np.array([], dtype=int), None, np.array([3])]),
        pd.Series(
            pd.arrays.ArrowExtensionArray(pa.array([[1, 2], [], None, [3]], pa.list_(pa.int64())))
        ),
        pd.Series(["1,2", "", None, "3"]),  # with sep=","
    ],
    ids=["lists", "numpy", "arrow", "sep"],
)
def test_every_list_form_encodes_alike(column):
    p = pre({"name": "ids", "sep": ",", "max_len": 2})
    data = p.fit_transform(frame(ids=column))
    assert p.vocabularies_ == {"ids": ["1", "2", "3"]}
    assert data.lists["ids"].tolist() == [[2, 3], [0, 0], [0, 0], [4, 0]]


def test_parquet_list_column_round_trip(tmp_path):
    path = tmp_path / "t.parquet"
    pa.parquet.write_table(pa.table({"ids": pa.array([[5, 6], None, [7]]), "y": [0, 1, 0]}), path)
    df = pd.read_parquet(path)
    p = pre({"name": "ids", "pooling": "sum"})
    assert p.fit_transform(df).lists["ids"].tolist() == [[2, 3], [0, 0], [4, 0]]


@pytest.mark.parametrize(
    ("truncate", "expected"), [("first", [[2, 3], [4, 0]]), ("last", [[4, 5], [4, 0]])]
)
def test_truncation_keeps_the_first_or_last_values(truncate, expected):
    p = pre({"name": "h", "max_len": 2, "truncate": truncate})
    data = p.fit_transform(frame(h=[[10, 11, 12, 13], [12]]))
    assert data.lists["h"].tolist() == expected


def test_unseen_values_map_to_unknown_and_missing_elements_drop():
    p = pre({"name": "h", "max_len": 4})
    p.fit(frame(h=[["a", "b"], ["b"]]))
    data = p.transform(pd.DataFrame({"h": [["b", "zzz", None, "a"], ["new", "a"]]}), labels=False)
    assert data.lists["h"].tolist() == [[3, 1, 2, 0], [1, 2, 0, 0]]


def test_lists_survive_select_concat_slice_and_fingerprint():
    p = pre({"name": "h", "max_len": 3}, "c")
    data = p.fit_transform(frame(h=[[1], [1, 2], [], [2, 2, 2]], c=list("abab")))
    picked = data.select(torch.tensor([3, 0]))
    assert picked.lists["h"].tolist() == [[3, 3, 3], [2, 0, 0]]
    both = EncodedData.concat([data, picked])
    assert both.lists["h"].shape == (6, 3)
    batch = both.slice(4, 6)
    assert batch["list:h"].tolist() == [[3, 3, 3], [2, 0, 0]]
    assert [b["list:h"].shape[0] for b in data.batches(3)] == [3, 1]
    from polytask.data import data_fingerprint

    other = p.transform(frame(h=[[1], [1, 2], [], [2, 2]], c=list("abab")))
    assert data_fingerprint({"a": data}) != data_fingerprint({"a": other})


def test_shared_with_uses_one_vocabulary_of_both_columns():
    p = pre("movie", {"name": "hist", "sep": "|", "shared_with": "movie"})
    data = p.fit_transform(frame(movie=[1, 2, 3], hist=["", "5", "1|2"]))
    # "5" occurs only in the history, yet it is in the shared vocabulary
    assert p.vocabularies_ == {"movie": ["1", "2", "3", "5"]}
    assert data.categorical[:, 0].tolist() == [2, 3, 4]
    assert data.lists["hist"].tolist() == [[0, 0], [5, 0], [2, 3]]
    assert p.list_cardinalities == {}  # no table of its own
    assert p.cardinalities == [6]


def test_state_round_trip_keeps_widths_and_buckets():
    p = pre({"name": "u", "hash_buckets": 50}, {"name": "h", "max_len": 3})
    df = frame(u=["x", "y", None], h=[[1], [2, 3], None])
    data = p.fit_transform(df)
    state = p.state_dict()
    assert state["hash_buckets"] == {"u": 50}
    assert state["list_lengths"] == {"h": 3}
    assert "u" not in state["vocabularies"]
    q = pre({"name": "u", "hash_buckets": 50}, {"name": "h", "max_len": 3}).load_state_dict(state)
    again = q.transform(df)
    assert torch.equal(again.categorical, data.categorical)
    assert torch.equal(again.lists["h"], data.lists["h"])
    changed = pre({"name": "u", "hash_buckets": 60}, {"name": "h", "max_len": 3})
    with pytest.raises(DataError, match="hash buckets"):
        changed.load_state_dict(state)


# ----------------------------------------------------------------------------- hashing
def test_hash_buckets_missing_keeps_index_zero_and_values_hash_by_canonical_string():
    p = pre({"name": "u", "hash_buckets": 1000})
    data = p.fit_transform(frame(u=[3, 3.0, "3", None]))
    codes = data.categorical[:, 0].tolist()
    assert codes[3] == 0
    assert codes[0] == codes[1] == codes[2] >= 2
    assert codes[0] == 2 + int(hash_buckets(np.array(["3"], dtype=object), 1000)[0])
    assert p.cardinalities == [1002]
    assert p.vocabularies_ == {}


_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def _siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein), written from its definition."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D]
    v += [k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rounds(count: int) -> None:
        for _ in range(count):
            v[0] = (v[0] + v[1]) & _M
            v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _M
            v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & _M
            v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & _M
            v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    tail = len(data) - len(data) % 8
    for i in range(0, tail, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    b = ((len(data) & 0xFF) << 56) | int.from_bytes(data[tail:], "little")
    v[3] ^= b
    rounds(2)
    v[0] ^= b
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def _finalise(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M
    return x ^ (x >> 31)


def test_hash_is_siphash_of_the_utf8_string_under_the_fixed_key():
    # The bucket of a value is part of every hashed model: it must never change, so it is
    # checked against the documented definition computed independently, and golden values.
    values = ["a", "user_123", "", "3", "héllo wörld, a longer string"]
    expected = [_finalise(_siphash24(HASH_KEY.encode(), v.encode())) % 1_000_003 for v in values]
    assert hash_buckets(np.array(values, dtype=object), 1_000_003).tolist() == expected
    assert expected[:4] == [780692, 328598, 685184, 492096]


_CHILD = (
    "import numpy as np;from polytask.data.preprocess import hash_buckets;"
    "print(hash_buckets(np.array([f'id{i}' for i in range(2000)], dtype=object), 977).tolist())"
)


def test_hash_is_identical_across_processes_and_hash_seeds():
    outs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
        )
        outs.append(run.stdout)
    assert outs[0] == outs[1]
    here = hash_buckets(np.array([f"id{i}" for i in range(2000)], dtype=object), 977).tolist()
    assert outs[0].strip() == str(here)
    assert len(set(here)) > 800  # spread over the buckets, not a constant


def test_hashing_in_chunks_gives_the_same_codes(monkeypatch):
    from polytask.data import preprocess

    ids = pd.Series([f"u{i % 97}" if i % 13 else None for i in range(1000)])
    whole = pre({"name": "u", "hash_buckets": 50}).fit_transform(frame(u=ids)).categorical
    monkeypatch.setattr(preprocess, "HASH_CHUNK", 64)
    chunked = pre({"name": "u", "hash_buckets": 50}).fit_transform(frame(u=ids)).categorical
    assert torch.equal(whole, chunked)
    assert (whole[torch.from_numpy(ids.isna().to_numpy().copy()), 0] == 0).all()


def test_hashed_list_column():
    p = pre({"name": "h", "hash_buckets": 7, "max_len": 2})
    data = p.fit_transform(frame(h=[["a", "b"], []]))
    row = data.lists["h"][0].tolist()
    assert all(2 <= v < 9 for v in row)
    assert data.lists["h"][1].tolist() == [0, 0]


def test_id_like_warning_points_to_hash_buckets():
    ids = [f"u{i}" for i in range(20_000)]
    with pytest.warns(IdLikeColumnWarning, match="hash_buckets"):
        pre("u").fit(frame(u=ids))


def test_hashed_id_column_draws_no_id_warning(recwarn):
    ids = [f"u{i}" for i in range(20_000)]
    pre({"name": "u", "hash_buckets": 1000}).fit(frame(u=ids))
    assert not [w for w in recwarn if issubclass(w.category, IdLikeColumnWarning)]


# ----------------------------------------------------------------------------- bad input
def one_line(err: pytest.ExceptionInfo[Exception]) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_non_list_non_string_value_in_a_list_column():
    with pytest.raises(DataError) as err:
        pre({"name": "h", "pooling": "mean"}).fit(frame(h=pd.Series([[1], 5, None], dtype=object)))
    assert one_line(err) == (
        "training set: list column 'h' holds int values such as 5; expected a list per row "
        "(or text split on sep), empty or missing for none"
    )


def test_numbers_column_declared_as_list():
    with pytest.raises(DataError, match=r"list column 'h' holds float values such as 1\.5"):
        pre({"name": "h", "pooling": "mean"}).fit(frame(h=[1.5, 2.0]))


def test_text_without_sep():
    with pytest.raises(
        DataError, match=re.escape("column 'h' holds text such as 'a|b' and no sep")
    ):
        pre({"name": "h", "pooling": "mean"}).fit(frame(h=["a|b", "c"]))


def test_nested_lists():
    with pytest.raises(DataError, match="list column 'h' holds lists of list"):
        pre({"name": "h", "pooling": "mean"}).fit(frame(h=[[[1]], [[2]]]))


def test_shared_with_values_of_another_kind():
    p = pre("movie", {"name": "hist", "pooling": "mean", "shared_with": "movie"})
    with pytest.raises(DataError) as err:
        p.fit(frame(movie=[1, 2], hist=[["m1"], ["m2"]]))
    assert one_line(err).startswith(
        "training set: list column 'hist' is shared_with 'movie', but its values are text and "
        "'movie''s are integer"
    )


def test_list_column_not_declared_says_how_to_declare_it():
    with pytest.raises(DataError, match="declare it list-valued"):
        pre("h").fit(frame(h=[[1], [2]]))


@pytest.mark.parametrize(
    ("categorical", "message"),
    [
        (
            [{"name": "u", "hash_buckets": 1}],
            "categorical feature 'u': hash_buckets is 1; expected >= 2",
        ),
        (
            ["a", {"name": "h", "pooling": "attention", "query": "x"}],
            "categorical feature 'h': query 'x' is a numeric feature; expected a single-valued "
            "categorical feature, one of ['a']",
        ),
        (
            ["a", {"name": "h", "pooling": "attention", "query": "nope"}],
            "categorical feature 'h': query 'nope' is not a feature",
        ),
        (
            ["a", {"name": "g", "sep": "|"}, {"name": "h", "pooling": "attention", "query": "g"}],
            "categorical feature 'h': query 'g' is a list-valued feature",
        ),
        (
            ["a", {"name": "h", "pooling": "mean", "shared_with": "a", "hash_buckets": 9}],
            "categorical feature 'h': hash_buckets is set, but the feature uses 'a''s table",
        ),
        (
            [{"name": "h", "pooling": "attention"}],
            "categorical feature 'h': pooling: attention needs query",
        ),
        (
            [
                {"name": "a", "embedding_dim": 4},
                {"name": "h", "pooling": "attention", "query": "a"},
            ],
            "categorical feature 'h': embedding_dim 8 differs from its query 'a''s 4",
        ),
    ],
)
def test_bad_settings_one_line(categorical, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        FeaturesConfig(categorical=categorical, numeric=["x"])
    assert message in str(err.value)
