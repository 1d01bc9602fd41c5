"""Vector propagation, SpMM and the per-partition dense primitive against scipy / numpy references."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
import scipy.sparse as sp
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from lepton_spark.config import GraphConfig
from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import kernels
from lepton_spark.graph.dense import activate, apply_dense, map_features
from lepton_spark.graph.normalize import normalize_edges
from lepton_spark.graph.propagation import native_aggregate_available, propagate, spmm

pytestmark = pytest.mark.engine

FEATURES_T = T.ArrayType(T.FloatType(), containsNull=False)
V_SCHEMA = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", FEATURES_T)])
E_SCHEMA = T.StructType(
    [T.StructField("src", T.LongType()), T.StructField("dst", T.LongType()), T.StructField("weight", T.FloatType())]
)


def _graph(spark, ids, x, src, dst, w):
    v = spark.createDataFrame([(int(i), [float(a) for a in row]) for i, row in zip(ids, x)], V_SCHEMA)
    e = spark.createDataFrame([(int(s), int(d), float(c)) for s, d, c in zip(src, dst, w)], E_SCHEMA)
    return types.SimpleNamespace(vertices=v, edges=e)


def _random_case(seed: int, n: int = 60, m: int = 300, d: int = 5, sparse_ids: bool = False):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, m)
    dst = rng.integers(0, n, m)
    dst[: m // 10] = src[: m // 10]  # some self-loops; duplicates occur naturally (multi-edges)
    dst = np.where(dst >= n - 5, 0, dst)  # the last 5 vertices receive nothing
    w = rng.uniform(0.1, 2.0, m).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    ids = np.arange(n) * 7 + 3 if sparse_ids else np.arange(n)
    return ids, x, src, dst, w


def _to_matrix(df, ids):
    rows = {r["id"]: r["features"] for r in df.collect()}
    assert set(rows) == set(int(i) for i in ids), "every vertex must be in the result"
    return np.array([rows[int(i)] for i in ids], dtype=np.float64)


PATHS = [("broadcast", "off"), ("partitioned", "off")]
if True:  # the native path is tested wherever this Spark has vector_sum (>= 4.3)
    PATHS.append(("partitioned", "on"))


@pytest.mark.parametrize(("plan", "native"), PATHS)
@pytest.mark.parametrize("agg", ["sum", "mean", "max"])
@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_propagate_matches_scipy(spark, plan, native, agg, rounds) -> None:
    if native == "on" and not native_aggregate_available(spark):
        pytest.skip(f"Spark {spark.version} has no vector_sum (needs >= 4.3); numpy path covers it")
    if native == "on" and agg == "max":
        pytest.skip("no native vector max: max always uses the numpy path")
    ids, x, src, dst, w = _random_case(rounds * 10 + len(agg), sparse_ids=plan == "partitioned")
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    out = propagate(g, rounds=rounds, agg=agg, plan=plan, native_aggregate=native, num_blocks=3)
    got = _to_matrix(out, ids)
    want = kernels.reference_propagate(src, dst, w, x, rounds, agg)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if rounds:
        assert np.all(got[-5:] == 0.0), "vertices that receive nothing get zero vectors"


def test_isolated_vertices_and_unit_weight(spark) -> None:
    # 0 -> 1, 0 -> 1 (multi-edge), 2 -> 2 (self-loop), 3 isolated; no weight column
    v = spark.createDataFrame([(0, [1.0, 2.0]), (1, [3.0, 4.0]), (2, [5.0, 6.0]), (3, [7.0, 8.0])], V_SCHEMA)
    e = spark.createDataFrame([(0, 1), (0, 1), (2, 2)], "src long, dst long")
    g = types.SimpleNamespace(vertices=v, edges=e)
    for plan in ("broadcast", "partitioned"):
        got = {r["id"]: r["features"] for r in propagate(g, weight=None, plan=plan).collect()}
        assert got == {0: [0.0, 0.0], 1: [2.0, 4.0], 2: [5.0, 6.0], 3: [0.0, 0.0]}
        mean = {r["id"]: r["features"] for r in propagate(g, weight=None, agg="mean", plan=plan).collect()}
        assert mean[1] == [1.0, 2.0]


def test_max_with_negative_messages_by_hand(spark) -> None:
    """max over all-negative messages stays negative (no clipping at a zero start value); a vertex
    without in-edges gets zeros. Worked by hand:
    into 0: 0.5 * x2 = [-1, -2]; into 2: 1 * x0 = [-1, -5] and 2 * x1 = [-6, 4] -> [-1, 4];
    into 3: x0 = [-1, -5] and x2 = [-2, -4] -> [-1, -4]; 1 receives nothing -> [0, 0]."""
    v = spark.createDataFrame([(0, [-1.0, -5.0]), (1, [-3.0, 2.0]), (2, [-2.0, -4.0]), (3, [4.0, 1.0])], V_SCHEMA)
    e = spark.createDataFrame([(0, 2, 1.0), (1, 2, 2.0), (2, 0, 0.5), (0, 3, 1.0), (2, 3, 1.0)], E_SCHEMA)
    g = types.SimpleNamespace(vertices=v, edges=e)
    want = {0: [-1.0, -2.0], 1: [0.0, 0.0], 2: [-1.0, 4.0], 3: [-1.0, -4.0]}
    for plan in ("broadcast", "partitioned"):
        got = {r["id"]: r["features"] for r in propagate(g, agg="max", plan=plan).collect()}
        assert got == want, plan


def test_bad_feature_lengths_are_counted(spark) -> None:
    v = spark.createDataFrame([(0, [1.0, 2.0]), (1, [3.0]), (2, None), (3, [1.0, 1.0])], V_SCHEMA)
    e = spark.createDataFrame([(0, 1, 1.0)], E_SCHEMA)
    with pytest.raises(ValueError, match=r"2 of 4 vertices have null features or a length other than 2"):
        propagate(types.SimpleNamespace(vertices=v, edges=e))
    with pytest.raises(ValueError, match="agg must be one of"):
        propagate(types.SimpleNamespace(vertices=v, edges=e), agg="median")


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
def test_caller_counted_vertices_give_the_same_result(spark, plan) -> None:
    # num_vertices skips the validation job: the plan is chosen from the count, the features are checked
    # where the plan reads them; the result is the one of the checked call and of scipy
    ids, x, src, dst, w = _random_case(11, sparse_ids=True)
    src_ids, dst_ids = ids[src], ids[dst]
    g = _graph(spark, ids, x, src_ids, dst_ids, w)
    want = kernels.reference_propagate(src, dst, w, x, 2, "mean")
    got = _to_matrix(propagate(g, rounds=2, agg="mean", plan=plan, num_vertices=len(ids)), ids)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
@pytest.mark.parametrize("hint", [None, 5, 3])
def test_caller_known_feature_length_gives_the_same_result(spark, plan, hint, caplog) -> None:
    # num_features (with num_vertices) skips the first-row job; a wrong length only misjudges the
    # plan's size: the result is still scipy's, and the broadcast plan logs the mismatch
    ids, x, src, dst, w = _random_case(5, sparse_ids=True)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    want = kernels.reference_propagate(src, dst, w, x, 2, "sum")
    with caplog.at_level("WARNING", logger="lepton_spark.graph.propagation.broadcast_plan"):
        got = _to_matrix(propagate(g, rounds=2, agg="sum", plan=plan, num_vertices=len(ids),
                                   num_features=hint), ids)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    warned = [r for r in caplog.records if "the caller said" in r.getMessage()]
    assert bool(warned) == (plan == "broadcast" and hint is not None and hint != x.shape[1])


BAD_FEATURES = [
    ([(0, [1.0, 2.0]), (1, [3.0]), (2, None), (3, [1.0, 1.0])],
     r"2 of 4 vertices have null features or a length other than 2 \(lengths seen: \{-1: 1, 1: 1, 2: 2\}\)"),
    ([(0, [1.0, float("nan")]), (1, [3.0, 1.0]), (2, [float("inf"), 0.0])],
     "2 of 3 vertices have NaN or infinite features"),
    ([(0, None), (1, None)], "all 2 feature vectors are null"),
]


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
@pytest.mark.parametrize(("rows", "message"), BAD_FEATURES)
def test_caller_counted_vertices_still_get_the_feature_errors(spark, plan, rows, message) -> None:
    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("features", T.ArrayType(T.FloatType()))])
    g = types.SimpleNamespace(vertices=spark.createDataFrame(rows, schema),
                              edges=spark.createDataFrame([(0, 1, 1.0)], E_SCHEMA))
    with pytest.raises(ValueError, match=message):  # the checked path: one validation job
        propagate(g, plan=plan)
    with pytest.raises(ValueError, match=message):  # the caller's count: checked by the plan
        propagate(g, plan=plan, num_vertices=len(rows))


def test_resume_from_round_state(spark, tmp_path) -> None:
    ids, x, src, dst, w = _random_case(7)
    g = _graph(spark, ids, x, src, dst, w)
    want = kernels.reference_propagate(src, dst, w, x, 4, "sum")
    for plan in ("broadcast", "partitioned"):
        ckpt = str(tmp_path / plan)
        seen: list[int] = []

        def boom(k, info, seen=seen):
            seen.append(k)
            if k == 2:
                raise RuntimeError("injected failure after round 2")

        with pytest.raises(RuntimeError, match="injected"):
            propagate(g, rounds=4, plan=plan, checkpoint=ckpt, on_round=boom, num_blocks=3)
        resumed: list[int] = []
        out = propagate(g, rounds=4, plan=plan, checkpoint=ckpt, num_blocks=3,
                        on_round=lambda k, info, r=resumed: r.append(k))
        assert resumed == [3, 4], f"{plan}: resumed rounds {resumed}"
        # float32 sums after 4 rounds reach |x| ~ 400, so an entry that cancels to ~0.2 carries an
        # absolute rounding error of a few 1e-5 that depends on the order the partials arrive in
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(_to_matrix(out, ids), want, rtol=1e-5, atol=1e-6 * scale)


def test_partitioned_round_state_written_by_the_blocks_equals_spark_written(spark, tmp_path) -> None:
    """On a local master with a local checkpoint the partitioned blocks write their own round state
    (lepton_spark.task_writes); the state files hold the same partials as Spark's writer would
    write (forced here by saying the tasks do not share the disk), and resuming from them gives the result."""
    from lepton_spark import task_writes

    ids, x, src, dst, w = _random_case(7)
    g = _graph(spark, ids, x, src, dst, w)
    want = kernels.reference_propagate(src, dst, w, x, 3, "sum")
    off = GraphConfig(worker_block_files=False)  # every partial in the state (own partials in files: below)
    by_tasks = propagate(g, rounds=3, plan="partitioned", checkpoint=str(tmp_path / "tasks"), num_blocks=3, config=off)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_writes, "tasks_share_disk", lambda *a: False)
        by_spark = propagate(g, rounds=3, plan="partitioned", checkpoint=str(tmp_path / "spark"), num_blocks=3)
    for k in (1, 2, 3):
        state = [spark.read.parquet(str(tmp_path / d / f"round-{k:04d}" / "state")) for d in ("tasks", "spark")]
        assert state[0].schema == state[1].schema and state[0].count() > 0
        assertDataFrameEqual(state[0], state[1])  # bytes of the same partials, in the same cut
        files = sorted(p.name for p in (tmp_path / "tasks" / f"round-{k:04d}" / "state").iterdir())
        assert files and all(f.startswith("part-") and f.endswith(".none.parquet") for f in files), files
    scale = float(np.abs(want).max())
    for out in (by_tasks, by_spark):
        np.testing.assert_allclose(_to_matrix(out, ids), want, rtol=1e-5, atol=1e-6 * scale)
    # a rerun resumes from the blocks' files: nothing left to compute, the same result
    resumed: list[int] = []
    again = propagate(g, rounds=3, plan="partitioned", checkpoint=str(tmp_path / "tasks"), num_blocks=3,
                      on_round=lambda k, info: resumed.append(k), config=off)
    assert resumed == []
    np.testing.assert_allclose(_to_matrix(again, ids), _to_matrix(by_tasks, ids), rtol=0, atol=0)


def test_spmm_matches_scipy(spark) -> None:
    rng = np.random.default_rng(3)
    a = sp.random(30, 25, density=0.2, random_state=4, dtype=np.float64).tocoo()
    b = rng.normal(size=(30, 4)).astype(np.float32)  # ids 0..29; A's columns index B's ids
    entries = spark.createDataFrame(
        [(int(r), int(c), float(v)) for r, c, v in zip(a.row, a.col, a.data)], "row long, col long, value double")
    dense = spark.createDataFrame([(i, [float(t) for t in b[i]]) for i in range(30)], V_SCHEMA)
    got = _to_matrix(spmm(entries, dense), range(30))
    want = np.zeros((30, 4))
    want[:30] = sp.csr_matrix((a.data, (a.row, a.col)), shape=(30, 30)) @ b.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ["identity", "relu", "softmax", "l2"])
def test_apply_dense_matches_numpy(spark, activation) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    W = rng.normal(size=(6, 3))
    b = rng.normal(size=3)
    df = spark.createDataFrame([(i, [float(t) for t in x[i]]) for i in range(50)], V_SCHEMA).repartition(3)
    out = apply_dense(df.withColumn("tag", F.lit("keep")), W, b, activation, output_col="h")
    rows = sorted(out.collect(), key=lambda r: r["id"])
    assert out.columns == ["id", "features", "tag", "h"]
    assert all(r["tag"] == "keep" for r in rows)
    z = x.astype(np.float64) @ W + b
    want = {"identity": z, "relu": np.maximum(z, 0), "softmax": np.exp(z) / np.exp(z).sum(1, keepdims=True),
            "l2": z / np.linalg.norm(z, axis=1, keepdims=True)}[activation]
    np.testing.assert_allclose(np.array([r["h"] for r in rows]), want, rtol=1e-5, atol=1e-6)
    assert np.allclose(activate(z, activation), want)


def test_map_features_replaces_column(spark) -> None:
    df = spark.createDataFrame([(1, [1.0, 3.0]), (2, [2.0, 2.0])], V_SCHEMA)
    out = map_features(df, lambda m: m / m.sum(axis=1, keepdims=True))
    assert out.columns == ["id", "features"]
    assert sorted((r["id"], r["features"]) for r in out.collect()) == [(1, [0.25, 0.75]), (2, [0.5, 0.5])]


@pytest.mark.parametrize("mode", ["sym", "row", "none"])
def test_normalize_edges_matches_scipy(spark, mode) -> None:
    rng = np.random.default_rng(5)
    n = 40
    a = sp.random(n, n, density=0.1, random_state=6, dtype=np.float64)
    a = ((a + a.T) > 0).astype(np.float64).tocoo()  # symmetric binary, as build produces
    v = spark.createDataFrame([(i,) for i in range(n)], "id long")
    e = spark.createDataFrame([(int(r), int(c), 1.0) for r, c in zip(a.row, a.col)], E_SCHEMA)
    out = normalize_edges(e, mode, self_loops=True, vertices=v)
    got = sp.coo_matrix(
        ([r["weight"] for r in out.collect()], ([r["src"] for r in out.collect()], [r["dst"] for r in out.collect()])),
        shape=(n, n)).toarray()
    at = a.toarray() + np.eye(n)
    deg = at.sum(axis=0)
    want = {"sym": at / np.sqrt(np.outer(deg, deg)), "row": at / deg[None, :], "none": at}[mode]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert rng is not None


def test_partitioned_plan_with_partials_cut_into_many_values(spark, monkeypatch) -> None:
    """Partials travel as many small binary values (one row each here); the result still matches scipy.

    ``max`` because its combine is the one that tracks which rows a part has already set."""
    agg = "max"
    from lepton_spark.graph.propagation import partitioned_plan

    monkeypatch.setattr(partitioned_plan, "_PARTIAL_VALUE_BYTES", 1)  # -> one row of a partial per value
    ids, x, src, dst, w = _random_case(17, sparse_ids=True)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    got = _to_matrix(propagate(g, rounds=2, agg=agg, plan="partitioned", num_blocks=2), ids)
    np.testing.assert_allclose(got, kernels.reference_propagate(src, dst, w, x, 2, agg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("agg", "normalize", "native"), [("sum", None, "off"), ("max", None, "off"),
                                                         ("mean", None, "off"), ("sum", "sym", "off"),
                                                         ("sum", "sym", "on")])
def test_partitioned_edge_blocks_in_many_pieces(spark, monkeypatch, agg, normalize, native) -> None:
    """Each block's CSR is stored as several rows of whole CSR rows (7 entries here): the rounds
    multiply every piece, and the result still equals scipy / the dense reference."""
    from lepton_spark.graph.propagation import partitioned_plan
    from lepton_spark.models.normalize import sym_propagation

    if native == "on" and not native_aggregate_available(spark):
        pytest.skip(f"Spark {spark.version} has no vector_sum (needs >= 4.3); numpy path covers it")
    monkeypatch.setattr(partitioned_plan, "_PIECE_ENTRIES", 7)
    ids, x, src, dst, w = _random_case(29, sparse_ids=True)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    got = _to_matrix(propagate(g, rounds=2, agg=agg, plan="partitioned", num_blocks=2, normalize=normalize,
                               native_aggregate=native), ids)
    if normalize == "sym":
        P = sym_propagation(sp.csr_matrix((w.astype(np.float64), (src, dst)), shape=(len(ids), len(ids))))
        want = P @ (P @ x.astype(np.float64))
    else:
        want = kernels.reference_propagate(src, dst, w, x, 2, agg)
    assert len(src) > 4 * 7  # several pieces per block
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_edge_block_pieces_by_hand() -> None:
    from lepton_spark.graph.propagation.partitioned_plan import row_pieces

    assert row_pieces(np.array([0])) == [(0, 0)]  # no rows: one empty piece (the part-0 row)
    assert row_pieces(np.array([0, 3]), 2) == [(0, 1)]  # one row is never split
    assert row_pieces(np.arange(8), 4) == [(0, 4), (4, 7)]
    # rows of 0, 10, 0, 1, 19, 1 entries: a cut lands on the first row starting at or after 4, 8, ...
    assert row_pieces(np.array([0, 0, 10, 10, 11, 30, 31]), 4) == [(0, 2), (2, 5), (5, 6)]


def test_partitioned_round_reads_cached_edge_blocks_without_exchange_or_sort(spark, monkeypatch, capsys) -> None:
    """A round shuffles only the partials: the cached edge blocks are neither reshuffled nor re-sorted,
    also with fewer blocks (2) than spark.sql.shuffle.partitions (4 in the test session)."""
    from lepton_spark.graph.propagation import partitioned_plan

    rounds_seen = []
    original = partitioned_plan.cogroup

    def recording(left, right, fn, schema):
        out = original(left, right, fn, schema)
        rounds_seen.append(out)
        return out

    monkeypatch.setattr(partitioned_plan, "cogroup", recording)
    ids, x, src, dst, w = _random_case(23)
    aqe = spark.conf.get("spark.sql.adaptive.enabled")
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # the plan as planned, not re-optimised
    try:
        propagate(_graph(spark, ids, x, src, dst, w), rounds=2, plan="partitioned", num_blocks=2).count()
        capsys.readouterr()
        rounds_seen[2].explain()  # [0] packs the edge blocks, [1] is round 1 (row input), [2] is round 2
        plan = capsys.readouterr().out
    finally:
        spark.conf.set("spark.sql.adaptive.enabled", aqe)
    above_cache = plan.split("InMemoryRelation")[0]
    assert above_cache.count("Exchange") == 1, plan  # the partials' shuffle, nothing on the edge side
    assert re.search(r"Exchange hashpartitioning\(pid#\d+, 2\)", above_cache), plan
    assert re.search(r"^\+- InMemoryTableScan", above_cache, re.M), plan  # no Sort over the cached side


def test_block_keys_give_every_block_its_own_partition(spark) -> None:
    """Spark's own hash partitioning into B partitions sends the B block labels to B different tasks."""
    from lepton_spark.graph.propagation.partitioned_plan import block_keys

    for blocks in (2, 3, 8):
        keys = block_keys(spark, blocks)
        df = spark.createDataFrame([(k,) for k in keys], "pid int").repartition(blocks, "pid")
        per_task = df.groupBy(F.spark_partition_id().alias("task")).count().collect()
        assert len(keys) == len(set(keys)) == blocks
        assert sorted(r["count"] for r in per_task) == [1] * blocks, blocks


