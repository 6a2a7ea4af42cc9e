"""Sentences -> padded token tensors: the preprocessor of sequence models and ``tag`` tasks.

A table has one row per sentence; ``features.tokens.column`` holds its tokens (a list, a
tuple or an array: a DataFrame of lists, a Parquet list column or the ``conll`` loader's
output) and each tag task's label column a list of tags, one per token. A split encodes to
one `EncodedData` whose ``categorical`` is ``[N, T, 2 + max_chars]`` int64 (``T`` its longest
sentence): per token its word index, its shape index and its character indices (none
without a char CNN); index 0 is padding, 1 unknown, known values start at 2. ``numeric`` is
``[N, 0]``; a tag task's labels are ``[N, T]`` float32 class indices, NaN at padding and for
sentences without that label, -1 for a tag never seen in training (counted wrong by the
metrics). So batching, shuffling, checkpoints and alternate training carry sentences the way
they carry rows.

- words: the lowercased form; forms seen at least ``min_freq`` times in training, sorted.
- shapes: the capitalisation pattern (`word_shape`: ``Confidence`` -> ``Xx``, ``1,000`` ->
  ``d,d``), every one seen in training.
- characters: every character seen in training (original case).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from polytask.data.encoded import EncodedData
from polytask.data.features import TokenFeatures
from polytask.data.preprocess import UNKNOWN_INDEX, Preprocessor, _category_codes
from polytask.errors import DataError
from polytask.tasks import task_type

PAD_INDEX = 0
WORD, SHAPE, CHARS = 0, 1, 2
"""Where a token's word index, shape index and first character index sit in the last
dimension of ``categorical``."""


def word_shape(word: str) -> str:
    """The capitalisation pattern: upper -> ``X``, lower -> ``x``, digit -> ``d``, others kept,
    runs of one class collapsed (``McDonald's`` -> ``XxXx'x``)."""
    out: list[str] = []
    for ch in word:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def sentence_lists(series: pd.Series, column: str, what: str, *, labels: bool) -> list[Any]:
    """A list column as Python values: a list of strings per row; for a label column a row
    without a list (None, NaN) is a sentence without that label (None). Anything else is a
    `DataError` naming the row."""
    values = series.tolist()
    out: list[Any] = []
    for i, v in enumerate(values):
        if isinstance(v, list | tuple | np.ndarray):
            items = [str(x) for x in v]
            if not items:
                raise DataError(f"{what}: sentence {i}: column {column!r} is an empty list")
            out.append(items)
        elif labels and (v is None or (isinstance(v, float) and np.isnan(v))):
            out.append(None)
        else:
            raise DataError(
                f"{what}: sentence {i}: column {column!r} holds {type(v).__name__} "
                f"{str(v)[:40]!r}; expected a list with one "
                f"{'tag' if labels else 'token'} per token (one row per sentence)"
            )
    return out


class SentencePreprocessor(Preprocessor):
    """`Preprocessor` for ``features.tokens``: ``Preprocessor(features=..., tasks=...)``
    builds one when the features section has ``tokens``. Its ``vocabularies_`` are
    ``words``, ``shapes`` and ``chars``; `cardinalities` their table sizes in that order."""

    @property
    def token_features(self) -> TokenFeatures:
        assert self.features.tokens is not None
        return self.features.tokens

    # ------------------------------------------------------------------------------ fit
    def _fit(
        self,
        df: pd.DataFrame,
        label_frames: Mapping[str, pd.DataFrame] | None,
        what: str,
        *,
        encode: bool,
    ) -> EncodedData | None:
        if len(df) == 0:
            raise DataError(f"{what} is empty: expected at least one sentence, found 0")
        tf = self.token_features
        label_frames = self._fit_frames(df, label_frames, [tf.column], what)
        sentences = sentence_lists(df[tf.column], tf.column, what, labels=False)
        tokens = [w for s in sentences for w in s]
        counts = pd.Series([w.lower() for w in tokens]).value_counts()
        words = sorted(counts[counts >= tf.min_freq].index.tolist())
        shapes = sorted({word_shape(w) for w in tokens})
        chars = sorted({c for w in set(tokens) for c in w[: tf.max_chars]})
        classes: dict[str, list[str]] = {}
        for name, spec in self.tasks.items():
            col = self.label_column(name)
            frame = label_frames[name]
            found = sentence_lists(frame[col], col, f"{what} of task {name!r}", labels=True)
            if all(s is None for s in found):
                raise DataError(
                    f"{what}: task {name!r}: label column {col!r} has no values (all "
                    f"{len(frame)} sentences are missing); a task needs labelled sentences"
                )
            classes[name] = task_type(spec).fit_classes(
                name, col, [t for s in found if s is not None for t in s]
            )
        self.vocabularies_ = {"words": words, "shapes": shapes, "chars": chars}
        self.classes_ = classes
        self.train_columns_ = [str(c) for c in df.columns]
        self._set_tags()
        return self.transform(df, labels=True, what=what) if encode else None

    def _set_tags(self) -> None:
        self.tasks = {
            name: replace(spec, tags=tuple(self.classes_[name])) if name in self.classes_ else spec
            for name, spec in self.specs.items()
        }

    # ------------------------------------------------------------------------------ encode
    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: words, shapes, characters (each + padding + unknown)."""
        vocabularies = self._check_fitted()
        return [len(vocabularies[k]) + 2 for k in ("words", "shapes", "chars")]

    def transform(
        self,
        df: pd.DataFrame,
        *,
        labels: bool | None = None,
        what: str = "data",
        only: str | None = None,
    ) -> EncodedData:
        """Encode a table of sentences (see the module's docstring); ``labels`` and ``only``
        as `Preprocessor.transform`. A sentence whose tag list is not as long as its token
        list is a `DataError` naming the sentence."""
        vocabularies = self._check_fitted()
        tf = self.token_features
        self._require_columns(df, [tf.column], what)
        sentences = sentence_lists(df[tf.column], tf.column, what, labels=False)
        n = len(sentences)
        lengths = np.asarray([len(s) for s in sentences], dtype=np.int64)
        width = int(lengths.max()) if n else 0
        rows = np.repeat(np.arange(n), lengths)
        positions = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tokens = [w for s in sentences for w in s]
        depth = CHARS + (tf.max_chars if tf.char_filters > 0 else 0)
        cat = np.zeros((n, width, depth), dtype=np.int64)
        none = np.zeros(len(tokens), bool)  # a token is never missing
        for at, of, vocab in ((WORD, str.lower, "words"), (SHAPE, word_shape, "shapes")):
            values = np.asarray([of(w) for w in tokens], dtype=object)
            cat[rows, positions, at] = _category_codes(values, none, vocabularies[vocab])
        if tf.char_filters > 0:
            forms, inverse = np.unique(np.asarray(tokens, dtype=object), return_inverse=True)
            table = np.zeros((len(forms), tf.max_chars), dtype=np.int64)
            known = {c: j + 2 for j, c in enumerate(vocabularies["chars"])}
            for k, form in enumerate(forms):
                ids = [known.get(c, UNKNOWN_INDEX) for c in form[: tf.max_chars]]
                table[k, : len(ids)] = ids
            cat[rows, positions, CHARS:] = table[inverse]
        label_tensors: dict[str, torch.Tensor] = {}
        if labels is not False:
            for name, spec in self.tasks.items():
                col = self.label_column(name)
                y = np.full((n, width), np.nan, dtype=np.float32)
                if (only is not None and name != only) or col not in df.columns:
                    if labels and only in (None, name):
                        self._require_columns(df, [col], what)
                else:
                    where = f"{what}: task {name!r}: label column {col!r}"
                    tags = sentence_lists(df[col], col, where, labels=True)
                    for i, (s, t) in enumerate(zip(sentences, tags, strict=True)):
                        if t is not None and len(t) != len(s):
                            start = " ".join(s[:5]) + (" ..." if len(s) > 5 else "")
                            raise DataError(
                                f"{what}: sentence {i} ({start!r}; rows counted from 0) has "
                                f"{len(s)} tokens in column "
                                f"{tf.column!r} but {len(t)} tags in column {col!r} (task "
                                f"{name!r}); expected one tag per token"
                            )
                    encoded = task_type(spec).encode(
                        pd.Series(tags, dtype=object), spec, where=where,
                        classes=self.classes_[name],
                    )  # fmt: skip
                    y[:, : encoded.shape[1]] = encoded
                label_tensors[name] = torch.from_numpy(y)
        return EncodedData(
            categorical=torch.from_numpy(cat),
            numeric=torch.zeros((n, 0), dtype=torch.float32),
            labels=label_tensors,
        )

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        del state["hash_buckets"], state["list_lengths"]  # a sentence model has neither
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> SentencePreprocessor:
        try:
            vocabularies = {
                k: [str(x) for x in state["vocabularies"][k]] for k in ("words", "shapes", "chars")
            }
            classes = {k: [str(x) for x in v] for k, v in state["classes"].items()}
            train_columns = [str(c) for c in state.get("train_columns", [])]
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"preprocessor state of a sentence model is malformed: {err!r}"
            ) from None
        if set(classes) != set(self.specs):
            raise DataError(
                f"preprocessor state has classes for {sorted(classes)}, the config expects "
                f"{sorted(self.specs)}"
            )
        self.vocabularies_ = vocabularies
        self.classes_ = classes
        self.train_columns_ = train_columns
        self._set_tags()
        return self
