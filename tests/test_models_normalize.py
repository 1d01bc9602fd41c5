"""Propagation and feature normalisation conventions (:mod:`lepton_spark.models.normalize`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lepton_spark.models.normalize import mean_propagation, normalize_features, sym_propagation

from .model_helpers import (
    _dense_ops,
    hand_graph,
)


def test_normalisation_conventions() -> None:
    A, X = hand_graph()
    P, M = _dense_ops(A)
    np.testing.assert_allclose(sym_propagation(sp.csr_matrix(A)).toarray(), P, atol=1e-15)
    np.testing.assert_allclose(mean_propagation(sp.csr_matrix(A)).toarray(), M, atol=1e-15)
    Xz = np.vstack([X, np.zeros(4)])
    out = normalize_features(sp.csr_matrix(Xz), "row").toarray()
    np.testing.assert_allclose(out[:5].sum(axis=1), 1.0)
    assert not out[5].any()
    np.testing.assert_allclose(normalize_features(Xz, "row"), out)
    assert normalize_features(Xz, "none") is not Xz