def test_partitioned_block_count() -> None:
    from lepton_spark.graph.propagation import num_partitioned_blocks

    mib = 2**20
    assert num_partitioned_blocks(256 * mib, slots=2, max_block_bytes=128 * mib) == 2  # one per task slot
    assert num_partitioned_blocks(256 * mib, slots=2, max_block_bytes=64 * mib) == 4  # memory bound
    assert num_partitioned_blocks(10, slots=0, max_block_bytes=128 * mib) == 1


def test_kernels_combine_max_and_sum() -> None:
    # two partials (distinct rows within each), rows 2 and 0 meet in both; row 3 gets nothing
    parts = [(np.array([0, 2], dtype=np.int32), np.array([[2.0, 2.0], [1.0, -5.0]], dtype=np.float32)),
             (np.array([2, 1], dtype=np.int32), np.array([[3.0, -1.0], [-4.0, -4.0]], dtype=np.float32))]
    np.testing.assert_array_equal(kernels.combine(4, 2, parts, "sum"),
                                  [[2, 2], [-4, -4], [4, -6], [0, 0]])
    np.testing.assert_array_equal(kernels.combine(4, 2, parts, "max"),
                                  [[2, 2], [-4, -4], [3, -1], [0, 0]])
    np.testing.assert_array_equal(kernels.combine(3, 2, [], "max"), np.zeros((3, 2)))


