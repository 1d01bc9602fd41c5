"""The float32 plan twin (:mod:`lepton_spark.models.plan`: what ``forward_spark`` computes) against
``forward_local``: on a hand-sized graph with sparse ids, with both layer orders, and on Cora to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.models.plan import LocalOps

from .model_helpers import (
    ALL_TYPES,
    _random_fitted,
    hand_graph,
)


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_plan_twin_matches_local_on_hand_graph_with_sparse_ids(mtype: str) -> None:
    """The plan (what forward_spark runs) on arbitrary ids, isolated vertex and self-loops."""
    A, X = hand_graph()
    ids = np.array([40, 7, 13, 2, 99])
    hp = {"hidden": 3} if mtype in ("gcn", "sage", "appnp") else {"hidden": 2} if mtype == "sign" else {}
    for d_hidden in ([3], [6]) if mtype in ("gcn", "sage") else ([None],):
        if d_hidden[0] is not None:
            hp["hidden"] = d_hidden  # 3 < 4 = W first, 6 > 4 = propagate first
        m = _random_fitted(mtype, 4, 3, **hp)
        probs, hid = m.forward_local(sp.csr_matrix(A), X, return_hidden=True)
        tw = m.forward_twin(sp.csr_matrix(A), X, ids=ids)
        order = np.argsort(ids)
        np.testing.assert_array_equal(tw.ids, ids[order])
        np.testing.assert_allclose(tw.probs, probs[order], atol=1e-5)
        np.testing.assert_allclose(tw.embedding, hid[order], atol=1e-5)


def test_sign_plan_propagate_first_when_hidden_is_wide() -> None:
    A, X = hand_graph()
    m = _random_fitted("sign", 4, 3, hops=3, hidden=5)
    probs, hid = m.forward_local(sp.csr_matrix(A), X, return_hidden=True)
    tw = m.forward_twin(sp.csr_matrix(A), X)
    np.testing.assert_allclose(tw.probs, probs, atol=1e-5)
    np.testing.assert_allclose(tw.embedding, hid, atol=1e-5)


def test_sgc_plan_without_embedding_applies_weights_first() -> None:
    A, X = hand_graph()
    m = _random_fitted("sgc", 4, 3, K=2)
    calls: list[tuple[str, int]] = []

    class Spy(LocalOps):
        def propagate(self, table, edges, rounds, agg="sum"):
            calls.append(("propagate", table.x.shape[1]))
            return super().propagate(table, edges, rounds, agg)

    ops = Spy(sp.csr_matrix(A), X)
    emb, probs = m.forward_plan(ops, with_embedding=False)
    assert emb is None and calls == [("propagate", 3)]  # c=3 wide vectors move, not d=4
    np.testing.assert_allclose(ops.result(None, probs).probs, m.forward_local(sp.csr_matrix(A), X), atol=1e-6)


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_cora_plan_twin_float32_within_1e5(cora_trained, cora_inputs, mtype: str) -> None:
    """What forward_spark computes (float32 tables, weights per batch, normalisation inside) agrees with
    the float64 reference to 1e-5 on Cora for every model."""
    A, X, _, _ = cora_inputs
    model, _ = cora_trained[mtype]
    probs, hid = model.forward_local(A, X, return_hidden=True)
    tw = model.forward_twin(A, X)
    assert np.abs(tw.probs - probs).max() <= 1e-5
    assert np.abs(tw.embedding - hid).max() <= 1e-5
    assert tw.probs.dtype == np.float32
