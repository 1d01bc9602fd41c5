"""The model registry (:mod:`lepton_spark.models.registry`): ``create_model`` and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.models import MODEL_TYPES, create_model

from .model_helpers import (
    ALL_TYPES,
)


def test_create_model_registry() -> None:
    assert set(MODEL_TYPES) == set(ALL_TYPES) | {"gae"}  # gae: the link model (tests/test_gae.py)
    for t in ALL_TYPES:
        m = create_model(t)
        assert m.model_type == t
        again = create_model(t, **json.loads(json.dumps(m.get_params())))
        assert again.get_params() == m.get_params()
    with pytest.raises(ValueError, match="unknown model type"):
        create_model("gat")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        create_model("gcn", hiden=16)
    with pytest.raises(ValueError, match="feature_norm"):
        create_model("sgc", feature_norm="col")
    with pytest.raises(RuntimeError, match="not fitted"):
        create_model("gcn").forward_local(sp.eye(3, format="csr"), np.eye(3))
