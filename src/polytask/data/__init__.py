"""Schema-driven tables -> tensors: reading, the fitted preprocessor, encoded splits."""

from polytask.data.encoded import (
    LABEL_PREFIX,
    LIST_PREFIX,
    Batch,
    EncodedData,
    batch_lists,
    data_fingerprint,
)
from polytask.data.io import read_table, write_table
from polytask.data.preprocess import MISSING_INDEX, UNKNOWN_INDEX, Preprocessor

__all__ = [
    "LABEL_PREFIX",
    "LIST_PREFIX",
    "MISSING_INDEX",
    "UNKNOWN_INDEX",
    "Batch",
    "EncodedData",
    "Preprocessor",
    "batch_lists",
    "data_fingerprint",
    "read_table",
    "write_table",
]
