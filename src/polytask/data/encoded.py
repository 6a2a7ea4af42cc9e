"""A split encoded once into column tensors; a batch is an index slice of them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

Batch = dict[str, torch.Tensor]
"""``categorical`` LongTensor[B, C], ``numeric`` FloatTensor[B, M], ``list:<column>``
LongTensor[B, L] per list-valued column (see `EncodedData.lists`) and ``label:<task>``
FloatTensor[B] per task. Missing labels are NaN."""

LABEL_PREFIX = "label:"
LIST_PREFIX = "list:"


def batch_lists(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The list-valued columns of a batch, by column name (``list:<column>`` keys)."""
    return {k[len(LIST_PREFIX) :]: v for k, v in batch.items() if k.startswith(LIST_PREFIX)}


@dataclass
class EncodedData:
    """Column tensors for a whole split.

    ``categorical`` is ``[N, C]`` int64 vocabulary indices, ``numeric`` ``[N, M]`` float32
    (scaled values then missing indicators), ``labels[task]`` ``[N]`` float32 with NaN for
    "no label" (class index for multiclass).

    ``lists[column]`` holds a list-valued column (a list feature, a behaviour sequence, or
    any per-row sequence of ids such as a sentence's words) as a padded int64 ``[N, L]``:
    row ``i``'s values are ``lists[column][i, :n_i]`` in their order, and every position
    after them is 0, the padding index. Values are vocabulary (or hash bucket) indices from
    2 (1 is "unknown"), so no value is 0 and a row's length is ``(row != 0).sum()``; an empty
    list or a missing cell is a row of zeros. ``L`` is fixed per column (the fitted
    ``max_len``), so splits and chunks concatenate and a batch is a plain row slice. Padded
    rather than flat values plus offsets: selecting shuffled rows is then one gather, as for
    every other column, and pooling reads ``[B, L]`` directly (measured in docs/features.md).
    """

    categorical: torch.Tensor
    numeric: torch.Tensor
    labels: dict[str, torch.Tensor]
    lists: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.categorical.shape[0])

    def _map(self, f: Callable[[torch.Tensor], torch.Tensor]) -> EncodedData:
        return EncodedData(
            categorical=f(self.categorical),
            numeric=f(self.numeric),
            labels={k: f(v) for k, v in self.labels.items()},
            lists={k: f(v) for k, v in self.lists.items()},
        )

    def select(self, index: torch.Tensor | slice) -> EncodedData:
        """Rows at ``index``: one gather per column for a tensor of indices, views (no copy)
        for a slice."""
        return self._map(lambda t: t[index])

    @staticmethod
    def concat(parts: list[EncodedData]) -> EncodedData:
        """Rows of ``parts`` one after another (same columns and tasks)."""
        return EncodedData(
            categorical=torch.cat([p.categorical for p in parts]),
            numeric=torch.cat([p.numeric for p in parts]),
            labels={k: torch.cat([p.labels[k] for p in parts]) for k in parts[0].labels},
            lists={k: torch.cat([p.lists[k] for p in parts]) for k in parts[0].lists},
        )

    def to(self, device: torch.device | str) -> EncodedData:
        return self._map(lambda t: t.to(device))

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` as a batch of views (no copy)."""
        return {
            "categorical": self.categorical[start:stop],
            "numeric": self.numeric[start:stop],
            **{LIST_PREFIX + k: v[start:stop] for k, v in self.lists.items()},
            **{LABEL_PREFIX + k: v[start:stop] for k, v in self.labels.items()},
        }

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Batches in order, or shuffled when a generator is given.

        Shuffling gathers the whole split once by a permutation, then every batch is a
        contiguous view: no per-row Python and no per-sample collate."""
        data = self
        if generator is not None:
            data = self.select(
                torch.randperm(len(self), generator=generator).to(self.categorical.device)
            )
        for start in range(0, len(data), batch_size):
            yield data.slice(start, start + batch_size)

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


def data_fingerprint(splits: Mapping[str, EncodedData], *, extra: str = "") -> str:
    """A hash of the encoded tensors of every split, in order (one pass over the data), and
    of ``extra`` (what stands in for data that is not in memory)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(extra.encode())
    for name, data in splits.items():
        columns = {"categorical": data.categorical, "numeric": data.numeric}
        columns.update({LIST_PREFIX + k: v for k, v in data.lists.items()})
        columns.update({LABEL_PREFIX + k: v for k, v in sorted(data.labels.items())})
        for column, tensor in columns.items():
            array = tensor.detach().cpu().contiguous().numpy()
            h.update(f"{name}/{column}/{array.dtype}/{array.shape}".encode())
            h.update(array.tobytes() if array.size else b"")
    return h.hexdigest()
