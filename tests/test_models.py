"""Models without Spark: gradients vs finite differences, forward_local vs an independent dense numpy
computation, the float32 plan twin vs forward_local on Cora (the Spark plan's arithmetic), precomputed
training, single-seed Cora accuracy, determinism, and the weights artifact."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.models import MODEL_TYPES, create_model
from lepton_spark.models.artifact import (
    CARD_NAME,
    NPZ_NAME,
    card_digest,
    data_fingerprint,
    load_model,
    save_model,
    split_hash,
)
from lepton_spark.models.base import Context
from lepton_spark.models.layers import (
    Dense,
    Dropout,
    GraphConv,
    GraphOperators,
    HopLinear,
    L2Normalize,
    PPRPropagation,
    ReLU,
    SageMean,
    l2_penalty,
    softmax_cross_entropy,
)
from lepton_spark.models.normalize import mean_propagation, normalize_features, sym_propagation
from lepton_spark.models.plan import LocalOps
from lepton_spark.models.precompute import train_from_ops
from lepton_spark.models.trainer import evaluate, train

ALL_TYPES = ("gcn", "sage", "sgc", "sign", "appnp")


# --------------------------------------------------------------------------------------------------
# tiny graphs
# --------------------------------------------------------------------------------------------------
def tiny_graph(seed: int = 0, n: int = 9, d: int = 6, c: int = 3, directed: bool = True):
    """Random weighted graph with a self-loop, an isolated vertex and (if directed) asymmetric edges."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n - 1):  # vertex n-1 is isolated
        for v in rng.choice(n - 1, size=2, replace=False):
            rows.append(u)
            cols.append(int(v))
    rows.append(2)
    cols.append(2)  # an explicit self-loop
    w = rng.uniform(0.5, 2.0, len(rows))
    A = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
    A.sum_duplicates()
    if not directed:
        A = (A + A.T).tocsr()
    X = np.abs(rng.normal(size=(n, d)))
    y = rng.integers(0, c, n)
    return A, X, y


def numeric_grad(f, arr: np.ndarray, idx: tuple[int, ...], eps: float = 1e-6) -> float:
    old = arr[idx]
    arr[idx] = old + eps
    fp = f()
    arr[idx] = old - eps
    fm = f()
    arr[idx] = old
    return (fp - fm) / (2 * eps)


def assert_grad_close(analytic: np.ndarray, f, arr: np.ndarray, n_check: int = 12, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    flat = list(np.ndindex(arr.shape))
    picks = [flat[i] for i in rng.choice(len(flat), size=min(n_check, len(flat)), replace=False)]
    for idx in picks:
        num = numeric_grad(f, arr, idx)
        np.testing.assert_allclose(analytic[idx], num, rtol=1e-5, atol=1e-7, err_msg=f"entry {idx}")


# --------------------------------------------------------------------------------------------------
# layer gradient checks
# --------------------------------------------------------------------------------------------------
def _check_layer(layer, x, graph=None, need_dx: bool = True, training: bool = False, seed: int = 0,
                 params: dict | None = None) -> None:
    rng = np.random.default_rng(seed)
    if params is None:
        params = layer.init(rng)
        for k in params:
            params[k] = params[k] + rng.normal(scale=0.3, size=params[k].shape)  # non-zero biases too

    def run():
        return layer.forward(params, x, graph=graph, training=training, rng=np.random.default_rng(42))

    out, _ = run()
    G = rng.normal(size=np.shape(out))

    def f() -> float:
        return float((run()[0] * G).sum())

    _, cache = run()
    grads: dict[str, np.ndarray] = {}
    dx = layer.backward(params, cache, G, grads, need_dx=need_dx)
    assert set(grads) == set(params)
    for k, v in params.items():
        assert_grad_close(grads[k], f, v)
    if need_dx:
        if isinstance(x, list):
            for xi, dxi in zip(x, dx):
                assert_grad_close(dxi, f, xi)
        else:
            assert_grad_close(dx, f, x)


@pytest.mark.parametrize("directed", [True, False])
def test_grad_graphconv_both_orders(directed: bool) -> None:
    A, X, _ = tiny_graph(directed=directed)
    g = GraphOperators(A)
    _check_layer(GraphConv("gc", 6, 3, bias=True), X.copy(), g)  # W before propagation (3 < 6)
    _check_layer(GraphConv("gc", 6, 8, bias=True), X.copy(), g)  # propagation before W
    _check_layer(GraphConv("gc", 6, 3, bias=False), X.copy(), g)


def test_grad_sage_both_orders() -> None:
    A, X, _ = tiny_graph()
    g = GraphOperators(A)
    _check_layer(SageMean("s", 6, 3), X.copy(), g)
    _check_layer(SageMean("s", 6, 9), X.copy(), g)


def test_grad_dense_dense_and_sparse_input() -> None:
    _, X, _ = tiny_graph()
    _check_layer(Dense("d", 6, 4), X.copy())
    Xs = sp.csr_matrix(X * (X > 0.5))
    _check_layer(Dense("d", 6, 4), Xs, need_dx=False)  # sparse input = data: parameter gradients only


def test_grad_hoplinear() -> None:
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(7, 5)) for _ in range(3)]
    _check_layer(HopLinear("h", 5, 2, 4), xs)


