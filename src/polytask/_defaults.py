"""Defaults that the CLI's help shows, kept free of heavy imports (``polytask --help`` reads
them without importing pandas or pyarrow)."""

CHUNK_ROWS = 65_536
"""Default rows per chunk when streaming a table (`predict_to`, ``polytask predict``): large
enough that per-chunk overhead is noise, small enough that a chunk of a wide table stays in the
tens of megabytes. Streamed training reads its Parquet file in chunks of the same size by
default (``training.stream.chunk_rows``)."""

BUFFER_ROWS = 1_000_000
"""Default size of streamed training's shuffle buffer (``training.stream.buffer_rows``)."""