@pytest.mark.parametrize("agg", ["sum", "max"])
def test_broadcast_plan_through_the_closure(spark, agg) -> None:
    """The cluster path of the broadcast plan (features shipped with the task closure, not /dev/shm)."""
    from lepton_spark.config import GraphConfig

    ids, x, src, dst, w = _random_case(21)
    g = _graph(spark, ids, x, src, dst, w)
    out = propagate(g, rounds=2, agg=agg, plan="broadcast", config=GraphConfig(local_exchange=False))
    np.testing.assert_allclose(_to_matrix(out, ids), kernels.reference_propagate(src, dst, w, x, 2, agg),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
def test_operator_cache_packs_the_edges_once(spark, caplog, plan) -> None:
    """Calls sharing an OperatorCache over one edges DataFrame reuse its blocks, with the same results."""
    import logging

    from lepton_spark.graph.propagation import OperatorCache

    ids, x, src, dst, w = _random_case(31, sparse_ids=True)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    cache = OperatorCache()
    try:
        with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation"):
            first = _to_matrix(propagate(g, rounds=1, agg="sum", plan=plan, operators=cache, num_blocks=3), ids)
            # the second "layer": other features over the same edges object
            g2 = types.SimpleNamespace(vertices=propagate(g, rounds=1, agg="mean", plan=plan, operators=cache,
                                                          num_blocks=3), edges=g.edges)
            second = _to_matrix(propagate(g2, rounds=2, agg="max", plan=plan, operators=cache, num_blocks=3), ids)
    finally:
        cache.close()
    msgs = [r.getMessage() for r in caplog.records if f"propagate[{plan}]:" in r.getMessage()]
    assert sum("prepared in" in m for m in msgs) == 1 and sum("edge blocks reused" in m for m in msgs) == 2
    np.testing.assert_allclose(first, kernels.reference_propagate(src, dst, w, x, 1, "sum"), rtol=1e-5, atol=1e-5)
    mean1 = kernels.reference_propagate(src, dst, w, x, 1, "mean")
    np.testing.assert_allclose(second, kernels.reference_propagate(src, dst, w, mean1, 2, "max"),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
def test_sym_normalised_propagation_matches_scipy(spark, plan) -> None:
    """normalize='sym' = rounds of D^-1/2 (A + I) D^-1/2 (scipy's sym_propagation), on both plans."""
    from lepton_spark.models.normalize import sym_propagation

    ids, x, src, dst, w = _random_case(41)
    g = _graph(spark, ids, x, src, dst, w)
    out = _to_matrix(propagate(g, rounds=3, agg="sum", plan=plan, normalize="sym", num_blocks=3), ids)
    A = sp.csr_matrix((w.astype(np.float64), (src, dst)), shape=(len(ids), len(ids)))
    P = sym_propagation(A)
    np.testing.assert_allclose(out, P @ (P @ (P @ x.astype(np.float64))), rtol=1e-5, atol=1e-5)


def test_broadcast_sym_rounds_update_only_their_own_matrices() -> None:
    """The broadcast plan's sym rounds work in place on the matrices they made (from the second round
    on) and never write the caller's input: three rounds equal D^-1/2 (A + I) D^-1/2 applied three
    times (scipy), and the input is unchanged."""
    from lepton_spark.graph.propagation.broadcast_plan import _BroadcastRounds
    from lepton_spark.models.normalize import sym_propagation

    ids, x, src, dst, w = _random_case(43)
    n = len(ids)
    A = sp.csr_matrix((w.astype(np.float64), (src, dst)), shape=(n, n))

    class Sum:  # the operator's contract: (A^T y, received) for agg "sum"
        def apply(self, y: np.ndarray, agg: str) -> tuple[np.ndarray, np.ndarray]:
            assert agg == "sum"
            return (A.T @ y.astype(np.float64)).astype(np.float32), np.ones(n, dtype=bool)

    deg = np.asarray(A.sum(axis=0)).ravel() + 1.0
    plan = _BroadcastRounds(Sum(), "sum", (1.0 / np.sqrt(deg)).astype(np.float32)[:, None], n)  # type: ignore[arg-type]
    x0 = x.astype(np.float32)
    before = x0.copy()
    y1 = plan.step(x0)
    y2 = plan.step(y1)
    assert y2 is y1  # the second round updated the first round's own matrix
    y3 = plan.step(y2)
    np.testing.assert_array_equal(x0, before)
    P = sym_propagation(A)
    np.testing.assert_allclose(y3, P @ (P @ (P @ x.astype(np.float64))), rtol=1e-5, atol=1e-5)


def _two_rounds(src, dst, w, x, agg: str, normalize: str | None) -> np.ndarray:
    """Two rounds by scipy: GCN's D^-1/2 (A + I) D^-1/2 applied twice, or the dense-index reference."""
    from lepton_spark.models.normalize import sym_propagation

    if normalize == "sym":
        n = len(x)
        P = sym_propagation(sp.csr_matrix((w.astype(np.float64), (src, dst)), shape=(n, n)))
        return P @ (P @ x.astype(np.float64))
    return kernels.reference_propagate(src, dst, w, x, 2, agg)


@pytest.mark.parametrize(("agg", "normalize"), [("mean", None), ("sum", "sym")])
def test_partitioned_symmetric_edges_count_degrees_in_the_blocks(spark, agg, normalize) -> None:
    """``symmetric=True`` (every edge has its reverse, same weight, once): the blocks count in-degrees
    as out-degrees instead of aggregating the edges; the rounds equal scipy on such a graph, with
    isolated vertices and self-loops, over 3 blocks with sparse ids."""

    rng = np.random.default_rng(43)
    n = 50
    upper = sp.triu(sp.random(n - 4, n - 4, density=0.12, random_state=rng, format="coo"), k=0).tocoo()
    s0, d0, w0 = upper.row, upper.col, (upper.data * 2 + 0.1).astype(np.float32)  # the last 4 vertices isolated
    off = s0 != d0
    src = np.concatenate([s0, d0[off]])
    dst = np.concatenate([d0, s0[off]])
    w = np.concatenate([w0, w0[off]])  # each reverse once, a self-loop is its own reverse
    assert (s0 == d0).any()
    ids = np.arange(n) * 11 + 5
    x = rng.normal(size=(n, 3)).astype(np.float32)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    got = _to_matrix(propagate(g, rounds=2, agg=agg, plan="partitioned", num_blocks=3, normalize=normalize,
                               symmetric=True), ids)
    want = _two_rounds(src, dst, w, x, agg, normalize)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if agg == "mean":  # isolated vertices receive nothing (with sym they keep their own loop)
        assert np.all(got[-4:] == 0.0)


@pytest.mark.parametrize(("agg", "normalize", "symmetric"), [("sum", None, False), ("mean", None, False),
                                                          ("max", None, False), ("sum", "sym", True)])
def test_partitioned_dense_ids_place_vertices_by_arithmetic(spark, agg, normalize, symmetric) -> None:
    """``dense_ids=True`` (vertex ids exactly 0..n-1): the partitioned plan places vertex ``id`` in block
    ``id mod B`` with no numbering or endpoint lookup; the rounds equal scipy on a graph with
    self-loops, multi-edges, vertices that receive nothing and edges to and from ids >= n (not
    vertices: ignored), over 3 blocks. Ids that are not 0..n-1 make a block raise."""

    ids, x, src, dst, w = _random_case(47, n=40, m=200)
    if symmetric:  # each edge's reverse once, same weight (what symmetric promises)
        keep = src < dst
        src, dst, w = np.concatenate([src[keep], dst[keep]]), np.concatenate([dst[keep], src[keep]]), \
            np.concatenate([w[keep], w[keep]])
    n = len(ids)
    extra_src, extra_dst = np.array([n, 3, n + 5]), np.array([2, n + 1, n + 6])  # not vertices
    g = _graph(spark, ids, x, np.concatenate([src, extra_src]), np.concatenate([dst, extra_dst]),
               np.concatenate([w, np.ones(3, np.float32)]))
    got = _to_matrix(propagate(g, rounds=2, agg=agg, plan="partitioned", num_blocks=3, normalize=normalize,
                               symmetric=symmetric, dense_ids=True), ids)
    want = _two_rounds(src, dst, w, x, agg, normalize)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    sparse = _graph(spark, ids * 2, x, src * 2, dst * 2, w)  # even ids: not 0..n-1
    with pytest.raises(Exception, match="promised dense"):
        propagate(sparse, rounds=1, agg=agg, plan="partitioned", num_blocks=3, dense_ids=True).collect()


def _symmetric_case(seed: int, draws: int, n: int = 30):
    """A symmetric weighted graph on ids 0..n-1 (every (u, v) has its (v, u), same weight, once; no
    self-loops) whose ids 2 mod 3 have no edges (with 3 dense blocks, block 2 is isolated): ids, x, src,
    dst, w."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n)
    linked = ids[ids % 3 != 2]
    a, b = rng.choice(linked, draws), rng.choice(linked, draws)
    a, b = a[a != b], b[a != b]
    pairs = np.unique(np.sort(np.stack([a, b], 1), axis=1), axis=0)
    w = rng.uniform(0.1, 2.0, len(pairs)).astype(np.float32)
    src, dst, w = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]], np.r_[w, w]
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return ids, x, src, dst, w


@pytest.mark.parametrize(("agg", "normalize"), [("mean", None), ("sum", "sym"), ("max", None)])
def test_partitioned_dense_symmetric_blocks_pack_from_their_edges_alone(spark, agg, normalize) -> None:
    """Dense ids on a symmetric graph: each block is packed from its own out-edges, streamed (no
    vertex side). A block whose vertices have no edges at all (ids 2 mod 3 here) and a block with no
    vertices (2 vertices in 3 blocks) still give every vertex its row; the rounds equal scipy."""
    ids, x, src, dst, w = _symmetric_case(5, draws=80)
    got = _to_matrix(propagate(_graph(spark, ids, x, src, dst, w), rounds=2, agg=agg, plan="partitioned",
                               num_blocks=3, normalize=normalize, symmetric=True, dense_ids=True), ids)
    np.testing.assert_allclose(got, _two_rounds(src, dst, w, x, agg, normalize), rtol=1e-5, atol=1e-5)
    if normalize is None:  # the isolated block's vertices receive nothing
        assert np.all(got[2::3] == 0.0)

    tiny_x = x[:2]
    tiny = propagate(_graph(spark, ids[:2], tiny_x, np.array([0, 1]), np.array([1, 0]), np.ones(2, np.float32)),
                     rounds=2, agg=agg, plan="partitioned", num_blocks=3, normalize=normalize, symmetric=True,
                     dense_ids=True)
    want = _two_rounds(np.array([0, 1]), np.array([1, 0]), np.ones(2, np.float32), tiny_x, agg, normalize)
    np.testing.assert_allclose(_to_matrix(tiny, ids[:2]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("agg", "normalize"), [("mean", None), ("sum", "sym"), ("max", None)])
def test_partitioned_dense_symmetric_blocks_pack_from_edge_files(spark, tmp_path, caplog, agg, normalize) -> None:
    """Given the Parquet files its edges were read from (``edge_files``), a dense symmetric graph's
    blocks are packed from the files (logged), one reading task per file: the rounds equal scipy and
    the DataFrame packing's, with an isolated block, a block without vertices, a graph without a weight
    column, an endpoint outside 0..n-1 left out as the DataFrame path leaves it; a null weight is
    rejected as there."""
    import logging

    from lepton_spark.graph.blocks import EdgeFiles

    ids, x, src, dst, w = _symmetric_case(8, draws=90)
    n = len(ids)
    g = _graph(spark, ids, x, src, dst, w)
    path = str(tmp_path / "edges")
    g.edges.repartition(3).write.parquet(path)  # three files
    edges = spark.read.parquet(path)
    opts = {"rounds": 2, "agg": agg, "plan": "partitioned", "num_blocks": 3, "normalize": normalize,
            "symmetric": True, "dense_ids": True}
    with caplog.at_level(logging.INFO, logger="lepton_spark"):
        got = _to_matrix(propagate(types.SimpleNamespace(vertices=g.vertices, edges=edges),
                                   edge_files=EdgeFiles(path), **opts), ids)
    assert "packing the edge blocks from 3 Parquet files" in caplog.text
    want = _two_rounds(src, dst, w, x, agg, normalize)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _to_matrix(propagate(g, **opts), ids), rtol=1e-6, atol=1e-6)
    if normalize is None:
        assert np.all(got[2::3] == 0.0)

    # no weight column: every weight 1; plus an edge to a vertex that does not exist (left out)
    upath = str(tmp_path / "unweighted")
    extra = spark.createDataFrame([(0, n + 5)], "src long, dst long")
    edges.select("src", "dst").unionByName(extra).write.parquet(upath)
    ones = np.ones(len(src), np.float32)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lepton_spark"):
        got = _to_matrix(propagate(types.SimpleNamespace(vertices=g.vertices, edges=spark.read.parquet(upath)),
                                   edge_files=EdgeFiles(upath, weight=None), **opts), ids)
    assert "packing the edge blocks from" in caplog.text
    np.testing.assert_allclose(got, _two_rounds(src, dst, ones, x, agg, normalize), rtol=1e-5, atol=1e-5)

    tiny_path = str(tmp_path / "tiny")  # 2 vertices in 3 blocks: a block without vertices
    spark.createDataFrame([(0, 1, 1.0), (1, 0, 1.0)], E_SCHEMA).write.parquet(tiny_path)
    tiny_x = x[:2]
    tiny = propagate(types.SimpleNamespace(vertices=_graph(spark, ids[:2], tiny_x, [], [], []).vertices,
                                           edges=spark.read.parquet(tiny_path)),
                     edge_files=EdgeFiles(tiny_path), **opts)
    want = _two_rounds(np.array([0, 1]), np.array([1, 0]), np.ones(2, np.float32), tiny_x, agg, normalize)
    np.testing.assert_allclose(_to_matrix(tiny, ids[:2]), want, rtol=1e-5, atol=1e-5)

    null_path = str(tmp_path / "null")
    spark.createDataFrame([(0, 1, None), (1, 0, None)], E_SCHEMA).write.parquet(null_path)
    with pytest.raises(InvalidGraphError, match="null, NaN or infinite weight"):
        propagate(types.SimpleNamespace(vertices=_graph(spark, ids[:2], tiny_x, [], [], []).vertices,
                                        edges=spark.read.parquet(null_path)),
                  edge_files=EdgeFiles(null_path), **opts).collect()


@pytest.mark.parametrize("symmetric", [False, True])
def test_partitioned_checked_features_are_read_by_the_first_round(spark, symmetric) -> None:
    """``checked_features`` with a caller's count and dense ids: the partitioned plan neither checks
    nor copies the features (its first round reads them where they are made); the result equals
    scipy and the unpromised run. Without the promise, bad features still get the check's error."""
    ids, x, src, dst, w = _random_case(49, n=40, m=200)
    if symmetric:
        keep = src < dst
        src, dst, w = np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]], np.r_[w[keep], w[keep]]
    g = _graph(spark, ids, x, src, dst, w)
    opts = {"rounds": 2, "agg": "sum", "plan": "partitioned", "num_blocks": 3, "normalize": "sym",
            "symmetric": symmetric, "dense_ids": True, "num_vertices": len(ids), "num_features": x.shape[1]}
    got = _to_matrix(propagate(g, checked_features=True, **opts), ids)
    np.testing.assert_allclose(got, _two_rounds(src, dst, w, x, "sum", "sym"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _to_matrix(propagate(g, **opts), ids), rtol=1e-6, atol=1e-6)

    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InvalidGraphError, match="NaN or infinite"):
        propagate(_graph(spark, ids, bad, src, dst, w), **opts).collect()


