"""How task losses become one update. Adding a weighting is one module plus one line here."""

from __future__ import annotations

from polytask.weighting._aggregators import (
    Aggregation,
    AlignedMTLParams,
    CAGradParams,
    ConFIGParams,
    ExcessMTLParams,
    FairGradParams,
    GradDropParams,
    GradVacParams,
    MGDAParams,
    NashMTLParams,
    ProjectionParams,
    aligned_mtl,
    cagrad,
    conflict_free,
    dualproj,
    excess_mtl,
    fairgrad,
    graddrop,
    gradvac,
    imtl_g,
    mgda,
    nash_mtl,
    pcgrad,
    rgw,
    upgrad,
)
from polytask.weighting._dwa import DWA, DWAParams
from polytask.weighting._gradnorm import GradNorm, GradNormParams
from polytask.weighting._random import RLW
from polytask.weighting._simple import Sum, Weighted, WeightedParams
from polytask.weighting._uncertainty import Uncertainty, UncertaintyParams
from polytask.weighting.base import (
    GradientUpdate,
    GradientWeighting,
    NoParams,
    Weighting,
    WeightingEntry,
)

WEIGHTINGS: dict[str, WeightingEntry] = {
    # losses -> scalar
    "sum": WeightingEntry(NoParams, Sum),
    "weighted": WeightingEntry(WeightedParams, Weighted),
    "uncertainty": WeightingEntry(UncertaintyParams, Uncertainty),
    "dwa": WeightingEntry(DWAParams, DWA),
    "rlw": WeightingEntry(NoParams, RLW),
    # losses + gradients of the last shared layer
    "gradnorm": WeightingEntry(GradNormParams, GradNorm),
    # per-task gradients of the shared parameters -> one direction (torchjd aggregators)
    "upgrad": WeightingEntry(ProjectionParams, upgrad),
    "dualproj": WeightingEntry(ProjectionParams, dualproj),
    "mgda": WeightingEntry(MGDAParams, mgda),
    "pcgrad": WeightingEntry(NoParams, pcgrad),
    "cagrad": WeightingEntry(CAGradParams, cagrad),
    "imtl_g": WeightingEntry(NoParams, imtl_g),
    "aligned_mtl": WeightingEntry(AlignedMTLParams, aligned_mtl),
    "nash_mtl": WeightingEntry(NashMTLParams, nash_mtl),
    "gradvac": WeightingEntry(GradVacParams, gradvac),
    "graddrop": WeightingEntry(GradDropParams, graddrop),
    "config": WeightingEntry(ConFIGParams, conflict_free),
    "fairgrad": WeightingEntry(FairGradParams, fairgrad),
    "excess_mtl": WeightingEntry(ExcessMTLParams, excess_mtl),
    "rgw": WeightingEntry(NoParams, rgw),
}

__all__ = [
    "DWA",
    "RLW",
    "WEIGHTINGS",
    "Aggregation",
    "DWAParams",
    "GradNorm",
    "GradNormParams",
    "GradientUpdate",
    "GradientWeighting",
    "NoParams",
    "Sum",
    "Uncertainty",
    "UncertaintyParams",
    "Weighted",
    "WeightedParams",
    "Weighting",
    "WeightingEntry",
]
