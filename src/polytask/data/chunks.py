"""Tables too large for memory: read a CSV/Parquet file in chunks, write one chunk at a time.

Reading keeps one chunk (plus Parquet's current row group) in memory; writing appends each
chunk to a temporary file that replaces the target only when every chunk is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from polytask._atomic import atomic_path
from polytask.errors import DataError

CHUNK_ROWS = 65_536
"""Default rows per chunk: large enough that per-chunk overhead is noise, small enough that
a chunk of a wide table stays in the tens of megabytes."""


def _kind(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith((".parquet", ".pq")):
        return "parquet"
    if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".txt", ".gz")):
        return "tsv" if ".tsv" in suffixes else "csv"
    raise DataError(
        f"cannot tell the format of {str(path)!r}; expected a .csv, .csv.gz or .parquet file"
    )


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a Parquet file (by extension)."""
    return Path(path).name.lower().endswith((".parquet", ".pq"))


def read_chunks(
    path: str | os.PathLike[str], *, columns: Sequence[str], chunk_rows: int, what: str = "data"
) -> Iterator[pd.DataFrame]:
    """The file's rows in order, ``chunk_rows`` at a time, with only the ``columns`` it has
    (a missing one is left for the schema check to name). Parquet is read batch by batch
    with ``ParquetFile.iter_batches``; CSV with pandas' chunked reader. An empty file
    gives one empty chunk, so callers still see the columns."""
    if chunk_rows < 1:
        raise DataError(f"{what}: chunk_rows must be at least 1, found {chunk_rows}")
    source = Path(path)
    if not source.exists():
        raise DataError(f"{what}: file {str(source)!r} does not exist")
    kind = _kind(source)
    try:
        if kind == "parquet":
            # With pre_buffer the reader keeps every range it has read until it is done, so
            # memory grows with the rows read (about 30 MB per million rows here, pyarrow 26).
            dataset = pq.ParquetFile(source, pre_buffer=False)
            present = [c for c in columns if c in dataset.schema_arrow.names]
            empty = True
            for batch in dataset.iter_batches(batch_size=chunk_rows, columns=present):
                empty = False
                yield batch.to_pandas()
            if empty:
                yield dataset.schema_arrow.empty_table().select(present).to_pandas()
        else:
            wanted = set(columns)
            sep = "\t" if kind == "tsv" else ","
            with pd.read_csv(
                source, sep=sep, chunksize=chunk_rows, usecols=lambda c: c in wanted
            ) as reader:
                empty = True
                for frame in reader:
                    empty = False
                    yield frame.reset_index(drop=True)
            if empty:
                yield pd.read_csv(source, sep=sep, usecols=lambda c: c in wanted, nrows=0)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"{what}: could not read {str(source)!r}: {err}") from None


class _CsvAppender:
    def __init__(self, path: Path) -> None:
        self.handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.header = True

    def __call__(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.handle, header=self.header, index=False)
        self.header = False

    def close(self) -> None:
        self.handle.close()


class _ParquetAppender:
    """Each frame becomes row group(s) of one file; the first frame fixes the schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def __call__(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@contextmanager
def write_chunks(path: str | os.PathLike[str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Yield ``write(frame)``, appending frames to a CSV or Parquet file (by extension) that
    appears at ``path`` only once the block ends without error. Write at least one frame
    (possibly empty) so the file has its columns."""
    target = Path(path)
    name = target.name.lower()
    if not name.endswith((".csv", ".parquet", ".pq")):
        raise DataError(f"output {str(target)!r}: expected a .csv or .parquet file name")
    with atomic_path(target) as tmp:
        append = _CsvAppender(tmp) if name.endswith(".csv") else _ParquetAppender(tmp)
        try:
            yield append
        finally:
            append.close()