def test_partitioned_first_round_applies_a_width_keeping_map_in_its_blocks(spark, caplog) -> None:
    """Features that are a width-keeping ``map_features`` (a standardisation) of the graph's rows: with
    a caller's count, checked features and dense ids, the blocks apply the map to the rows they receive
    (logged) and the result equals scipy over the mapped features; a width-changing map is not fused."""
    import logging

    from lepton_spark.graph import resident
    from lepton_spark.graph.dense import DenseFn
    from lepton_spark.models.plan import Standardize

    ids, x, src, dst, w = _random_case(51, n=40, m=200)
    keep = src < dst
    src, dst, w = np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]], np.r_[w[keep], w[keep]]
    g = _graph(spark, ids, x, src, dst, w)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 0.5
    mapped = map_features(g.vertices, Standardize(mean, scale), out_dim=x.shape[1])
    assert resident.lookup_mapped(mapped) is not None
    assert resident.lookup_mapped(map_features(g.vertices, DenseFn(np.eye(5, 3)), out_dim=3)) is None
    opts = {"rounds": 2, "agg": "sum", "plan": "partitioned", "num_blocks": 3, "normalize": "sym",
            "symmetric": True, "dense_ids": True, "num_vertices": len(ids), "num_features": x.shape[1],
            "checked_features": True}
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation.partitioned_plan"):
        got = _to_matrix(propagate(types.SimpleNamespace(vertices=mapped, edges=g.edges), **opts), ids)
    assert "the blocks apply Standardize to the feature rows they receive" in caplog.text
    want = _two_rounds(src, dst, w, ((x - mean) / scale).astype(np.float32), "sum", "sym")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("native", ["off", "on"])
