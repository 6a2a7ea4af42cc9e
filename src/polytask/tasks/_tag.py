"""Tag tasks: one class per token of a sentence (part-of-speech tags, IOB chunk tags).

Labels are lists of tag strings, one per token, encoded ``[N, T]`` (NaN at padding and for
sentences without the label, -1 for a tag not seen in training); the network's output is
``[B, T, C]`` logits, exactly 0 at padding positions (the sequence models zero them, which
is how `predict_columns` finds each sentence's length). The loss is cross-entropy averaged
over real tokens. Metrics: token ``accuracy``; for IOB tags (every tag ``O`` or ``B-``/``I-``
/``E-`` plus a type) chunk ``precision``, ``recall`` and ``f1`` as CoNLL's conlleval counts
them (`polytask._chunks`), NaN for other tags. IOB tags are decoded as a sequence (`decode`:
the most likely tags the IOB2 scheme allows, ``I-X`` only after ``B-X`` or ``I-X``), other
tags token by token; predictions and every metric but ``loss`` read the decoded tags.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polytask._chunks import chunk_scores, is_iob
from polytask.tasks._multiclass import Multiclass
from polytask.tasks.base import log_softmax
from polytask.tasks.spec import TaskSpec

UNSEEN = -1.0
"""The label of a tag not seen in training: no logit can predict it."""


def iob_transitions(tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(allowed [C, C], may_start [C])`` of IOB2 tags: ``I-X`` only after ``B-X`` or
    ``I-X``, never first; everything else anywhere."""
    inside = [t[2:] if t.startswith("I-") else None for t in tags]
    allowed = np.ones((len(tags), len(tags)), dtype=bool)
    for j, kind in enumerate(inside):
        if kind is not None:
            allowed[:, j] = [t in (f"B-{kind}", f"I-{kind}") for t in tags]
    return allowed, np.asarray([k is None for k in inside])


def decode(output: np.ndarray, tags: list[str], lengths: np.ndarray) -> np.ndarray:
    """The tag index per token ``[N, T]``: for IOB tags the sequence of highest summed
    log-probability among those the IOB2 scheme allows (Viterbi, every sentence at once);
    for other tags the argmax of each token."""
    if not tags or not is_iob(tags) or output.shape[1] == 0:
        return np.asarray(output.argmax(axis=2))
    allowed, may_start = iob_transitions(tags)
    penalty = np.where(allowed, 0.0, -np.inf)
    logp = np.stack([log_softmax(o) for o in output])  # [N, T, C]
    n, t, c = logp.shape
    score = np.where(may_start, logp[:, 0], -np.inf)
    back = np.zeros((n, t, c), dtype=np.int64)
    for k in range(1, t):
        cand = score[:, :, None] + penalty[None]  # [N, from, to]
        best = cand.argmax(axis=1)
        step = np.take_along_axis(cand, best[:, None, :], axis=1)[:, 0] + logp[:, k]
        live = (k < lengths)[:, None]
        back[:, k] = np.where(live, best, np.arange(c))
        score = np.where(live, step, score)
    path = np.zeros((n, t), dtype=np.int64)
    path[:, -1] = score.argmax(axis=1)
    for k in range(t - 1, 0, -1):
        path[:, k - 1] = back[np.arange(n), k, path[:, k]]
    return path


class Tag(Multiclass):
    """Multiclass per token: the loss (cross-entropy), its key, the estimate's width and the
    primary metric (accuracy) are `Multiclass`'s, as the loss layer flattens a batch's
    sentences to their real tokens (``[M, C]`` logits, ``[M]`` tags)."""

    name: ClassVar[str] = "tag"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1", "precision", "recall", "loss")
    higher_is_better: ClassVar[frozenset[str]] = frozenset(
        {"accuracy", "f1", "precision", "recall"}
    )
    class_noun: ClassVar[str] = "tag(s)"
    per_token: ClassVar[bool] = True

    def check(self, spec: TaskSpec) -> None:
        super().check(spec)
        if spec.sample_weight is not None:
            raise ValueError("sample_weight weighs rows; a tag task's loss is over tokens")

    def encode(
        self,
        series: pd.Series,
        spec: TaskSpec,
        *,
        where: str,
        classes: list[str] | None = None,
        strings: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``[N, longest list]`` tag indices from a column of tag lists (None: a sentence
        without the label, all NaN)."""
        assert classes is not None
        rows = series.tolist()
        width = max((len(r) for r in rows if r is not None), default=0)
        y = np.full((len(rows), width), np.nan, dtype=np.float32)
        labelled = [i for i, r in enumerate(rows) if r is not None]
        lengths = np.asarray([len(rows[i]) for i in labelled], dtype=np.int64)
        flat = [str(t) for i in labelled for t in rows[i]]
        codes = pd.Index(classes, dtype=object).get_indexer(pd.Index(flat, dtype=object))
        r = np.repeat(np.asarray(labelled, dtype=np.int64), lengths)
        p = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        y[r, p] = np.where(codes < 0, UNSEEN, codes)
        return y

    def link(self, output: Tensor) -> Tensor:
        return torch.softmax(output, dim=-1)

    def predict_columns(
        self, name: str, spec: TaskSpec, output: np.ndarray, classes: list[str] | None = None
    ) -> dict[str, Any]:
        """One column of tag lists, each as long as its sentence: the positions before the
        trailing all-zero (padding) outputs."""
        assert classes is not None
        names = np.asarray(classes, dtype=object)
        output = output.reshape(output.shape[0], -1, len(classes))
        real = (output != 0).any(axis=2)
        lengths = np.where(real.any(axis=1), real.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
        best = decode(output, classes, lengths)
        return {name: [names[best[i, : lengths[i]]].tolist() for i in range(len(output))]}

    def evaluate(
        self, spec: TaskSpec, output: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> dict[str, float]:
        """From whole sentences: ``output [N, T, C]``, ``y [N, T]`` (NaN: padding or no label,
        -1: a tag not seen in training, always wrong). ``loss`` is the mean cross-entropy of
        the tokens whose tag has a logit."""
        real = ~np.isnan(y)
        yi = np.where(real, y, 0).astype(np.int64)
        guess = decode(output, list(spec.tags), real.sum(axis=1))
        right = (guess == yi) & real & (yi >= 0)
        known = real & (yi >= 0)
        logp = log_softmax(output[known])
        picked = np.take_along_axis(logp, yi[known][:, None], axis=1)[:, 0]
        result = {
            "loss": float(-picked.mean()) if picked.size else 0.0,
            "accuracy": float(right.sum() / real.sum()),
        }
        tags = list(spec.tags)
        if tags and is_iob(tags):
            names = np.asarray([*tags, "O"], dtype=object)  # -1 (unseen) reads as O
            sentences = [i for i in range(len(y)) if real[i].any()]
            n = real.sum(axis=1)
            gold = [names[yi[i, : n[i]]].tolist() for i in sentences]
            pred = [names[guess[i, : n[i]]].tolist() for i in sentences]
            result.update(chunk_scores(gold, pred))
        else:
            result.update({"precision": float("nan"), "recall": float("nan"), "f1": float("nan")})
        return result
