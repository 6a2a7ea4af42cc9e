"""How task losses become one update. Adding a weighting is one module plus one line here."""

from __future__ import annotations

from polytask.weighting._aggregators import (
    IMTLG,
    MGDA,
    RGW,
    Aggregation,
    AlignedMTL,
    AlignedMTLParams,
    CAGrad,
    CAGradParams,
    ConFIG,
    ConFIGParams,
    DualProj,
    ExcessMTL,
    ExcessMTLParams,
    FairGrad,
    FairGradParams,
    GradDrop,
    GradDropParams,
    GradVac,
    GradVacParams,
    MGDAParams,
    NashMTL,
    NashMTLParams,
    PCGrad,
    ProjectionParams,
    UPGrad,
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
    "upgrad": WeightingEntry(ProjectionParams, UPGrad),
    "dualproj": WeightingEntry(ProjectionParams, DualProj),
    "mgda": WeightingEntry(MGDAParams, MGDA),
    "pcgrad": WeightingEntry(NoParams, PCGrad),
    "cagrad": WeightingEntry(CAGradParams, CAGrad),
    "imtl_g": WeightingEntry(NoParams, IMTLG),
    "aligned_mtl": WeightingEntry(AlignedMTLParams, AlignedMTL),
    "nash_mtl": WeightingEntry(NashMTLParams, NashMTL),
    "gradvac": WeightingEntry(GradVacParams, GradVac),
    "graddrop": WeightingEntry(GradDropParams, GradDrop),
    "config": WeightingEntry(ConFIGParams, ConFIG),
    "fairgrad": WeightingEntry(FairGradParams, FairGrad),
    "excess_mtl": WeightingEntry(ExcessMTLParams, ExcessMTL),
    "rgw": WeightingEntry(NoParams, RGW),
}

__all__ = [
    "DWA",
    "IMTLG",
    "MGDA",
    "RGW",
    "RLW",
    "WEIGHTINGS",
    "Aggregation",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DWAParams",
    "DualProj",
    "ExcessMTL",
    "FairGrad",
    "GradDrop",
    "GradNorm",
    "GradNormParams",
    "GradVac",
    "GradientUpdate",
    "GradientWeighting",
    "NashMTL",
    "NoParams",
    "PCGrad",
    "Sum",
    "UPGrad",
    "Uncertainty",
    "UncertaintyParams",
    "Weighted",
    "WeightedParams",
    "Weighting",
    "WeightingEntry",
]