def test_sym_partitioned_scales_in_the_blocks(spark, native, tmp_path) -> None:
    """The partitioned plan's GCN operator (raw weights, unit loops, d^-1/2 scaling inside the blocks)
    equals scipy's sym_propagation with sparse ids, an edge from a non-vertex (ignored, not in any
    degree) and multi-edges; the same after resuming from its round state."""
    from lepton_spark.models.normalize import sym_propagation

    if native == "on" and not native_aggregate_available(spark):
        pytest.skip(f"Spark {spark.version} has no vector_sum (needs >= 4.3); numpy path covers it")
    ids, x, src, dst, w = _random_case(43, sparse_ids=True)
    g = _graph(spark, ids, x, np.append(ids[src], 10**9), np.append(ids[dst], ids[0]), np.append(w, 5.0))
    A = sp.csr_matrix((w.astype(np.float64), (src, dst)), shape=(len(ids), len(ids)))
    P = sym_propagation(A)
    want = P @ (P @ (P @ x.astype(np.float64)))
    opts = {"rounds": 3, "agg": "sum", "plan": "partitioned", "normalize": "sym", "num_blocks": 2,
            "native_aggregate": native, "checkpoint": str(tmp_path / "state")}

    def boom(k, info):
        if k == 2:
            raise RuntimeError("injected failure after round 2")

    with pytest.raises(RuntimeError, match="injected"):
        propagate(g, on_round=boom, **opts)
    resumed: list[int] = []
    out = _to_matrix(propagate(g, on_round=lambda k, info: resumed.append(k), **opts), ids)
    assert resumed == [3]  # rounds 1-2 came from their state: scaled partials, finished in round 3
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    # no resume; the edges look up their blocks through shuffle joins instead of the broadcast id map
    fresh = _to_matrix(propagate(g, config=GraphConfig(broadcast_ids_max=0), **{**opts, "checkpoint": None}), ids)
    np.testing.assert_allclose(fresh, want, rtol=1e-5, atol=1e-5)


