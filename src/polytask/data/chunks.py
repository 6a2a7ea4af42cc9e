"""Tables too large for memory: read a CSV/Parquet file in chunks, write one chunk at a time.

Reading keeps one chunk (plus Parquet's current row group) in memory; writing appends each
chunk to a temporary file that replaces the target only when every chunk is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from polytask._atomic import atomic_path
from polytask._defaults import CHUNK_ROWS as CHUNK_ROWS  # defined there for the CLI's help
from polytask.data.io import output_format, table_format
from polytask.errors import DataError


def read_chunks(
    path: str | os.PathLike[str], *, columns: Sequence[str], chunk_rows: int, what: str = "data"
) -> Iterator[pd.DataFrame]:
    """The file's rows in order, ``chunk_rows`` at a time, with only the ``columns`` it has
    (a missing one is left for the schema check to name). Parquet is read batch by batch
    with ``ParquetFile.iter_batches``; CSV with pandas' chunked reader. An empty file
    gives one empty chunk, so callers still see the columns. The format is told as by
    `read_table` (`polytask.data.io.table_format`); a Parquet directory is read as a
    dataset, file after file."""
    if chunk_rows < 1:
        raise DataError(f"{what}: chunk_rows must be at least 1, found {chunk_rows}")
    source = Path(path)
    kind = table_format(source, what=what)
    try:
        if kind == "parquet":
            yield from _parquet_chunks(source, columns, chunk_rows)
        else:
            wanted = set(columns)
            sep = "\t" if kind == "tsv" else ","
            with pd.read_csv(
                source,
                sep=sep,
                chunksize=chunk_rows,
                usecols=lambda c: c in wanted,
                low_memory=False,  # no DtypeWarning within a chunk
            ) as reader:
                empty = True
                for frame in reader:
                    empty = False
                    yield frame.reset_index(drop=True)
            if empty:
                yield pd.read_csv(source, sep=sep, usecols=lambda c: c in wanted, nrows=0)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"{what}: could not read {str(source)!r}: {err}") from None


def _parquet_chunks(
    source: Path, columns: Sequence[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    batches: Iterator[pa.RecordBatch]
    if source.is_dir():
        # a dataset of files, as pandas.read_parquet reads it (hive partitions included);
        # without read-ahead, memory stays at about one batch
        dataset = ds.dataset(source, format="parquet", partitioning="hive")
        schema = dataset.schema
        present = [c for c in columns if c in schema.names]
        batches = dataset.to_batches(
            columns=present, batch_size=chunk_rows, batch_readahead=0, fragment_readahead=0
        )
    else:
        # With pre_buffer the reader keeps every range it has read until it is done, so
        # memory grows with the rows read (about 30 MB per million rows here, pyarrow 26).
        parquet = pq.ParquetFile(source, pre_buffer=False)
        schema = parquet.schema_arrow
        present = [c for c in columns if c in schema.names]
        batches = parquet.iter_batches(batch_size=chunk_rows, columns=present)
    empty = True
    for batch in batches:
        if batch.num_rows == 0:
            continue
        empty = False
        yield batch.to_pandas()
    if empty:
        yield schema.empty_table().select(present).to_pandas()


@contextmanager
def write_chunks(path: str | os.PathLike[str]) -> Iterator[Callable[[pd.DataFrame], None]]:
    """Yield ``write(frame)``, appending frames to a CSV or Parquet file (by extension) that
    appears at ``path`` only once the block ends without error. Write at least one frame
    (possibly empty) so the file has its columns."""
    target = Path(path)
    kind = output_format(target)
    with atomic_path(target) as tmp, ExitStack() as stack:
        if kind == "csv":
            handle = stack.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
            # the header goes with the first frame (a frame's CSV is never empty)
            yield lambda frame: frame.to_csv(handle, header=handle.tell() == 0, index=False)
        else:
            writer: pq.ParquetWriter | None = None

            def append(frame: pd.DataFrame) -> None:
                # each frame becomes row group(s) of one file; the first frame fixes the schema
                nonlocal writer
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(tmp, table.schema))
                elif table.schema != writer.schema:
                    table = table.cast(writer.schema)
                writer.write_table(table)

            yield append
