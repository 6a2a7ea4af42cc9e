"""The CoNLL column reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from polytask.data.conll import read_conll
from polytask.errors import DataError


def test_sentences_become_rows_of_lists(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("-DOCSTART- -X- O\n\nThe DT B-NP\ncat NN I-NP\n\n\nsat VBD B-VP\n")
    df = read_conll(f, ["word", "pos", "chunk"])
    assert df["word"].tolist() == [["The", "cat"], ["sat"]]
    assert df["pos"].tolist() == [["DT", "NN"], ["VBD"]]
    assert df["chunk"].tolist() == [["B-NP", "I-NP"], ["B-VP"]]


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("The DT B-NP\ncat NN\n")
    with pytest.raises(DataError, match=r"bad.txt' line 2: expected 3 .*found 2") as err:
        read_conll(f, ["word", "pos", "chunk"])
    assert "\n" not in str(err.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "empty.txt"
    f.write_text("\n\n")
    with pytest.raises(DataError, match="holds no sentence"):
        read_conll(f, ["word"])
    with pytest.raises(DataError, match="does not exist"):
        read_conll(tmp_path / "nope.txt", ["word"])
    with pytest.raises(DataError, match="distinct"):
        read_conll(f, ["word", "word"])


def test_conll2000_counts(conll2000: Path) -> None:
    train = read_conll(conll2000 / "train.txt", ["word", "pos", "chunk"])
    test = read_conll(conll2000 / "test.txt", ["word", "pos", "chunk"])
    assert len(train) == 8936 and len(test) == 2012  # PROVENANCE.md
    assert train["word"].map(len).sum() == 211727 and test["word"].map(len).sum() == 47377
