"""Layers of :mod:`lepton_spark.models.layers` without Spark: every layer's gradients (parameters and
inputs) against finite differences, dropout's expectation, the loss and the L2 penalty."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

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

from .model_helpers import (
    assert_grad_close,
    tiny_graph,
)


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


def test_softmax_cross_entropy_equals_scipy_log_softmax() -> None:
    """Loss and gradient against scipy: mean of ``-log_softmax(z)[y]`` and ``(softmax(z) - onehot) / n``,
    with large logits (the max shift) and a class no row has."""
    from scipy.special import log_softmax

    rng = np.random.default_rng(8)
    z = rng.normal(size=(300, 6)) * 40
    y = rng.integers(0, 5, 300)
    loss, dz = softmax_cross_entropy(z, y)
    ls = log_softmax(z, axis=1)
    assert loss == pytest.approx(-ls[np.arange(300), y].mean(), rel=1e-12)
    want = np.exp(ls)
    want[np.arange(300), y] -= 1.0
    np.testing.assert_allclose(dz, want / 300, rtol=1e-10, atol=1e-15)
    assert dz.shape == z.shape


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