def test_lineage_policy_due_rounds_and_one_fallback(spark, monkeypatch, caplog) -> None:
    """The one lineage policy (propagation, vertex programs, Pregel): due every `interval` rounds (0: never);
    a failed reliable checkpoint is logged once, then every cut is local."""
    import logging

    from lepton_spark.graph.propagation.rounds import LineagePolicy

    assert [k for k in range(1, 7) if LineagePolicy(interval=2).due(k)] == [2, 4, 6]
    assert not any(LineagePolicy(interval=0).due(k) for k in range(1, 5))
    df = spark.range(5)

    def broken(self, eager=True):
        raise RuntimeError("java.lang.IllegalStateException: Checkpoint directory has not been set")

    monkeypatch.setattr(type(df), "checkpoint", broken)
    policy = LineagePolicy(reliable=True, what="test")
    with caplog.at_level(logging.WARNING):
        cuts = [policy.cut(df) for _ in range(3)]
    assert [c.count() for c in cuts] == [5, 5, 5]
    warnings_ = [r.getMessage() for r in caplog.records if "falling back to localCheckpoint" in r.getMessage()]
    assert len(warnings_) == 1 and warnings_[0].startswith("test: reliable checkpoint failed (java.lang.Illegal")


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
def test_resume_with_checkpoint_interval_and_mean(spark, tmp_path, plan) -> None:
    """With checkpoint_interval=2 only rounds 2 and 4 (the last) are written: a failure in round 3 resumes
    after round 2, and the partitioned plan's pending mean division survives the write and the read."""
    ids, x, src, dst, w = _random_case(9)
    g = _graph(spark, ids, x, src, dst, w)
    ckpt = str(tmp_path / plan)

    def boom(k, info):
        if k == 3:
            raise RuntimeError("injected failure in round 3")

    with pytest.raises(RuntimeError, match="injected"):
        propagate(g, rounds=4, agg="mean", plan=plan, checkpoint=ckpt, checkpoint_interval=2, on_round=boom,
                  num_blocks=3)
    assert sorted(p.name for p in (tmp_path / plan).glob("round-*")) == ["round-0002"]
    resumed: list[int] = []
    out = propagate(g, rounds=4, agg="mean", plan=plan, checkpoint=ckpt, checkpoint_interval=2, num_blocks=3,
                    on_round=lambda k, info: resumed.append(k))
    assert resumed == [3, 4]
    np.testing.assert_allclose(_to_matrix(out, ids), kernels.reference_propagate(src, dst, w, x, 4, "mean"),
                               rtol=1e-5, atol=1e-5)


