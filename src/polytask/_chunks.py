"""Chunk-level scores of IOB tag sequences, as the CoNLL ``conlleval`` script computes them.

A chunk is a run of tokens with one type; ``conlleval`` decides where chunks start and end
from each tag's prefix (``B``, ``I``, ``E``, ``O``) and type, comparing it with the
previous tag. An ``I-X`` that follows ``O`` or a tag of another type starts a chunk (so
``I-`` without ``B-`` is a chunk of its own), and a sentence boundary ends every open chunk.
A predicted chunk is correct when a gold chunk has the same type and both boundaries. Helper
without a layer of its own: used by the ``tag`` task type and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_ENDS = {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}
_STARTS = {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's ``endOfChunk``: whether the chunk open at the previous token ends there."""
    if (prev, tag) in _ENDS or prev in ("[", "]"):
        return True
    return prev not in ("O", ".") and prev_type != kind


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    """conlleval's ``startOfChunk``: whether a chunk starts at this token."""
    if (prev, tag) in _STARTS or tag in ("[", "]"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def chunks(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """The chunks of one sentence's tags, as ``(first, last, type)`` token positions."""
    found: set[tuple[int, int, str]] = set()
    prev, prev_type, start = "O", "", -1
    for i, tag in enumerate([*tags, "O"]):  # the boundary: an O after the last token
        prefix, _, kind = tag.partition("-")  # at the first "-", as conlleval: "O" -> O, ""
        starts = i < len(tags) and _starts(prev, prefix, prev_type, kind)
        if start >= 0 and (starts or _ends(prev, prefix, prev_type, kind)):
            found.add((start, i - 1, prev_type))
            start = -1
        if starts:
            start = i
        prev, prev_type = prefix, kind
    return found


def chunk_counts(
    gold: Iterable[Sequence[str]], guess: Iterable[Sequence[str]]
) -> tuple[int, int, int]:
    """``(correct, gold chunks, guessed chunks)`` over sentences (pairs of equal length)."""
    correct = found_gold = found_guess = 0
    for g, p in zip(gold, guess, strict=True):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags and {len(p)} guessed tags")
        a, b = chunks(g), chunks(p)
        correct += len(a & b)
        found_gold += len(a)
        found_guess += len(b)
    return correct, found_gold, found_guess


def chunk_scores(gold: Iterable[Sequence[str]], guess: Iterable[Sequence[str]]) -> dict[str, float]:
    """conlleval's overall ``precision``, ``recall`` and ``f1`` (FB1) as fractions: 0 when
    there is nothing to divide by, as conlleval prints."""
    correct, found_gold, found_guess = chunk_counts(gold, guess)
    precision = correct / found_guess if found_guess else 0.0
    recall = correct / found_gold if found_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def is_iob(tags: Iterable[str]) -> bool:
    """Whether every tag is ``O`` or ``B-``/``I-``/``E-`` plus a type: tags whose chunks
    mean something."""
    return all(t == "O" or (t[:2] in ("B-", "I-", "E-") and len(t) > 2) for t in tags)
