"""A split encoded once into column tensors; a batch is an index slice of them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

Batch = dict[str, torch.Tensor]
"""``categorical`` LongTensor[B, C], ``numeric`` FloatTensor[B, M] and ``label:<task>``
FloatTensor[B] per task. Missing labels are NaN."""

LABEL_PREFIX = "label:"


@dataclass
class EncodedData:
    """Column tensors for a whole split.

    ``categorical`` is ``[N, C]`` int64 vocabulary indices, ``numeric`` ``[N, M]`` float32
    (scaled values then missing indicators), ``labels[task]`` ``[N]`` float32 with NaN for
    "no label" (class index for multiclass).
    """

    categorical: torch.Tensor
    numeric: torch.Tensor
    labels: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.categorical.shape[0])

    def select(self, index: torch.Tensor | slice) -> EncodedData:
        """Rows at ``index``: one gather per column for a tensor of indices, views (no copy)
        for a slice."""
        return EncodedData(
            categorical=self.categorical[index],
            numeric=self.numeric[index],
            labels={k: v[index] for k, v in self.labels.items()},
        )

    @staticmethod
    def concat(parts: list[EncodedData]) -> EncodedData:
        """Rows of ``parts`` one after another (same columns and tasks)."""
        return EncodedData(
            categorical=torch.cat([p.categorical for p in parts]),
            numeric=torch.cat([p.numeric for p in parts]),
            labels={k: torch.cat([p.labels[k] for p in parts]) for k in parts[0].labels},
        )

    def to(self, device: torch.device | str) -> EncodedData:
        return EncodedData(
            categorical=self.categorical.to(device),
            numeric=self.numeric.to(device),
            labels={k: v.to(device) for k, v in self.labels.items()},
        )

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` as a batch of views (no copy)."""
        batch: Batch = {
            "categorical": self.categorical[start:stop],
            "numeric": self.numeric[start:stop],
        }
        for k, v in self.labels.items():
            batch[LABEL_PREFIX + k] = v[start:stop]
        return batch

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
        columns.update({f"label:{k}": v for k, v in sorted(data.labels.items())})
        for column, tensor in columns.items():
            array = tensor.detach().cpu().contiguous().numpy()
            h.update(f"{name}/{column}/{array.dtype}/{array.shape}".encode())
            h.update(array.tobytes() if array.size else b"")
    return h.hexdigest()