def _case_and_reference(seed: int, rounds: int, agg: str, normalize: str | None):
    """A random case with sparse ids and scipy's result after ``rounds``. ``normalize="sym"``: GCN's
    operator, which is for symmetric graphs, so the edges are made so first (each pair once each way,
    no self-loops, weight 1) and the reference is ``D^-1/2 (A + I) D^-1/2`` applied ``rounds`` times."""
    from lepton_spark.models.normalize import sym_propagation

    ids, x, src, dst, w = _random_case(seed, sparse_ids=True)
    if normalize != "sym":
        return ids, x, src, dst, w, kernels.reference_propagate(src, dst, w, x, rounds, agg)
    pairs = sorted({(int(a), int(b)) for a, b in zip(src, dst) if a != b} |
                   {(int(b), int(a)) for a, b in zip(src, dst) if a != b})
    src, dst = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    P = sym_propagation(sp.csr_matrix((np.ones(len(src)), (dst, src)), shape=(len(ids), len(ids))))
    want = x.astype(np.float64)
    for _ in range(rounds):
        want = P @ want
    return ids, x, src, dst, np.ones(len(pairs), np.float32), want


@pytest.mark.parametrize("files", ["written", "unwritable", "off"])
@pytest.mark.parametrize(("agg", "normalize"), [("sum", "sym"), ("max", None)])
def test_partitioned_blocks_keep_their_own_partials_in_executor_files(spark, monkeypatch, caplog, tmp_path,
                                                                      files, agg, normalize) -> None:
    """Each block keeps the partial for its own vertices in a file on its executor and reads it in the
    next round (``written``: made, then removed by the round that read it, the last by the final step).
    When a block cannot keep it (``unwritable``: the root is a plain file) its miss row makes the driver
    start the rounds again with every partial shipped; ``off`` (``graph.worker_block_files: false``)
    ships them from the start. All equal scipy (GCN's operator: the own partial carries the loops)."""
    import logging

    from lepton_spark.graph.propagation import partitioned_plan

    ids, x, src, dst, w, want = _case_and_reference(29, 3, agg, normalize)
    root = tmp_path / "root"
    if files == "unwritable":
        root.write_text("not a directory")
    monkeypatch.setattr(partitioned_plan._PartitionedRounds, "own_root", str(root))
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation.partitioned_plan"):
        out = propagate(g, rounds=3, agg=agg, plan="partitioned", native_aggregate="off", num_blocks=3,
                        normalize=normalize, symmetric=normalize == "sym",
                        config=GraphConfig(worker_block_files=files != "off"))
        got = _to_matrix(out, ids)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    restarts = [r for r in caplog.records if "the rounds start again with every partial shipped" in r.getMessage()]
    assert len(restarts) == (1 if files == "unwritable" else 0)
    if files == "written":
        assert (root / "lepton-blocks").is_dir() and not any((root / "lepton-blocks").iterdir())
    if files == "off":
        assert not root.exists()


