"""The model base (:mod:`lepton_spark.models.base`): full-objective gradients of every model type,
``forward_local`` against an independent dense numpy computation on a hand-sized graph, ``fit``'s
determinism per seed, ``fit_precomputed`` against a full fit, and the row context's memo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.models import create_model
from lepton_spark.models.base import Context

from .model_helpers import (
    _dense_ops,
    _random_fitted,
    _softmax,
    assert_grad_close,
    hand_graph,
    tiny_graph,
)

MODEL_GRAD_CASES = [
    ("gcn", {"hidden": 5, "bias": True, "dropout": 0.3}),
    ("gcn", {"hidden": [8, 4], "bias": False, "dropout": 0.0, "weight_decay_on": "weights"}),
    ("sage", {"hidden": 4, "dropout": 0.3}),
    ("sage", {"hidden": [7], "normalize": True, "dropout": 0.2, "weight_decay_on": "all"}),
    ("sgc", {"K": 2}),
    ("sign", {"hops": 2, "hidden": 4, "dropout": 0.3, "input_dropout": 0.2}),
    ("appnp", {"K": 5, "alpha": 0.2, "hidden": 5, "dropout": 0.3}),
]


@pytest.mark.parametrize(("mtype", "hp"), MODEL_GRAD_CASES)
def test_model_gradients(mtype: str, hp: dict[str, Any]) -> None:
    A, X, y = tiny_graph(seed=5)
    model = create_model(mtype, feature_norm="none", weight_decay=0.05, **hp)
    ctx = model._prepare(A, X)
    layers = model._build_layers(model._input_dim(ctx), 3)
    rng = np.random.default_rng(0)
    params: dict[str, np.ndarray] = {}
    for lay in layers:
        params.update(lay.init(rng))
    for k in params:
        params[k] = params[k] + rng.normal(scale=0.2, size=params[k].shape)
    rows = np.array([0, 2, 3, 5, 7])

    def f() -> float:
        return model._loss_and_grads(params, layers, ctx, y, rows, np.random.default_rng(9))[0]

    _, grads, _ = model._loss_and_grads(params, layers, ctx, y, rows, np.random.default_rng(9))
    assert set(grads) == set(params)
    for k, v in params.items():
        assert_grad_close(grads[k], f, v, n_check=8)


def test_appnp_precomputed_gradients_skip_propagation() -> None:
    _, X, y = tiny_graph(seed=6)
    model = create_model("appnp", K=5, hidden=4, dropout=0.0, feature_norm="none")
    ctx = model._row_context(X)
    layers = model._build_layers(6, 3)
    params: dict[str, np.ndarray] = {}
    for lay in layers:
        params.update(lay.init(np.random.default_rng(0)))
    rows = np.arange(9)
    _, grads, _ = model._loss_and_grads(params, layers, ctx, y, rows, None)
    f = lambda: model._loss_and_grads(params, layers, ctx, y, rows, None)[0]  # noqa: E731
    for k, v in params.items():
        assert_grad_close(grads[k], f, v, n_check=6)


def test_forward_local_matches_dense_reference() -> None:
    A, X = hand_graph()
    P, M = _dense_ops(A)
    Xn = X / X.sum(axis=1, keepdims=True)
    As = sp.csr_matrix(A)
    relu = lambda z: np.maximum(z, 0)  # noqa: E731

    m = _random_fitted("gcn", 4, 3, hidden=2, bias=True)
    p = m.params_
    H = relu(P @ Xn @ p["gc0.W"] + p["gc0.b"])
    want = _softmax(P @ H @ p["gc1.W"] + p["gc1.b"])
    got, hid = m.forward_local(As, X, return_hidden=True)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(hid, H, atol=1e-12)

    m = _random_fitted("sage", 4, 3, hidden=5, normalize=True)
    p = m.params_
    H = relu(np.hstack([Xn, M @ Xn]) @ p["sage0.W"] + p["sage0.b"])
    H = H / np.maximum(np.linalg.norm(H, axis=1, keepdims=True), 1e-12)
    want = _softmax(np.hstack([H, M @ H]) @ p["sage1.W"] + p["sage1.b"])
    got, hid = m.forward_local(As, X, return_hidden=True)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(hid, H, atol=1e-12)
    # mean of w * x_u over in-edges: 1 <- 0; 2 <- 1 (w=2), 0 (w=.5); 3 <- 2, 3 (self-loop); 4 isolated
    np.testing.assert_allclose(M[1:], [[1.0, 0, 0, 0, 0], [0.25, 1.0, 0, 0, 0], [0, 0, 0.5, 0.5, 0], [0] * 5])

    m = _random_fitted("sgc", 4, 3, K=3)
    p = m.params_
    Z = P @ P @ P @ Xn
    got, hid = m.forward_local(As, X, return_hidden=True)
    np.testing.assert_allclose(got, _softmax(Z @ p["linear.W"] + p["linear.b"]), atol=1e-12)
    np.testing.assert_allclose(hid, Z, atol=1e-12)

    m = _random_fitted("sign", 4, 3, hops=2, hidden=3)
    p = m.params_
    hops = [Xn, P @ Xn, P @ P @ Xn]
    Z = relu(np.hstack([h @ p[f"hops.W{i}"] for i, h in enumerate(hops)]) + p["hops.b"])
    got, hid = m.forward_local(As, X, return_hidden=True)
    np.testing.assert_allclose(got, _softmax(Z @ p["out.W"] + p["out.b"]), atol=1e-12)
    np.testing.assert_allclose(hid, Z, atol=1e-12)

    m = _random_fitted("appnp", 4, 3, K=4, alpha=0.2, hidden=3)
    p = m.params_
    H = relu(Xn @ p["dense0.W"] + p["dense0.b"]) @ p["dense1.W"] + p["dense1.b"]
    Z = H
    for _ in range(4):
        Z = 0.8 * P @ Z + 0.2 * H
    got, hid = m.forward_local(As, X, return_hidden=True)
    np.testing.assert_allclose(got, _softmax(Z), atol=1e-12)
    np.testing.assert_allclose(hid, Z, atol=1e-12)


def test_fit_is_deterministic_per_seed(cora_inputs) -> None:
    A, X, y, masks = cora_inputs
    a = create_model("gcn", epochs=15).fit(A, X, y, masks["train"], masks["val"], seed=3)
    b = create_model("gcn", epochs=15).fit(A, X, y, masks["train"], masks["val"], seed=3)
    c = create_model("gcn", epochs=15).fit(A, X, y, masks["train"], masks["val"], seed=4)
    for k in a.params_:
        np.testing.assert_array_equal(a.params_[k], b.params_[k])
    assert any(not np.array_equal(a.params_[k], c.params_[k]) for k in a.params_)
    assert a.history_ == b.history_


@pytest.mark.parametrize("mtype", ["sgc", "sign"])
def test_fit_precomputed_equals_full_fit(cora_inputs, mtype: str) -> None:
    """SGC/SIGN train on per-row inputs: training from only the labelled rows is the same problem."""
    A, X, y, masks = cora_inputs
    hp = {"hops": 2, "epochs": 20, "early_stopping": "none"} if mtype == "sign" else {}
    full = create_model(mtype, **hp).fit(A, X, y, masks["train"], masks["val"], seed=1)
    m2 = create_model(mtype, **hp)
    Z = m2.precompute_local(A, X)
    lab = np.flatnonzero(masks["train"] | masks["val"])
    m2.fit_precomputed(Z[lab], y[lab], masks["train"][lab], masks["val"][lab], seed=1, num_classes=7)
    for k in full.params_:
        np.testing.assert_allclose(m2.params_[k], full.params_[k], atol=1e-10)


def test_context_take_is_memoised() -> None:
    ctx = Context(np.arange(12.0).reshape(6, 2), None)
    rows = np.array([1, 4])
    assert ctx.take(rows) is ctx.take(rows.copy())


def test_sgc_propagates_large_dense_features_in_float32(monkeypatch) -> None:
    """From ``FLOAT32_MIN_NNZ`` stored entries on, SGC's K rounds over dense features run in float32
    (the Spark plans' precision): equal to the float64 dense reference to float32 precision, while
    below the threshold the result is the float64 one (1e-12)."""
    from lepton_spark.models import sgc as sgc_mod

    rng = np.random.default_rng(3)
    n = 60
    A = sp.random(n, n, density=0.08, random_state=3, format="csr")
    A = (A + A.T).tocsr()
    X = rng.normal(size=(n, 6))
    P, _ = _dense_ops(A.toarray())
    m = _random_fitted("sgc", 6, 3, K=2, feature_norm="none")
    want = P @ P @ X
    _, exact = m.forward_local(A, X, return_hidden=True)
    np.testing.assert_allclose(exact, want, atol=1e-12)
    monkeypatch.setattr(sgc_mod, "FLOAT32_MIN_NNZ", 1)
    _, fast = m.forward_local(A, X, return_hidden=True)
    assert fast.dtype == np.float64 and not np.array_equal(fast, exact)  # float32 rounds, float64 rows
    np.testing.assert_allclose(fast, want, rtol=1e-5, atol=1e-6)


def test_sgc_float32_fit_equals_the_fit_on_its_rounded_features(monkeypatch) -> None:
    """Above ``FLOAT32_MIN_NNZ`` the fit keeps the float32 propagated features and takes its rows in
    float64: the same weights, bit for bit, as fitting those features' float64 copy per row (the
    large path's ``fit_precomputed``), and a forward pass returns float64 embeddings."""
    from lepton_spark.models import sgc as sgc_mod
    from lepton_spark.models.normalize import sym_propagation

    monkeypatch.setattr(sgc_mod, "FLOAT32_MIN_NNZ", 1)
    rng = np.random.default_rng(11)
    n, d = 80, 5
    A = sp.random(n, n, density=0.06, random_state=11, format="csr")
    A = (A + A.T).tocsr()
    X = rng.normal(size=(n, d)) * 2 + 0.5  # mixed signs: auto resolves to standard
    y = rng.integers(0, 3, n)
    train, val = np.arange(n) < 40, (np.arange(n) >= 40) & (np.arange(n) < 60)
    m = create_model("sgc", K=2, epochs=30).fit(A, X, y, train, val, seed=2)
    assert m.feature_norm_ == "standard"
    ctx = m._prepare(A, X)
    assert ctx.x.dtype == np.float32
    # the reference: the same operands rounded to float32, K products, then float64 rows
    P = sym_propagation(A).astype(np.float32)
    Z = np.asarray((X - m.feature_mean_) / m.feature_scale_, dtype=np.float32)
    Z = P @ (P @ Z)
    np.testing.assert_array_equal(ctx.x, Z)
    ref = create_model("sgc", K=2, epochs=30)
    ref._set_feature_norm(m._feature_transform())
    lab = np.flatnonzero(train | val)
    ref.fit_precomputed(Z[lab].astype(np.float64), y[lab], train[lab], val[lab], seed=2, num_classes=3)
    for k in m.params_:
        np.testing.assert_array_equal(m.params_[k], ref.params_[k])
    _, hidden = m.forward_local(A, X, return_hidden=True)
    assert hidden.dtype == np.float64
    np.testing.assert_array_equal(hidden, Z.astype(np.float64))


def test_sgc_float32_path_for_sparse_features_centred_to_dense(monkeypatch) -> None:
    """Sparse features dense by content are centred by ``standard`` into a dense matrix: above
    ``FLOAT32_MIN_NNZ`` that matrix is propagated in float32 too (rounded float64 operands)."""
    from lepton_spark.models import sgc as sgc_mod
    from lepton_spark.models.normalize import sym_propagation

    monkeypatch.setattr(sgc_mod, "FLOAT32_MIN_NNZ", 1)
    rng = np.random.default_rng(12)
    n = 40
    A = sp.random(n, n, density=0.1, random_state=12, format="csr")
    X = sp.csr_matrix(rng.normal(size=(n, 4)) + 1.0)  # every entry non-zero: auto -> standard, centred
    m = create_model("sgc", K=2, epochs=5)
    m.resolve_feature_norm(X)
    assert m.feature_norm_ == "standard" and np.any(m.feature_mean_)
    ctx = m._prepare(A, X)
    assert isinstance(ctx.x, np.ndarray) and ctx.x.dtype == np.float32
    P = sym_propagation(A).astype(np.float32)
    Z = np.asarray((X.toarray() - m.feature_mean_) / m.feature_scale_, dtype=np.float32)
    np.testing.assert_array_equal(ctx.x, P @ (P @ Z))
