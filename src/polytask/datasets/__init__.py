"""Datasets for multi-task learning: paper generators and loaders, as pandas DataFrames.

- ``mmoe_synthetic``: the two regression tasks of controlled correlation of the MMoE paper.
- ``load_census_income``: the UCI Census-Income (KDD) file, with ``CENSUS_CATEGORICAL``,
  ``CENSUS_NUMERIC`` and ``CENSUS_TASKS`` describing its features and the MMoE tasks.
- ``load_movielens_100k``: MovieLens-100K, one row per rating with the user's earlier movies
  as a sequence and the genres as a list, split by time within each user (``split_by_column``).
- ``split_frame``: a seeded train/validation/test split.
- ``funnel_synthetic``: an impression -> click -> conversion funnel with selection bias (ESMM);
  ``funnel_requests``: the same grouped into requests, with order values (decisions).
"""

from polytask.datasets._census import (
    CENSUS_CATEGORICAL,
    CENSUS_NUMERIC,
    CENSUS_TASKS,
    load_census_income,
)
from polytask.datasets._funnel import funnel_requests, funnel_synthetic
from polytask.datasets._movielens import (
    MOVIELENS_GENRES,
    MOVIELENS_TASKS,
    load_movielens_100k,
    split_by_column,
)
from polytask.datasets._split import split_frame
from polytask.datasets._synthetic import mmoe_synthetic

__all__ = [
    "CENSUS_CATEGORICAL",
    "CENSUS_NUMERIC",
    "CENSUS_TASKS",
    "MOVIELENS_GENRES",
    "MOVIELENS_TASKS",
    "funnel_requests",
    "funnel_synthetic",
    "load_census_income",
    "load_movielens_100k",
    "mmoe_synthetic",
    "split_by_column",
    "split_frame",
]