@pytest.mark.parametrize(("agg", "normalize"), [("sum", "sym"), ("mean", None)])
def test_partitioned_own_partials_in_the_round_store_resume(spark, tmp_path, agg, normalize) -> None:
    """With a round store the tasks write (local master), each block keeps its own partial beside the
    round's state (``round-NNNN/own``) instead of in it; a run that failed after round 2 resumes from
    the store (rounds 3 and 4 only) and equals scipy; the store records it in its signature, so a run
    that ships every partial does not resume from it (and the other way round). Where the tasks do not
    share the driver's disk (Spark Connect: tests/cluster) every partial is in the store, as before."""
    import json

    from lepton_spark import task_writes

    ids, x, src, dst, w, want = _case_and_reference(13, 4, agg, normalize)
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    ckpt = tmp_path / "store"
    opts = {"rounds": 4, "agg": agg, "plan": "partitioned", "num_blocks": 3, "normalize": normalize,
            "symmetric": normalize == "sym", "checkpoint": str(ckpt), "native_aggregate": "off"}

    def boom(k, info):
        if k == 2:
            raise RuntimeError("injected failure after round 2")

    in_store = task_writes.tasks_share_disk(spark, str(ckpt))
    with pytest.raises(RuntimeError, match="injected"):
        propagate(g, on_round=boom, **opts)
    assert json.loads((ckpt / "_signature.json").read_text()).get("own_partials") == ("in the store" if in_store else None)
    for k in (1, 2):
        own = ckpt / f"round-{k:04d}" / "own" / "lepton-blocks" / "store"
        want_files = sorted(f"r{k}-{pid}" for pid in _block_labels(spark, 3)) if in_store else []
        got = sorted(p.name for p in own.iterdir()) if own.exists() else []
        assert got == want_files
    resumed: list[int] = []
    out = propagate(g, on_round=lambda k, info: resumed.append(k), **opts)
    assert resumed == [3, 4]
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(_to_matrix(out, ids), want, rtol=1e-5, atol=1e-6 * scale)
    shipped: list[int] = []  # every partial shipped: another computation's store, started again
    again = propagate(g, on_round=lambda k, info: shipped.append(k), config=GraphConfig(worker_block_files=False),
                      **opts)
    # (without own files in the store the signature is unchanged: nothing left to compute)
    assert shipped == ([1, 2, 3, 4] if in_store else []) and \
        "own_partials" not in json.loads((ckpt / "_signature.json").read_text())
    np.testing.assert_allclose(_to_matrix(again, ids), want, rtol=1e-5, atol=1e-6 * scale)


def _block_labels(spark, blocks: int) -> list[int]:
    from lepton_spark.graph.propagation.partitioned_plan import block_keys

    return block_keys(spark, blocks)


def test_partitioned_own_partial_missing_from_the_round_store_starts_again(spark, tmp_path, caplog) -> None:
    """A resumed run whose last stored round lost its own-partial files (``round-0002/own`` removed
    after a failure) has its blocks answer with miss rows as they write round 3; the driver then starts
    the rounds again with every partial shipped and a fresh store, and the result equals scipy. (Where
    the tasks do not share the driver's disk nothing is kept there, and the run resumes as usual.)"""
    import logging
    import shutil

    from lepton_spark import task_writes

    ids, x, src, dst, w, want = _case_and_reference(17, 4, "sum", "sym")
    g = _graph(spark, ids, x, ids[src], ids[dst], w)
    ckpt = tmp_path / "store"
    opts = {"rounds": 4, "agg": "sum", "plan": "partitioned", "num_blocks": 3, "normalize": "sym",
            "symmetric": True, "checkpoint": str(ckpt), "native_aggregate": "off"}
    in_store = task_writes.tasks_share_disk(spark, str(ckpt))

    def boom(k, info):
        if k == 2:
            raise RuntimeError("injected failure after round 2")

    with pytest.raises(RuntimeError, match="injected"):
        propagate(g, on_round=boom, **opts)
    shutil.rmtree(ckpt / "round-0002" / "own", ignore_errors=True)
    ran: list[int] = []
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation.partitioned_plan"):
        out = propagate(g, on_round=lambda k, info: ran.append(k), **opts)
    restarts = [r for r in caplog.records if "the rounds start again with every partial shipped" in r.getMessage()]
    assert (len(restarts), ran) == ((1, [1, 2, 3, 4]) if in_store else (0, [3, 4]))
    np.testing.assert_allclose(_to_matrix(out, ids), want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
