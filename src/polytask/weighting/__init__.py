"""How task losses become one update. Adding a weighting is one module plus one line here."""

from __future__ import annotations

from polytask.weighting._dwa import DWA, DWAParams
from polytask.weighting._random import RLW
from polytask.weighting._simple import Sum, Weighted, WeightedParams
from polytask.weighting._uncertainty import Uncertainty, UncertaintyParams
from polytask.weighting.base import NoParams, Weighting, WeightingEntry

WEIGHTINGS: dict[str, WeightingEntry] = {
    "sum": WeightingEntry(NoParams, Sum),
    "weighted": WeightingEntry(WeightedParams, Weighted),
    "uncertainty": WeightingEntry(UncertaintyParams, Uncertainty),
    "dwa": WeightingEntry(DWAParams, DWA),
    "rlw": WeightingEntry(NoParams, RLW),
}

__all__ = [
    "DWA",
    "RLW",
    "WEIGHTINGS",
    "DWAParams",
    "NoParams",
    "Sum",
    "Uncertainty",
    "UncertaintyParams",
    "Weighted",
    "WeightedParams",
    "Weighting",
    "WeightingEntry",
]
