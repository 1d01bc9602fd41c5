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

    Parameters
    ----------
    model_type : str
        The model's name (case-insensitive), a key of :data:`MODEL_TYPES`.
    **hparams
        Hyper-parameters of that model class (``hidden``, ``K``, ``epochs``, ``feature_norm``, ...);
        the rest keep their defaults. ``model.get_params()`` lists them all.

    Returns
    -------
    GraphModel
        An unfitted model: ``fit`` trains it on the driver, ``forward_local`` / ``forward_spark`` apply it.

    Raises
    ------
    ValueError
        For an unknown model type or hyper-parameter name (the message lists the valid ones).

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> from lepton_spark.models import create_model
    >>> model = create_model("sgc", K=2, epochs=5)
    >>> model.model_type, model.get_params()["K"]
    ('sgc', 2)
    >>> A = sp.csr_matrix(np.roll(np.eye(4), 1, axis=1))  # a directed 4-cycle
    >>> probs = model.fit(A, np.eye(4), np.array([0, 1, 0, 1]), np.ones(4, bool)).forward_local(A, np.eye(4))
    >>> probs.shape, bool(np.allclose(probs.sum(axis=1), 1.0))
    ((4, 2), True)
    >>> create_model("gat")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model type 'gat'; expected one of gcn, sage, sgc, ...
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
