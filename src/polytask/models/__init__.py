"""The model zoo. Adding a model is one module plus one registry line below."""

from __future__ import annotations

from polytask.models._adatt import AdaTT, AdaTTParams
from polytask.models._aitm import AITM, AITMParams, check_aitm_heads
from polytask.models._cross_stitch import CrossStitch, CrossStitchParams
from polytask.models._dselect_k import DSelectK, DSelectKParams
from polytask.models._escm2 import ESCM2, ESCM2Params, check_escm2_heads, counterfactual_risk
from polytask.models._esmm import ESMM, ESMMParams, check_esmm_heads, ctcvr_logit
from polytask.models._home import HoME, HoMEParams, check_home_heads
from polytask.models._moe import GatedExperts, MoEParams, mmoe, moe
from polytask.models._pepnet import PEPNet, PEPNetParams, check_pepnet_features
from polytask.models._ple import PLE, CGCParams, PLEParams, cgc
from polytask.models._sequence import (
    BiLSTM,
    BiLSTMParams,
    Transformer,
    TransformerParams,
    check_layers,
)
from polytask.models._shared_bottom import SharedBottomParams, SharedMLPNet, shared_bottom
from polytask.models._stem import STEM, STEMParams
from polytask.models.base import Head, ModelEntry, MultiTaskNet, Representation, TowerParams

MODELS: dict[str, ModelEntry] = {
    "shared_bottom": ModelEntry(SharedBottomParams, shared_bottom),
    "moe": ModelEntry(MoEParams, moe),
    "mmoe": ModelEntry(MoEParams, mmoe),
    "ple": ModelEntry(PLEParams, PLE),
    "cgc": ModelEntry(CGCParams, cgc),
    "esmm": ModelEntry(ESMMParams, ESMM, check_heads=check_esmm_heads),
    "adatt": ModelEntry(AdaTTParams, AdaTT),
    "stem": ModelEntry(STEMParams, STEM),
    "pepnet": ModelEntry(PEPNetParams, PEPNet, check_features=check_pepnet_features),
    "home": ModelEntry(HoMEParams, HoME, check_heads=check_home_heads),
    "aitm": ModelEntry(AITMParams, AITM, check_heads=check_aitm_heads),
    "cross_stitch": ModelEntry(CrossStitchParams, CrossStitch),
    "dselect_k": ModelEntry(DSelectKParams, DSelectK),
    "escm2": ModelEntry(ESCM2Params, ESCM2, check_heads=check_escm2_heads),
    "bilstm": ModelEntry(BiLSTMParams, BiLSTM, check_heads=check_layers, sequence=True),
    "transformer": ModelEntry(
        TransformerParams, Transformer, check_heads=check_layers, sequence=True
    ),
}

__all__ = [
    "AITM",
    "ESCM2",
    "ESMM",
    "MODELS",
    "PLE",
    "STEM",
    "AITMParams",
    "AdaTT",
    "AdaTTParams",
    "BiLSTM",
    "BiLSTMParams",
    "CGCParams",
    "CrossStitch",
    "CrossStitchParams",
    "DSelectK",
    "DSelectKParams",
    "ESCM2Params",
    "ESMMParams",
    "GatedExperts",
    "Head",
    "HoME",
    "HoMEParams",
    "MoEParams",
    "ModelEntry",
    "MultiTaskNet",
    "PEPNet",
    "PEPNetParams",
    "PLEParams",
    "Representation",
    "STEMParams",
    "SharedBottomParams",
    "SharedMLPNet",
    "TowerParams",
    "Transformer",
    "TransformerParams",
    "cgc",
    "counterfactual_risk",
    "ctcvr_logit",
    "mmoe",
    "moe",
    "shared_bottom",
]