def test_grad_ppr_propagation() -> None:
    A, _, _ = tiny_graph()
    H = np.random.default_rng(2).normal(size=(9, 3))
    _check_layer(PPRPropagation("ppr", 10, 0.1), H, GraphOperators(A))
    _check_layer(PPRPropagation("ppr", 3, 0.5), H, GraphOperators(A))


def test_grad_parameter_free_layers() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    x[np.abs(x) < 0.05] = 0.3  # keep away from the ReLU kink
    _check_layer(ReLU("r"), x.copy())
    _check_layer(L2Normalize("l2"), x.copy())
    _check_layer(Dropout("d", 0.5), x.copy(), training=True)  # fixed mask (same rng seed per call)
    out, _ = Dropout("d", 0.5).forward({}, x, graph=None, training=False, rng=None)
    assert out is x


def test_sparse_dropout_keeps_expectation() -> None:
    X = sp.random(200, 300, density=0.2, format="csr", random_state=0) + 0.0
    drop = Dropout("d", 0.5)
    outs = [drop.forward({}, X, graph=None, training=True, rng=np.random.default_rng(s))[0] for s in range(40)]
    mean = sum(o.toarray() for o in outs) / len(outs)
    assert abs(mean.sum() / X.sum() - 1.0) < 0.02
    assert all(o.nnz < X.nnz for o in outs)


def test_grad_softmax_cross_entropy_and_l2() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 4))
    y = rng.integers(0, 4, 5)
    _, dz = softmax_cross_entropy(z, y)
    assert_grad_close(dz, lambda: softmax_cross_entropy(z, y)[0], z, n_check=20)
    W = rng.normal(size=(3, 2))
    grads: dict[str, np.ndarray] = {}
    l2_penalty({"W": W}, ["W"], 0.1, grads)
    assert_grad_close(grads["W"], lambda: l2_penalty({"W": W}, ["W"], 0.1), W)


# --------------------------------------------------------------------------------------------------
# model-level gradient checks (full objective: CE on the training rows + weight decay, with dropout)
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------
# forward_local vs an independent dense computation on a hand-sized graph
# --------------------------------------------------------------------------------------------------
def _dense_ops(A: np.ndarray):
    n = A.shape[0]
    A1 = A + np.eye(n)
    deg = A1.sum(axis=0)  # in-degree incl. self-loop
    Ahat = A1 / np.sqrt(np.outer(deg, deg))
    P = Ahat.T  # x'_v = sum_u Ahat[u, v] x_u
    cnt = (A != 0).sum(axis=0).astype(float)
    M = np.zeros_like(A)
    for v in range(n):
        if cnt[v]:
            M[v] = A[:, v] / cnt[v]
    return P, M


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _random_fitted(mtype: str, d: int, c: int, seed: int = 0, **hp):
    """Random weights; ``feature_norm`` auto (the default) is installed as resolved to ``row`` (what
    auto picks for the integral non-negative hand-graph features)."""
    model = create_model(mtype, **hp)
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(scale=0.7, size=s) for k, s in model.param_shapes(d, c).items()}
    return model.set_fitted(params, d, c, feature_norm="row" if model.feature_norm == "auto" else None)


