"""Shared helpers of the model tests: tiny and hand-sized graphs, finite-difference gradient checks,
randomly weighted fitted models, and the single-seed Cora training settings."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lepton_spark.models import create_model

ALL_TYPES = ("gcn", "sage", "sgc", "sign", "appnp")


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


FAST = {  # single-seed test settings (the bench uses the full defaults)
    "gcn": {},
    "sgc": {"weight_decay": 1e-5},
    "appnp": {"epochs": 150, "patience": 50},
    "sign": {"hops": 3, "epochs": 100, "patience": 30},
    "sage": {"epochs": 100, "patience": 30},
}
