"""Defaults that the CLI's help shows, kept free of heavy imports (``polytask --help`` reads
them without importing pandas or pyarrow)."""

CHUNK_ROWS = 65_536
"""Default rows per chunk when streaming a table (`predict_to`, ``polytask predict``): large
enough that per-chunk overhead is noise, small enough that a chunk of a wide table stays in the
tens of megabytes."""