def hand_graph():
    # 0->1, 1->0, 1->2 (w=2), 2->3, 3->3 self-loop, 4 isolated; directed and weighted
    A = np.zeros((5, 5))
    for u, v, w in [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 2.0), (2, 3, 1.0), (3, 3, 1.0), (0, 2, 0.5)]:
        A[u, v] = w
    X = np.array([[1.0, 0, 2, 1], [0, 1, 0, 0], [3, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    return A, X


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


# --------------------------------------------------------------------------------------------------
# Cora: training, accuracy, float32 plan agreement
# --------------------------------------------------------------------------------------------------
FAST = {  # single-seed test settings (the bench uses the full defaults)
    "gcn": {},
    "sgc": {"weight_decay": 1e-5},
    "appnp": {"epochs": 150, "patience": 50},
    "sign": {"hops": 3, "epochs": 100, "patience": 30},
    "sage": {"epochs": 100, "patience": 30},
}
MIN_ACC = {"gcn": 0.78, "sgc": 0.78, "appnp": 0.80, "sign": 0.75, "sage": 0.75}


@pytest.fixture(scope="module")
def cora_inputs(cora):
    masks = {s: cora.mask(s) for s in ("train", "val", "test")}
    return cora.adjacency, cora.features, cora.labels, masks


@pytest.fixture(scope="module")
def cora_trained(cora_inputs) -> dict[str, tuple[Any, dict[str, Any]]]:
    A, X, y, masks = cora_inputs
    return {t: train(t, A, X, y, masks, FAST[t], seed=0) for t in ALL_TYPES}


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_cora_single_seed_accuracy(cora_trained, mtype: str) -> None:
    _, metrics = cora_trained[mtype]
    assert metrics["test_acc"] >= MIN_ACC[mtype], metrics["test_acc"]
    assert metrics["train_acc"] > metrics["test_acc"] - 0.05
    assert len(metrics["history"]["val_loss"]) == metrics["epochs_run"]


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


def test_gcn_matches_kipf_early_stopping_and_decay(cora_trained) -> None:
    model, metrics = cora_trained["gcn"]
    assert model.get_params()["weight_decay_on"] == "first"
    names = model._decay_names(model.layers())
    assert names == ["gc0.W"]
    vl = metrics["history"]["val_loss"]
    if metrics["stopped_early"]:
        assert vl[-1] > np.mean(vl[-11:-1]) - 1e-6


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


@pytest.mark.parametrize("mtype", ["sgc", "sign", "appnp"])
def test_large_graph_path_with_float32_twin(cora, cora_inputs, mtype: str) -> None:
    """train_from_ops on the numpy twin = the Spark path's arithmetic (float32 propagated features,
    only labelled rows collected)."""
    A, X, y, masks = cora_inputs
    hp = {"sgc": {"weight_decay": 1e-5}, "sign": {"hops": 2, "epochs": 80, "patience": 20},
          "appnp": {"epochs": 200, "patience": 30}}[mtype]
    ops = LocalOps(A, X, labels=y, split=cora.split)
    model, metrics = train_from_ops(ops, create_model(mtype, **hp), seed=0)
    assert metrics["labelled_rows"] == 1640
    if mtype == "sgc":
        _, ref = train(mtype, A, X, y, masks, hp, seed=0)
        assert abs(metrics["test_acc"] - ref["test_acc"]) <= 0.005
        assert metrics["input_width"] == X.shape[1]
    if mtype == "sign":
        assert metrics["input_width"] == (model.hops + 1) * X.shape[1]
    assert metrics["test_acc"] >= 0.72
    # the fitted model is a normal model: its local forward pass agrees with the reported accuracy
    ev = evaluate(model, A, X, y, masks)
    assert abs(ev["test_acc"] - metrics["test_acc"]) <= 0.005


def test_large_graph_path_refuses_full_graph_models(cora) -> None:
    ops = LocalOps(cora.adjacency, cora.features, labels=cora.labels, split=cora.split)
    with pytest.raises(TypeError, match="full graph"):
        train_from_ops(ops, create_model("gcn"))


# --------------------------------------------------------------------------------------------------
# registry and hyper-parameters
# --------------------------------------------------------------------------------------------------
def test_create_model_registry() -> None:
    assert set(MODEL_TYPES) == set(ALL_TYPES)
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


def test_context_take_is_memoised() -> None:
    ctx = Context(np.arange(12.0).reshape(6, 2), None)
    rows = np.array([1, 4])
    assert ctx.take(rows) is ctx.take(rows.copy())


# --------------------------------------------------------------------------------------------------
# artifact
# --------------------------------------------------------------------------------------------------
@pytest.fixture()
def saved_gcn(tmp_path, cora_trained, cora_inputs):
    A, X, _, masks = cora_inputs
    model, metrics = cora_trained["gcn"]
    fp = data_fingerprint(A, X, masks)
    card = save_model(model, tmp_path / "gcn", metrics=metrics, fingerprint=fp)
    return tmp_path / "gcn", model, card


def test_artifact_round_trip(saved_gcn, cora_inputs) -> None:
    out, model, card = saved_gcn
    A, X, _, masks = cora_inputs
    on_disk = json.loads((out / CARD_NAME).read_text())
    assert on_disk == card
    assert card["model_type"] == "gcn" and card["num_features"] == 1433 and card["num_classes"] == 7
    assert card["param_shapes"] == {"gc0.W": [1433, 16], "gc1.W": [16, 7]}
    assert card["hyperparameters"]["hidden"] == [16]
    assert "D^-1/2 (A+I) D^-1/2" in card["normalisation"]["adjacency"]
    assert card["fingerprint"]["num_vertices"] == 2708 and card["fingerprint"]["num_edges"] == 10556
    assert card["fingerprint"]["split_sha256"] == split_hash(
        {s: np.flatnonzero(masks[s]) for s in ("train", "val", "test")})
    final = card["metrics"]["final"]
    assert set(final) >= {"train_acc", "val_acc", "test_acc"} and final["test_acc"] > 0.78
    assert len(card["metrics"]["per_epoch"]["val_acc"]) == card["metrics"]["epochs_run"]
    with np.load(out / NPZ_NAME, allow_pickle=False) as z:
        assert sorted(z.files) == ["gc0.W", "gc1.W"]
    loaded = load_model(out, num_features=1433, num_classes=7)
    np.testing.assert_array_equal(loaded.forward_local(A, X), model.forward_local(A, X))
    assert loaded.get_params() == model.get_params()


def test_artifact_every_model_type_round_trips(tmp_path) -> None:
    A, X = hand_graph()
    for t in ALL_TYPES:
        m = _random_fitted(t, 4, 3)
        save_model(m, tmp_path / t, metrics={"test_acc": float("nan")}, fingerprint={})
        got = load_model(tmp_path / t)
        np.testing.assert_array_equal(got.forward_local(sp.csr_matrix(A), X), m.forward_local(sp.csr_matrix(A), X))


def test_artifact_refuses_tampered_weights(saved_gcn) -> None:
    out, _, _ = saved_gcn
    data = bytearray((out / NPZ_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / NPZ_NAME).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.npz: sha256 .* does not match"):
        load_model(out)


def test_artifact_refuses_shape_mismatch(saved_gcn, tmp_path) -> None:
    out, _, _ = saved_gcn
    with pytest.raises(ValueError, match=r"model\.npz: model expects 1433 input features but the graph has 500"):
        load_model(out, num_features=500)
    with pytest.raises(ValueError, match="predicts 7 classes but the graph has 3"):
        load_model(out, num_classes=3)
    # weights of another shape with a consistent sha256 (e.g. copied from another run): shapes refused
    other = _random_fitted("gcn", 1433, 7, hidden=32)
    save_model(other, tmp_path / "other", metrics={}, fingerprint={})
    (out / NPZ_NAME).write_bytes((tmp_path / "other" / NPZ_NAME).read_bytes())
    card = json.loads((out / CARD_NAME).read_text())
    from lepton_spark.models.artifact import sha256_file

    card["weights"]["sha256"] = sha256_file(out / NPZ_NAME)
    card["card_sha256"] = card_digest(card)  # a consistent forgery: the shape checks must still refuse it
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.npz: array 'gc0\.W' has shape \(1433, 32\) but the card says"):
        load_model(out)
    card["param_shapes"] = {"gc0.W": [1433, 32], "gc1.W": [32, 7]}
    card["card_sha256"] = card_digest(card)
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.npz: does not match a gcn model.*gc0\.W"):
        load_model(out)


def test_artifact_card_edits_are_detected(tmp_path) -> None:
    """Hyper-parameters change predictions (SGC's K): editing them in the card alone is refused."""
    X = np.eye(4)
    A = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=float))
    model = _random_fitted("sgc", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    card = json.loads((tmp_path / "m" / CARD_NAME).read_text())
    assert card["format_version"] == 3 and card["card_sha256"] == card_digest(card)
    for key, value in (("hyperparameters", {**card["hyperparameters"], "K": card["hyperparameters"]["K"] + 1}),
                       ("num_classes", 4), ("model_type", "sign")):
        edited = {**card, key: value}
        (tmp_path / "m" / CARD_NAME).write_text(json.dumps(edited))
        with pytest.raises(ValueError, match="card_sha256 does not match"):
            load_model(tmp_path / "m")
    # the same edit with a recomputed digest loads, and K really changes the predictions
    edited = {**card, "hyperparameters": {**card["hyperparameters"], "K": card["hyperparameters"]["K"] + 1}}
    edited["card_sha256"] = card_digest(edited)
    (tmp_path / "m" / CARD_NAME).write_text(json.dumps(edited))
    assert not np.allclose(load_model(tmp_path / "m").forward_local(A, X), model.forward_local(A, X))


def test_artifact_refuses_non_finite_weights(tmp_path) -> None:
    from lepton_spark.models.artifact import sha256_file

    model = _random_fitted("gcn", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    for bad in (np.nan, np.inf):
        with np.load(tmp_path / "m" / NPZ_NAME) as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["gc0.W"][0, 0] = bad
        np.savez(tmp_path / "m" / NPZ_NAME, **arrays)
        card = json.loads((tmp_path / "m" / CARD_NAME).read_text())
        card["weights"]["sha256"] = sha256_file(tmp_path / "m" / NPZ_NAME)
        card["card_sha256"] = card_digest(card)
        (tmp_path / "m" / CARD_NAME).write_text(json.dumps(card))
        with pytest.raises(ValueError, match=r"array 'gc0\.W' has 1 NaN or infinite values"):
            load_model(tmp_path / "m")


@pytest.mark.parametrize("case,needle", [
    ("missing", "model card not found"),
    ("bad_json", "not a valid JSON model card"),
    ("not_a_card", "not a lepton-spark-model card"),
    ("version", "unsupported card version 99"),
    ("model_type", "unknown model type 'transformer'"),
    ("missing_key", "card is missing 'param_shapes'"),
])
def test_artifact_card_errors(tmp_path, case, needle) -> None:
    model = _random_fitted("gcn", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    path = tmp_path / "m" / CARD_NAME
    card = json.loads(path.read_text())
    if case == "missing":
        path.unlink()
    elif case == "bad_json":
        path.write_text(path.read_text()[:-20])
    elif case == "not_a_card":
        path.write_text(json.dumps({"hello": 1}))
    elif case == "version":
        path.write_text(json.dumps({**card, "format_version": 99}))
    elif case == "model_type":
        path.write_text(json.dumps({**card, "model_type": "transformer"}))
    else:
        path.write_text(json.dumps({k: v for k, v in card.items() if k != "param_shapes"}))
    with pytest.raises(ValueError, match=needle):
        load_model(tmp_path / "m")


def test_artifact_refuses_pickled_arrays(saved_gcn) -> None:
    out, _, _ = saved_gcn
    np.savez(out / NPZ_NAME, **{"gc0.W": np.array([{"evil": 1}], dtype=object), "gc1.W": np.zeros((16, 7))})
    card = json.loads((out / CARD_NAME).read_text())
    from lepton_spark.models.artifact import sha256_file

    card["weights"]["sha256"] = sha256_file(out / NPZ_NAME)
    card["card_sha256"] = card_digest(card)
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="without pickle"):
        load_model(out)
