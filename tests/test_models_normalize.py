"""Propagation and feature normalisation conventions (:mod:`lepton_spark.models.normalize`)."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_threaded_spmm_is_bit_identical_to_scipy() -> None:
    from lepton_spark.graph.kernels import threaded_spmm

    rng = np.random.default_rng(3)
    # a skewed matrix (one dense row) so the nnz-balanced cuts differ from even row cuts
    P = sp.random(3000, 2500, density=0.003, format="csr", random_state=4)
    P = sp.vstack([sp.csr_matrix(rng.random((1, 2500))), P]).tocsr()
    X = rng.standard_normal((2500, 7))
    want = P @ X
    for threads in (1, 2, 3, 8):
        got = threaded_spmm(P, X, threads=threads)
        assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(threaded_spmm(P, X[:, 0], threads=2), P @ X[:, 0])  # a vector too


@pytest.mark.parametrize("rows", [0, 5, 7, 8, 23])
def test_standardize_f32_in_chunks_equals_one_float64_pass(monkeypatch, rows):
    """``standardize_f32`` works through chunks of rows (here 8, so 23 rows leave a partial chunk):
    bit for bit the float64 ``(x - mean) / scale`` of the whole batch, stored as float32."""
    from lepton_spark.models import normalize

    monkeypatch.setattr(normalize, "CHUNK_ROWS", 8)
    rng = np.random.default_rng(rows)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    mean, scale = rng.normal(size=3), rng.uniform(0.1, 3.0, 3)
    got = normalize.standardize_f32(x, mean, scale)
    want = ((x.astype(np.float64) - mean) / scale).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got, want)


def test_sym_propagation_in_float32_is_the_rounded_float64_operator() -> None:
    """``dtype=float32`` rounds the float64 entries once: exactly ``sym_propagation(A).astype(float32)``,
    on a weighted graph with a duplicate entry (summed), a self-loop and an isolated vertex; the
    float64 operator equals the dense reference."""
    A, _ = hand_graph()
    coo = sp.coo_matrix(A)
    # (0, 1) stored twice (0.25 + 0.75 = the hand graph's 1.0): the operator sums duplicates
    rows = np.append(coo.row, 0)
    cols = np.append(coo.col, 1)
    data = np.where((coo.row == 0) & (coo.col == 1), 0.25, coo.data)
    dup = sp.csr_matrix((np.append(data, 0.75), (rows, cols)), shape=A.shape)
    P, _ = _dense_ops(A)
    p64 = sym_propagation(dup)
    np.testing.assert_allclose(p64.toarray(), P, atol=1e-15)
    p32 = sym_propagation(dup, dtype=np.float32)
    assert p32.dtype == np.float32
    np.testing.assert_array_equal(p32.toarray(), p64.astype(np.float32).toarray())
    np.testing.assert_array_equal(p32.indptr, p64.indptr)
    np.testing.assert_array_equal(p32.indices, p64.indices)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["standard", "none", "row"])
def test_feature_norm_apply_f32_is_the_rounded_float64_result(mode: str, dtype: type) -> None:
    """``FeatureNorm.apply_f32`` (SGC's large float32 path) equals rounding ``apply``'s float64 result,
    for float32 features (the graph's) and float64 ones."""
    from lepton_spark.models.normalize import FeatureNorm

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(40, 5)) * 3 + 1).astype(dtype)
    if mode == "row":
        x = np.abs(x)
    norm = FeatureNorm(mode, x.mean(axis=0, dtype=np.float64) if mode == "standard" else None,
                       x.std(axis=0, dtype=np.float64) if mode == "standard" else None)
    got = norm.apply_f32(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.asarray(norm.apply(x), dtype=np.float32))
    if mode == "standard":
        np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=1e-5)
