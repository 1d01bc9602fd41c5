"""Model registry: ``create_model(type, **hparams)`` for the five node models and the link model (gae)."""

from __future__ import annotations

import logging
from typing import Any

from lepton_spark.models.appnp import APPNP
from lepton_spark.models.base import GraphModel
from lepton_spark.models.gae import GAE
from lepton_spark.models.gcn import GCN
from lepton_spark.models.sage import GraphSAGE
from lepton_spark.models.sgc import SGC
from lepton_spark.models.sign import SIGN

log = logging.getLogger(__name__)

MODEL_TYPES: dict[str, type[GraphModel]] = {
    "gcn": GCN,
    "sage": GraphSAGE,
    "sgc": SGC,
    "sign": SIGN,
    "appnp": APPNP,
    "gae": GAE,
}


def create_model(model_type: str, **hparams: Any) -> GraphModel:
    """Instantiate an unfitted model by type name (``gcn | sage | sgc | sign | appnp | gae``).

    Unknown types and unknown hyper-parameter names raise ``ValueError`` naming the valid choices.
    """
    key = str(model_type).lower()
    if key not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
    cls = MODEL_TYPES[key]
    allowed = cls._param_names()
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for {key}; allowed: {', '.join(allowed)}")
    return cls(**hparams)
