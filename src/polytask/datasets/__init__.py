"""Datasets for multi-task learning: paper generators and loaders, as pandas DataFrames.

- ``mmoe_synthetic``: the two regression tasks of controlled correlation of the MMoE paper.
- ``load_census_income``: the UCI Census-Income (KDD) file, with ``CENSUS_CATEGORICAL``,
  ``CENSUS_NUMERIC`` and ``CENSUS_TASKS`` describing its features and the MMoE tasks.
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
from polytask.datasets._split import split_frame
from polytask.datasets._synthetic import mmoe_synthetic

__all__ = [
    "CENSUS_CATEGORICAL",
    "CENSUS_NUMERIC",
    "CENSUS_TASKS",
    "funnel_requests",
    "funnel_synthetic",
    "load_census_income",
    "mmoe_synthetic",
    "split_frame",
]
