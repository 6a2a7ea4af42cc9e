"""What `MultiTaskModel.fit` trains on: the training (and validation) data of its three input
modes, read, encoded once and checked, as one `TrainingData`.

- ``frames``: one table (DataFrame, CSV or Parquet path, or `EncodedData` with the
  preprocessor that encoded it); with one table per task and joint training they are stacked
  (each row's missing labels are masked).
- ``per_task``: one table per task, kept apart (``training.schedule: alternate``).
- ``stream``: a Parquet file, directory or glob read chunk by chunk, never whole
  (``training.stream``); under torchrun each rank reads its own row groups.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import pandas as pd
import torch
import torch.distributed as dist

from polytask.data import EncodedData, Preprocessor, data_fingerprint, read_table
from polytask.data.features import FeaturesConfig
from polytask.data.io import is_parquet
from polytask.data.stream import (
    FitCounts,
    ShardedStream,
    SplitShard,
    StreamingBatches,
    fit_preprocessor_streaming,
)
from polytask.errors import ConfigError, DataError, closest
from polytask.tasks import TaskSpec
from polytask.training.schedules import AlternateBatches, JointBatches
from polytask.training.settings import TrainingConfig


@dataclass
class TrainingData:
    """A fit's data, encoded by ``preprocessor`` and on the training device."""

    kind: Literal["frames", "per_task", "stream"]
    preprocessor: Preprocessor
    splits: dict[str, EncodedData]
    """``{"train": data}`` (frames), ``{task: data}`` (per_task), ``{}`` (stream)."""
    validation: EncodedData | None
    streamed: StreamingBatches | None = None
    shard: tuple[int, int] | None = None
    """``(rank, world_size)`` when torchrun's ranks stream their own row groups."""
    validation_shard: SplitShard | None = None
    """With sharded streaming and a Parquet validation set: this rank's part of it
    (``validation`` is then None: no rank holds it whole)."""

    @property
    def validation_split(self) -> EncodedData | SplitShard | None:
        """What each epoch is validated on."""
        return self.validation if self.validation_shard is None else self.validation_shard

    @property
    def rows(self) -> int:
        if self.streamed is not None:
            return len(self.streamed)
        return sum(len(d) for d in self.splits.values())

    def batches(self, training: TrainingConfig) -> JointBatches | AlternateBatches | ShardedStream:
        """The resumable batch source of the fit's epochs, shuffled from ``training.seed``."""
        if self.streamed is not None and self.shard is not None:
            rank, world = self.shard
            return ShardedStream(
                self.streamed,
                batch_size=training.batch_size,
                seed=training.seed,
                rank=rank,
                world_size=world,
            )
        generator = torch.Generator().manual_seed(training.seed)
        if self.kind == "per_task":
            return AlternateBatches(
                self.splits,
                batch_size=training.batch_size,
                sampling=training.task_sampling,
                generator=generator,
            )
        rows = self.streamed if self.streamed is not None else self.splits["train"]
        return JointBatches(rows, batch_size=training.batch_size, generator=generator)

    def fingerprint(self) -> str:
        """What a checkpoint checks it resumes on, and torchrun's ranks compare: a hash of
        every split in memory; a streamed file, too large to hash, is stood for by its fitted
        preprocessor and rows."""
        splits = dict(self.splits)
        if self.validation is not None:
            splits["validation"] = self.validation
        streamed = ""
        if self.streamed is not None:
            parts = [self.preprocessor.state_dict(), self.rows]
            if self.validation_shard is not None:
                parts.append(self.validation_shard.rows)
            streamed = json.dumps(parts, sort_keys=True)
        return data_fingerprint(splits, extra=streamed)

    def warn_constant_labels(self, tasks: Mapping[str, TaskSpec]) -> None:
        """Warn, before training, of a binary task whose training labels are all one class:
        it cannot learn to separate them, and its AUC is undefined."""
        for name, spec in tasks.items():
            if spec.type != "binary" or self.streamed is not None:
                continue
            parts = [d.labels[name] for d in self.splits.values() if name in d.labels]
            labels = torch.cat(parts) if parts else torch.zeros(0)
            labels = labels[~torch.isnan(labels)]
            if len(labels) and bool((labels == labels[0]).all()):
                value = float(labels[0])
                warnings.warn(
                    f"task {name!r}: every training label is {value:g} "
                    f"({'positive' if value else 'negative'}); it cannot learn to tell the "
                    "classes apart and its AUC is undefined",
                    stacklevel=3,
                )


