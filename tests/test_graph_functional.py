"""lepton_spark.graph.functional: the one home of the activations, softmax and accuracy.

Every expected value is computed by hand in the test (comments show the arithmetic); the second half
checks that each caller -- the Spark primitive ``apply_dense``, the float32 twin ``LocalOps.dense`` and
the local reference layer ``L2Normalize`` -- computes exactly these functions.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.sql import types as T

from lepton_spark.graph import dense, functional
from lepton_spark.graph.functional import (
    ACTIVATIONS,
    accuracy,
    activate,
    l2_normalize,
    log_softmax,
    relu,
    softmax,
)
from lepton_spark.models.layers import L2Normalize
from lepton_spark.models.plan import LocalOps

# rows: a 3-4-5 triangle (norm 5), a zero row, and a row whose norm 5e-13 is below the 1e-12 floor
L2_IN = np.array([[3.0, 4.0], [0.0, 0.0], [3e-13, 4e-13]])
# 3/5, 4/5; zero stays zero; 3e-13 / 1e-12 = 0.3, 4e-13 / 1e-12 = 0.4 (NOT the unit vector 0.6, 0.8)
L2_OUT = np.array([[0.6, 0.8], [0.0, 0.0], [0.3, 0.4]])


def test_module_examples() -> None:
    result = doctest.testmod(functional, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_relu_by_hand() -> None:
    np.testing.assert_array_equal(relu(np.array([[-2.0, 0.0, 1.5]])), [[0.0, 0.0, 1.5]])


def test_softmax_and_log_softmax_by_hand() -> None:
    # exp(0) : exp(ln 3) = 1 : 3 -> 1/4, 3/4; the second row is the first shifted by 1000 (stability)
    z = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0 + np.log(3.0)], [5.0, 5.0]])
    want = np.array([[0.25, 0.75], [0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(softmax(z), want, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(z), np.log(want), rtol=1e-12)
    np.testing.assert_allclose(activate(z, "softmax"), want, rtol=1e-12)
    np.testing.assert_allclose(activate(z, "log_softmax"), np.log(want), rtol=1e-12)


def test_l2_normalize_by_hand() -> None:
    np.testing.assert_allclose(l2_normalize(L2_IN), L2_OUT, rtol=1e-12, atol=0)
    np.testing.assert_allclose(activate(L2_IN, "l2"), L2_OUT, rtol=1e-12, atol=0)


def test_activations_keep_float32() -> None:
    x = L2_IN.astype(np.float32)
    for name in ACTIVATIONS:
        assert activate(x, name).dtype == np.float32, name
    np.testing.assert_allclose(activate(x, "l2"), L2_OUT, rtol=1e-6)


def test_unknown_activation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown activation 'tanh'; expected one of identity, relu"):
        activate(np.zeros((1, 2)), "tanh")


def test_accuracy_by_hand() -> None:
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    # argmax per row: 1, 0, 1, 0 (a tie goes to the first class); labels 1, 1, 1, 0 -> 3 of 4 right
    assert accuracy(scores, np.array([1, 1, 1, 0])) == 0.75
    assert accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int)) is None


# --------------------------------------------------------------------------------------------------
# the callers compute these functions
# --------------------------------------------------------------------------------------------------
def test_engine_primitive_uses_the_functional_activate() -> None:
    assert dense.activate is functional.activate


def test_twin_l2_matches_hand_computed_case() -> None:
    ops = LocalOps(sp.csr_matrix((3, 3)), L2_IN)
    out = ops.dense(ops.features(), None, None, "l2")
    assert out.x.dtype == np.float32
    np.testing.assert_allclose(out.x, L2_OUT, rtol=1e-6, atol=0)


def test_twin_accepts_every_activation() -> None:
    ops = LocalOps(sp.csr_matrix((3, 3)), L2_IN)
    for name in ACTIVATIONS:
        ops.dense(ops.features(), None, None, name)
    with pytest.raises(ValueError, match="unknown activation"):
        ops.dense(ops.features(), None, None, "tanh")


def test_l2normalize_layer_matches_hand_computed_case() -> None:
    y, _ = L2Normalize("l2").forward({}, L2_IN, graph=None, training=False, rng=None)
    np.testing.assert_allclose(y, L2_OUT, rtol=1e-12, atol=0)


@pytest.mark.engine
def test_apply_dense_l2_matches_hand_computed_case(spark) -> None:
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", T.ArrayType(T.FloatType()))])
    df = spark.createDataFrame([(i, [float(v) for v in row]) for i, row in enumerate(L2_IN)], schema)
    rows = sorted(dense.apply_dense(df, None, None, "l2").collect(), key=lambda r: r["id"])
    np.testing.assert_allclose(np.array([r["features"] for r in rows]), L2_OUT, rtol=1e-6, atol=0)


@pytest.mark.parametrize("activation", ["identity", "relu", "softmax", "l2"])
def test_dense_fn_in_row_chunks_equals_the_whole_matrix_reference(monkeypatch, activation: str) -> None:
    """``DenseFn`` over more rows than ``DENSE_CHUNK_ROWS`` works through row chunks (here 7 rows, so
    30 rows leave a partial chunk): each row equals the float64 numpy reference ``act(x @ W + b)``."""
    monkeypatch.setattr(dense, "DENSE_CHUNK_ROWS", 7)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 5)).astype(np.float32)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    z = x.astype(np.float64) @ W + b
    want = {"identity": z, "relu": np.maximum(z, 0.0),
            "softmax": np.exp(z - z.max(axis=1, keepdims=True)) / np.exp(z - z.max(axis=1, keepdims=True)).sum(
                axis=1, keepdims=True),
            "l2": z / np.linalg.norm(z, axis=1, keepdims=True)}[activation]
    got = dense.DenseFn(W, b, activation)(x)
    assert got.shape == (30, 4) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
