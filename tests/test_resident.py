"""Tables whose rows the driver holds (a broadcast propagation's result): same results, no round trip."""

from __future__ import annotations

import gc
import types

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from lepton_spark.graph import resident
from lepton_spark.graph.dense import DenseFn, map_features
from lepton_spark.graph.propagation import OperatorCache, propagate

pytestmark = pytest.mark.engine

V = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", T.ArrayType(T.FloatType(), False))])
E = T.StructType([T.StructField("src", T.LongType()), T.StructField("dst", T.LongType()),
                  T.StructField("weight", T.FloatType())])


def _case(spark, seed: int = 3, n: int = 40, m: int = 150, d: int = 4):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10_000, n, replace=False))  # sparse ids
    x = rng.normal(size=(n, d)).astype(np.float32)
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    w = rng.uniform(0.5, 2.0, m).astype(np.float32)
    v = spark.createDataFrame([(int(i), [float(a) for a in row]) for i, row in zip(ids, x, strict=True)], V)
    e = spark.createDataFrame([(int(ids[s]), int(ids[t]), float(c)) for s, t, c in zip(src, dst, w, strict=True)], E)
    A = sp.csr_matrix((w.astype(np.float64), (dst, src)), shape=(n, n))  # row = destination
    return ids, x, A, v, e


def _matrix(df, ids) -> np.ndarray:
    rows = {r["id"]: r["features"] for r in df.collect()}
    return np.array([rows[int(i)] for i in ids], dtype=np.float64)


def test_layers_on_a_resident_result_equal_scipy_and_the_spark_path(spark) -> None:
    """propagate -> dense -> propagate, as a GCN-style forward pass: the broadcast result is resident,
    the dense layer runs on the driver's matrix, and the second propagation reads it; the rows equal
    scipy's and the same steps over ordinary DataFrames (mapInArrow, collect)."""
    ids, x, A, v, e = _case(spark)
    cache = OperatorCache()
    try:
        opts = {"plan": "broadcast", "operators": cache}
        h1 = propagate(types.SimpleNamespace(vertices=v, edges=e), rounds=1, **opts)
        held = resident.lookup(h1)
        assert held is not None and np.array_equal(held[0], ids)
        W = np.random.default_rng(0).normal(size=(4, 3))
        fn = DenseFn(W, None, "relu")
        d1 = map_features(h1, fn, out_dim=3)
        assert resident.lookup(d1) is not None  # computed on the driver, still resident
        h2 = propagate(types.SimpleNamespace(vertices=d1, edges=e), rounds=1, **opts)
        # the same steps with the rows as an ordinary DataFrame (a projection is not registered)
        plain1 = h1.select("id", "features")
        assert resident.lookup(plain1) is None
        p1 = map_features(plain1, fn, out_dim=3)
        assert resident.lookup(p1) is None
        p2 = propagate(types.SimpleNamespace(vertices=p1.select("id", "features"), edges=e), rounds=1, **opts)
    finally:
        cache.close()
    want = A @ np.maximum((A @ x.astype(np.float64)) @ W, 0.0)
    np.testing.assert_allclose(_matrix(h2, ids), want, rtol=1e-4, atol=1e-4)
    assertDataFrameEqual(h2, p2, rtol=1e-5, atol=1e-5)
    # a second output column (the fused probabilities of SparkOps.result) keeps the features
    both = map_features(d1, DenseFn(np.eye(3), None, "identity"), output_col="probs", out_dim=3)
    assert both.columns == ["id", "features", "probs"] and resident.lookup(both) is None
    assert all(r["features"] == r["probs"] for r in both.collect())


def test_a_step_on_a_partitioned_result_reads_its_packed_blocks(spark, monkeypatch) -> None:
    """A partitioned propagation's result is unpacked from a cut table of packed blocks, and a per-row
    step on it (a dense layer, a second output column) reads that table in one pass: the rows equal
    scipy's and the same step over an ordinary DataFrame; a projection of the result is ordinary."""
    from lepton_spark.graph.propagation import partitioned_plan

    monkeypatch.setattr(partitioned_plan, "_RESULT_VALUE_BYTES", 4 * 4 * 7)  # 7 rows a value: many values
    ids, x, A, v, e = _case(spark, seed=5)
    h1 = propagate(types.SimpleNamespace(vertices=v, edges=e), rounds=2, plan="partitioned", num_blocks=3)
    packed = resident.lookup_packed(h1)
    assert packed is not None and packed[1] == 4 and packed[0].count() > 3
    np.testing.assert_allclose(_matrix(h1, ids), A @ (A @ x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    fn = DenseFn(np.random.default_rng(1).normal(size=(4, 3)), np.array([0.1, -0.2, 0.3]), "softmax")
    fused = map_features(h1, fn, output_col="probs", out_dim=3)
    plain = h1.select("id", "features")
    assert resident.lookup_packed(plain) is None
    ref = map_features(plain, fn, output_col="probs", out_dim=3)
    assert fused.columns == ref.columns == ["id", "features", "probs"]
    assertDataFrameEqual(fused, ref, rtol=1e-6, atol=1e-7)
    assertDataFrameEqual(map_features(h1, fn, out_dim=3), map_features(plain, fn, out_dim=3), rtol=1e-6, atol=1e-7)


def test_bad_values_in_a_resident_matrix_are_rejected(spark) -> None:
    """A resident matrix is checked like collected features: a non-finite row is bad data."""
    from lepton_spark.errors import InvalidGraphError

    _, x, _, v, e = _case(spark, n=10, m=20)
    h = propagate(types.SimpleNamespace(vertices=v, edges=e), rounds=1, plan="broadcast")
    bad = map_features(h, lambda m: np.where(np.arange(len(m))[:, None] == 2, np.inf, m), out_dim=x.shape[1])
    with pytest.raises(InvalidGraphError, match="NaN or infinite"):
        propagate(types.SimpleNamespace(vertices=bad, edges=e), rounds=1, plan="broadcast")


def test_an_entry_lives_as_long_as_its_dataframe(spark) -> None:
    _, _, _, v, e = _case(spark, n=10, m=20)
    h = propagate(types.SimpleNamespace(vertices=v, edges=e), rounds=1, plan="broadcast")
    key = id(h)
    assert resident.lookup(h) is not None and key in resident._TABLES
    del h
    gc.collect()
    assert key not in resident._TABLES