def read_training_data(
    train: Any,
    validation: Any | None,
    *,
    features: FeaturesConfig,
    tasks: dict[str, TaskSpec],
    training: TrainingConfig,
    device: torch.device,
    preprocessor: Preprocessor | None = None,
    distributed: bool = False,
) -> TrainingData:
    """Read, fit the preprocessor on and encode ``train`` (then ``validation`` with it), in
    the mode ``training`` and the type of ``train`` say; errors name what does not fit."""
    if training.stream is not None and not isinstance(train, str | os.PathLike):
        found = "mapping {task: table}" if isinstance(train, Mapping) else type(train).__name__
        raise ConfigError(
            "training.stream reads the training set from a Parquet file: pass its path "
            f"(fit('train.parquet', ...)); found a {found}"
        )
    if training.schedule == "alternate" and not isinstance(train, Mapping):
        raise ConfigError(
            "training.schedule: alternate needs one dataset per task: pass "
            "fit({task: table, ...}); found a single table"
        )
    # a fitted preprocessor is used as it is (data.preprocessor, or the one that encoded an
    # EncodedData); without one it is fitted on the training set
    prefitted = preprocessor is not None and preprocessor.fitted
    if isinstance(train, EncodedData) or prefitted:
        pre = _encoded_by(preprocessor, features, tasks)
    else:
        pre = Preprocessor(features=features, tasks=tasks)
    kind: Literal["frames", "per_task", "stream"] = "frames"
    streamed = None
    shard: tuple[int, int] | None = None
    if isinstance(train, Mapping):
        frames = task_tables(train, list(tasks), "training set")
        columns = features.columns
        if not prefitted:
            pre.fit(
                pd.concat(
                    [f[[c for c in columns if c in f.columns]] for f in frames.values()],
                    ignore_index=True,
                ),
                label_frames=frames,
            )
        splits = {
            t: pre.transform(f, labels=True, only=t, what=f"training set of {t!r}")
            for t, f in frames.items()
        }
        if training.schedule == "alternate":
            kind = "per_task"
        else:  # stacked: the training set is held once
            splits = {"train": EncodedData.concat(list(splits.values()))}
        train_columns = set().union(*(set(f.columns) for f in frames.values()))
    elif training.stream is not None:  # out-of-core (data/stream.py)
        if distributed:
            shard = (dist.get_rank(), dist.get_world_size())
        if not prefitted:  # sharded: every rank counts its row groups, the counts are merged
            gather = None if shard is None else gather_counts
            chunk_rows = training.stream.chunk_rows
            fit_preprocessor_streaming(
                pre, train, chunk_rows=chunk_rows, shard=shard or (0, 1), gather=gather
            )
        streamed = StreamingBatches.from_config(train, pre, training.stream, device)
        kind, splits, train_columns = "stream", {}, set(pre.train_columns_)
    elif isinstance(train, EncodedData):  # encoded by the given preprocessor
        splits, train_columns = {"train": train}, set(pre.train_columns_)
    else:
        frame = read_table(train, what="training set")
        encode = pre.transform if prefitted else pre.fit_transform
        splits = {"train": encode(frame, labels=True, what="training set")}
        train_columns = set(frame.columns)
    valid, valid_shard = None, None
    if shard is not None and training.stream is not None and _parquet_path(validation):
        # sharded evaluation: each rank reads its row groups of the validation set
        valid_shard = SplitShard(
            validation,
            pre,
            rank=shard[0],
            world_size=shard[1],
            chunk_rows=training.stream.chunk_rows,
        )
    elif validation is not None:
        valid = encode_validation(validation, pre, list(tasks), train_columns).to(device)
    splits = {k: d.to(device) for k, d in splits.items()}
    return TrainingData(kind, pre, splits, valid, streamed, shard, valid_shard)


def _parquet_path(value: Any) -> TypeGuard[str | os.PathLike[str]]:
    """Whether ``value`` is the path of a Parquet file, directory or glob."""
    if not isinstance(value, str | os.PathLike):
        return False
    text = str(value)
    return any(c in text for c in "*?[") or is_parquet(value)


def gather_counts(mine: FitCounts) -> list[FitCounts]:
    """Every rank's fit counts, in rank order, on every rank."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    return parts


def task_tables(data: Mapping[str, Any], tasks: list[str], what: str) -> dict[str, pd.DataFrame]:
    """One table per task, read, in the order of ``tasks``."""
    unknown = [str(k) for k in data if k not in tasks]
    if unknown:
        raise DataError(
            f"{what}: datasets given for unknown task(s) {unknown}; the tasks are {tasks}"
            f"{closest(unknown[0], tasks)}"
        )
    missing = [t for t in tasks if t not in data]
    if missing:
        raise DataError(f"{what}: one dataset per task is needed; none given for {missing}")
    return {t: read_table(data[t], what=f"{what} of task {t!r}") for t in tasks}


def encode_validation(
    validation: Any, preprocessor: Preprocessor, tasks: list[str], train_columns: set[Any]
) -> EncodedData:
    what = "validation set"
    if isinstance(validation, EncodedData):
        data = validation
    elif isinstance(validation, Mapping):
        frames = task_tables(validation, tasks, what)
        parts = [
            preprocessor.transform(f, labels=True, only=t, what=f"{what} of task {t!r}")
            for t, f in frames.items()
        ]
        data = EncodedData.concat(parts)
    else:
        df = read_table(validation, what=what)
        extra = [str(c) for c in df.columns if c not in train_columns]
        if extra:
            raise DataError(
                f"{what} has column(s) {extra} that the training set and the schema lack; "
                "the two splits must come from the same table"
            )
        data = preprocessor.transform(df, labels=True, what=what)
    if len(data) == 0:
        raise DataError(f"{what} is empty: expected at least one row, found 0")
    return data


def _encoded_by(
    preprocessor: Preprocessor | None, features: FeaturesConfig, tasks: dict[str, TaskSpec]
) -> Preprocessor:
    """The fitted preprocessor given to ``fit`` (it encoded a training set passed as
    `EncodedData`, or it is reused as it is), checked to be fitted on the model's features
    and tasks."""
    if preprocessor is None or not preprocessor.fitted:
        raise ConfigError(
            "fit: an encoded training set needs the fitted Preprocessor that encoded it: "
            "fit(encoded, preprocessor=...)"
        )
    if preprocessor.features != features or preprocessor.specs != tasks:
        raise ConfigError(
            "fit: the preprocessor was built for other features or tasks "
            f"({sorted(preprocessor.tasks)}) than the model's ({sorted(tasks)})"
        )
    return preprocessor
