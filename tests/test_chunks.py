"""Chunk scores against what conlleval prints for hand-made IOB sequences."""

from __future__ import annotations

import pytest

from polytask._chunks import chunk_counts, chunk_scores, chunks, is_iob


def test_i_without_b_starts_a_chunk() -> None:
    # conlleval: O -> I-X starts a chunk, so a leading I-NP is a chunk like B-NP
    assert chunks(["I-NP", "I-NP", "O", "B-VP"]) == {(0, 1, "NP"), (3, 3, "VP")}
    gold = [["B-NP", "I-NP", "O", "B-VP"]]
    guess = [["I-NP", "I-NP", "O", "B-VP"]]
    assert chunk_counts(gold, guess) == (2, 2, 2)
    assert chunk_scores(gold, guess) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_i_of_another_type_ends_and_starts() -> None:
    assert chunks(["B-NP", "I-VP", "I-VP"]) == {(0, 0, "NP"), (1, 2, "VP")}
    assert chunk_counts([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-VP", "I-VP"]]) == (0, 1, 2)


def test_b_inside_a_chunk_splits_it() -> None:
    assert chunk_counts([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-NP", "B-NP"]]) == (0, 1, 2)
    assert chunk_scores([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-NP", "B-NP"]])["f1"] == 0.0


def test_a_sentence_boundary_ends_chunks() -> None:
    # the same tags in one sentence would be one chunk; across a boundary they are two
    assert chunk_counts([["B-NP", "I-NP"]], [["B-NP", "I-NP"]]) == (1, 1, 1)
    assert chunk_counts([["B-NP"], ["I-NP"]], [["B-NP"], ["I-NP"]]) == (2, 2, 2)


def test_conlleval_example() -> None:
    # conlleval on this pair prints: found 2 phrases; correct: 1; precision 50.00%,
    # recall 50.00%, FB1 50.00 (the MISC chunk's left boundary differs)
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    guess = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    assert chunk_scores(gold, guess) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_partial_scores() -> None:
    # gold: NP(0-1) VP(2) PP(3) NP(4); guess: NP(0-1) VP(2) NP(3-4): 2 correct of 4 and 3
    gold = [["B-NP", "I-NP", "B-VP", "B-PP", "B-NP"]]
    guess = [["B-NP", "I-NP", "B-VP", "B-NP", "I-NP"]]
    s = chunk_scores(gold, guess)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_nothing_guessed_is_zero_not_nan() -> None:
    assert chunk_scores([["B-NP"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="2 gold tags and 1 guessed"):
        chunk_counts([["B-NP", "O"]], [["O"]])


def test_is_iob() -> None:
    assert is_iob(["O", "B-NP", "I-VP"])
    assert not is_iob(["NN", "B-NP"])
    assert not is_iob(["B-"])


def test_iob_decoding_is_the_best_allowed_sequence() -> None:
    import itertools

    import numpy as np

    from polytask.tasks._tag import decode, iob_transitions

    tags = ["B-NP", "B-VP", "I-NP", "I-VP", "O"]
    allowed, may_start = iob_transitions(tags)
    rng = np.random.default_rng(0)
    out = rng.normal(size=(6, 4, 5)) * 2
    lengths = np.array([4, 3, 1, 4, 2, 4])
    got = decode(out, tags, lengths)
    z = out - out.max(axis=2, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
    for i, n in enumerate(lengths):
        best, best_path = -np.inf, None
        for path in itertools.product(range(5), repeat=int(n)):  # brute force
            ok = may_start[path[0]] and all(allowed[a, b] for a, b in itertools.pairwise(path))
            score = sum(logp[i, k, c] for k, c in enumerate(path))
            if ok and score > best:
                best, best_path = score, path
        assert tuple(got[i, :n]) == best_path
    # tags that are not IOB chunks are decoded token by token
    assert (decode(out, ["NN", "VB", "DT", "IN", "JJ"], lengths) == out.argmax(axis=2)).all()
