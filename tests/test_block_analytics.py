"""Analytics on the block engine, both plans, against networkx and a hand-computed case.

Graphs have isolated vertices, self-loops, multi-edges and edges to ids that are not vertices; each
algorithm runs on the broadcast operator and on the partitioned engine (2 and 3 blocks), with long
and with string ids.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from lepton_spark.analytics import local
from lepton_spark.analytics.communities import label_propagation
from lepton_spark.analytics.components import connected_components
from lepton_spark.analytics.pagerank import page_rank
from lepton_spark.analytics.paths import shortest_paths
from lepton_spark.graph import GraphFrame
from lepton_spark.graph.kernels import mode_of_counts, reduce_rows

PLANS = [("broadcast", None), ("partitioned", 3)]
# (plan, blocks, string ids): long ids on the broadcast plan are also covered by tests/test_analytics.py
ID_CASES = [("broadcast", None, True), ("partitioned", 3, False), ("partitioned", 2, True)]


def _graph(seed: int = 3, n: int = 40, m: int = 90) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10_000, size=n, replace=False)).astype(np.int64)
    # edges among the first n-4 vertices (the last 4 are isolated), a few self-loops and multi-edges
    a = rng.integers(0, n - 4, m)
    b = rng.integers(0, n - 4, m)
    src = np.concatenate([ids[a], ids[[0, 1, 1]], [ids[2]]])
    dst = np.concatenate([ids[b], ids[[0, 5, 5]], [99_999]])  # 99_999 is not a vertex
    return ids, src, dst


def _symmetric(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (src, dst) pair once each way, sorted: a symmetric edge list without multi-edges."""
    pairs = sorted({(int(a), int(b)) for a, b in zip(src, dst)} | {(int(b), int(a)) for a, b in zip(src, dst)})
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def _frame(spark, ids, src, dst, as_str: bool = False) -> GraphFrame:
    conv = (lambda x: f"v{int(x):05d}") if as_str else int  # zero-padded: string order = numeric order
    t = "string" if as_str else "long"
    v = spark.createDataFrame([(conv(i),) for i in ids], f"id {t}")
    e = spark.createDataFrame([(conv(s), conv(d)) for s, d in zip(src, dst)], f"src {t}, dst {t}")
    return GraphFrame(v, e, engine="builtin")


@pytest.mark.parametrize(("plan", "blocks"), PLANS)
def test_pagerank_equals_networkx(spark, plan, blocks):
    # the edge to a non-vertex is left out here (networkx has no such edge); the personalised test
    # below keeps it and checks that it counts in the out-degree
    ids, src, dst = _graph()
    ok = np.isin(dst, ids)
    g = _frame(spark, ids, src[ok], dst[ok])
    got = page_rank(g, tol=1e-7, plan=plan, num_blocks=blocks).vertices.toPandas()
    G = nx.MultiDiGraph()
    G.add_nodes_from(ids.tolist())
    G.add_edges_from(zip(src[ok].tolist(), dst[ok].tolist()))
    ref = nx.pagerank(G, alpha=0.85, tol=1e-13, max_iter=10_000)
    m = dict(zip(got["id"], got["pagerank"]))
    np.testing.assert_allclose([m[i] / len(ids) for i in ids], [ref[i] for i in ids.tolist()], atol=1e-6)


@pytest.mark.parametrize(("plan", "blocks"), PLANS)
def test_pagerank_fixed_iterations_personalised(spark, plan, blocks):
    ids, src, dst = _graph(seed=5)
    g = _frame(spark, ids, src, dst, as_str=True)
    got = page_rank(g, maxIter=7, sourceId=f"v{ids[1]:05d}", plan=plan, num_blocks=blocks).vertices.toPandas()
    # hand-rolled GraphX iteration, 7 rounds, personalised at ids[1], rescaled to sum 1
    n = len(ids)
    pos = {int(v): i for i, v in enumerate(ids)}
    outdeg = np.zeros(n)
    for s in src:
        outdeg[pos[int(s)]] += 1
    x = np.zeros(n)
    x[1] = 1.0
    for _ in range(7):
        s_ = np.zeros(n)
        for s, d in zip(src, dst):
            if int(d) in pos:
                s_[pos[int(d)]] += x[pos[int(s)]] / outdeg[pos[int(s)]]
        x = np.where(np.arange(n) == 1, 0.15, 0.0) + 0.85 * s_
    x = x / x.sum()
    m = dict(zip(got["id"], got["pagerank"]))
    np.testing.assert_allclose([m[f"v{i:05d}"] for i in ids], x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("plan", "blocks", "as_str"), ID_CASES)
def test_components_equal_networkx(spark, plan, blocks, as_str):
    ids, src, dst = _graph(seed=7, n=50, m=35)  # sparse: several components
    g = _frame(spark, ids, src, dst, as_str=as_str)
    got = connected_components(g, plan=plan, num_blocks=blocks, useLabelsAsComponents=True).toPandas()
    G = nx.Graph()
    G.add_nodes_from(ids.tolist())
    ok = np.isin(dst, ids)
    G.add_edges_from(zip(src[ok].tolist(), dst[ok].tolist()))
    expected = {}
    for comp in nx.connected_components(G):
        for v in comp:
            expected[v] = min(comp)
    conv = (lambda x: f"v{int(x):05d}") if as_str else int
    m = dict(zip(got["id"], got["component"]))
    assert {i: m[conv(i)] for i in ids.tolist()} == {i: conv(c) for i, c in expected.items()}
    assert len(set(expected.values())) > 3


@pytest.mark.parametrize(("plan", "blocks", "as_str"), ID_CASES)
def test_label_propagation_equals_scipy_twin(spark, plan, blocks, as_str):
    ids, src, dst = _graph(seed=11)
    g = _frame(spark, ids, src, dst, as_str=as_str)
    got = label_propagation(g, 4, plan=plan, num_blocks=blocks).toPandas()
    expected = local.label_propagation(ids, src, dst, 4)  # the numpy/scipy twin (GraphX semantics)
    conv = (lambda x: f"v{int(x):05d}") if as_str else int
    m = dict(zip(got["id"], got["label"]))
    assert [m[conv(i)] for i in ids] == [conv(x) for x in expected]


@pytest.mark.parametrize(("plan", "blocks"), PLANS)
def test_label_propagation_by_hand(spark, plan, blocks):
    # 1-2, 1-3, 1-4 (star around 1) and 5 isolated; 2 hears only 1, 1 hears 2, 3, 4 once each:
    # round 1: 1 -> min(2, 3, 4) = 2, leaves 2, 3, 4 -> 1; 5 keeps 5
    g = _frame(spark, np.array([1, 2, 3, 4, 5]), np.array([1, 1, 4]), np.array([2, 3, 1]))
    got = label_propagation(g, 1, plan=plan, num_blocks=blocks).toPandas()
    assert dict(zip(got["id"], got["label"])) == {1: 2, 2: 1, 3: 1, 4: 1, 5: 5}


@pytest.mark.parametrize(("plan", "blocks"), PLANS)
def test_shortest_paths_equal_networkx(spark, plan, blocks):
    ids, src, dst = _graph(seed=13, n=30, m=50)
    g = _frame(spark, ids, src, dst)
    marks = [int(ids[0]), int(ids[3]), 123_456]  # the last is not a vertex: never reached
    got = shortest_paths(g, marks, plan=plan, num_blocks=blocks).toPandas()
    G = nx.DiGraph()
    G.add_nodes_from(ids.tolist())
    ok = np.isin(dst, ids)
    G.add_edges_from(zip(src[ok].tolist(), dst[ok].tolist()))
    for _, row in got.iterrows():
        expected = {}
        for mk in marks[:2]:
            if nx.has_path(G, row["id"], mk):
                expected[mk] = nx.shortest_path_length(G, row["id"], mk)
        assert dict(row["distances"]) == expected


@pytest.mark.parametrize(("plan", "blocks"), PLANS)
def test_symmetric_graph_reuses_directed_blocks(spark, plan, blocks):
    """vertex_analytics(symmetric=True) packs one set of blocks and gives the same tables."""
    from lepton_spark.analytics.batch import vertex_analytics
    from lepton_spark.config import GraphConfig

    ids, src, dst = _graph(seed=17, n=40, m=40)
    ok = np.isin(dst, ids) & (src != dst)
    s_arr, d_arr = _symmetric(src[ok], dst[ok])
    g = _frame(spark, ids, s_arr, d_arr)
    cfg = GraphConfig(plan=plan, num_partitions=blocks or 0)
    tables = vertex_analytics(g.vertices, g.edges, local_max_edges=0, lpa_iters=3, config=cfg, symmetric=True)
    expected = {"components": local.components(ids, s_arr, d_arr),
                "communities": local.label_propagation(ids, s_arr, d_arr, 3),
                "pagerank": local.pagerank(ids, s_arr, d_arr, 0.15, 20)}
    for name, col in (("components", "component"), ("communities", "label"), ("pagerank", "pagerank")):
        got = tables[name].toPandas().set_index("id").loc[ids, col].to_numpy()
        np.testing.assert_allclose(got, expected[name], rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("broadcast_ids_max", [0, 1_000])
def test_partitioned_blocks_with_and_without_the_broadcast_id_map(spark, broadcast_ids_max):
    """The partitioned engine's edges find their blocks by shuffle joins (``broadcast_ids_max`` 0) or
    in a broadcast id map: PageRank (whose out-degrees count the edge to a non-vertex) and
    components equal the local twins either way."""
    from lepton_spark.config import GraphConfig
    from lepton_spark.graph.programs import BlockEngine, components_program, indexed_graph, pagerank_program

    ids, src, dst = _graph(seed=23)
    g = _frame(spark, ids, src, dst)
    cfg = GraphConfig(plan="partitioned", broadcast_ids_max=broadcast_ids_max)
    with BlockEngine(indexed_graph(g.vertices, g.edges), config=cfg, num_blocks=3) as engine:
        pr = engine.run(pagerank_program(0.15), 20).toPandas().set_index("id").loc[ids, "value"].to_numpy()
        cc = engine.run(components_program(), 100).toPandas().set_index("id").loc[ids, "value"].to_numpy()
    ok = np.isin(dst, ids)
    np.testing.assert_array_equal(cc, local.components(ids, src[ok], dst[ok]))
    # the unnormalised GraphX iteration (from 1.0, 20 rounds) by hand, out-degrees over every edge
    pos = {int(v): i for i, v in enumerate(ids)}
    outdeg = np.bincount([pos[int(s)] for s in src], minlength=len(ids)).astype(float)
    x = np.ones(len(ids))
    for _ in range(20):
        acc = np.zeros(len(ids))
        for s, d in zip(src, dst):
            if int(d) in pos:
                acc[pos[int(d)]] += x[pos[int(s)]] / outdeg[pos[int(s)]]
        x = 0.15 + 0.85 * acc
    np.testing.assert_allclose(pr, x, rtol=1e-9)


def test_partitioned_blocks_in_many_pieces(spark, monkeypatch):
    """Each block's CSR is stored as several rows of whole CSR rows (5 entries here): PageRank,
    components, LPA and shortest paths still equal their local twins and networkx."""
    from lepton_spark.graph import partitioned
    from lepton_spark.graph.programs import (
        BlockEngine,
        components_program,
        indexed_graph,
        label_propagation_program,
        pagerank_program,
    )

    monkeypatch.setattr(partitioned, "_PIECE_ENTRIES", 5)
    ids, src, dst = _graph(seed=29)
    ok = np.isin(dst, ids)
    g = _frame(spark, ids, src[ok], dst[ok])
    assert ok.sum() > 2 * 3 * 5  # several pieces in each of the 2 blocks
    with BlockEngine(indexed_graph(g.vertices, g.edges), plan="partitioned", num_blocks=2) as engine:
        def run(prog, iters):
            return engine.run(prog, iters).toPandas().set_index("id").loc[ids, "value"].to_numpy()

        pr, cc, lpa = run(pagerank_program(0.15), 8), run(components_program(), 100), \
            run(label_propagation_program(), 4)
    pos = np.searchsorted(ids, src[ok]), np.searchsorted(ids, dst[ok])  # the unnormalised GraphX iteration
    outdeg = np.bincount(pos[0], minlength=len(ids)).astype(float)
    x = np.ones(len(ids))
    for _ in range(8):
        x = 0.15 + 0.85 * np.bincount(pos[1], weights=x[pos[0]] / outdeg[pos[0]], minlength=len(ids))
    np.testing.assert_allclose(pr, x, rtol=1e-9)
    np.testing.assert_array_equal(cc, local.components(ids, src[ok], dst[ok]))
    np.testing.assert_array_equal(lpa, local.label_propagation(ids, src[ok], dst[ok], 4))
    marks = [int(ids[0]), int(ids[3])]
    got = shortest_paths(g, marks, plan="partitioned", num_blocks=2).toPandas()
    G = nx.DiGraph()
    G.add_nodes_from(ids.tolist())
    G.add_edges_from(zip(src[ok].tolist(), dst[ok].tolist()))
    for _, row in got.iterrows():
        assert dict(row["distances"]) == {mk: nx.shortest_path_length(G, row["id"], mk) for mk in marks
                                          if nx.has_path(G, row["id"], mk)}


def test_analytics_run_on_the_partitioned_propagation_blocks(spark, monkeypatch):
    """On a symmetric graph, the analytics of a run whose partitioned propagation left its (GCN-scaled)
    edge blocks in the operator cache run on those blocks (packing their own would fail here) and
    give the local twins' tables; the propagation itself equals scipy's D^-1/2 (A + I) D^-1/2 x."""
    import scipy.sparse as sp

    from lepton_spark.analytics.batch import vertex_analytics
    from lepton_spark.config import GraphConfig
    from lepton_spark.graph import partitioned
    from lepton_spark.graph.propagation import OperatorCache, propagate
    from lepton_spark.models.normalize import sym_propagation

    ids, src, dst = _graph(seed=31, n=40, m=50)
    ok = np.isin(dst, ids) & (src != dst)
    s_arr, d_arr = _symmetric(src[ok], dst[ok])
    x = np.random.default_rng(0).normal(size=(len(ids), 3)).astype(np.float32)
    v = spark.createDataFrame([(int(i), [float(a) for a in r]) for i, r in zip(ids, x)], "id long, features array<float>")
    e = spark.createDataFrame([(int(a), int(b), 1.0) for a, b in zip(s_arr, d_arr)], "src long, dst long, weight float")
    cache = OperatorCache()
    try:
        out = propagate(GraphFrame(v, e, engine="builtin"), rounds=1, agg="sum", plan="partitioned", num_blocks=3,
                        normalize="sym", symmetric=True, operators=cache, operator_key="g")
        got = out.toPandas().set_index("id").loc[ids, "features"]
        pos = np.searchsorted(ids, s_arr), np.searchsorted(ids, d_arr)
        P = sym_propagation(sp.csr_matrix((np.ones(len(s_arr)), pos), shape=(len(ids), len(ids))))
        np.testing.assert_allclose(np.stack(got.to_numpy()), P @ x.astype(np.float64), rtol=1e-5, atol=1e-5)

        def no_packing(*_a, **_k):
            raise AssertionError("the analytics packed edge blocks of their own")

        monkeypatch.setattr(partitioned, "_pack_edges", no_packing)
        tables = vertex_analytics(v.select("id"), e, local_max_edges=0, lpa_iters=3, symmetric=True,
                                  config=GraphConfig(plan="partitioned"), operators=cache, operator_key="g")
        for name, col in (("components", "component"), ("communities", "label"), ("pagerank", "pagerank")):
            tables[name] = tables[name].toPandas().set_index("id").loc[ids, col].to_numpy()
    finally:
        cache.close()
    np.testing.assert_array_equal(tables["components"], local.components(ids, s_arr, d_arr))
    np.testing.assert_array_equal(tables["communities"], local.label_propagation(ids, s_arr, d_arr, 3))
    np.testing.assert_allclose(tables["pagerank"], local.pagerank(ids, s_arr, d_arr, 0.15, 20), rtol=1e-9)


@pytest.mark.parametrize("direction", ["in"])
def test_partitioned_mode_push_and_pull(spark, direction):
    """A ``mode`` program on the partitioned engine: over directed in-edges the blocks push
    pre-counted partials, over undirected (symmetric) edges they pull their neighbours' values; both
    equal a plain count of what each vertex hears (ties to the smallest value). Only ``in`` runs here:
    LPA (undirected, so pulled) is checked against its twin and by hand above, and "undirected"
    passes too when added to the list."""
    import dataclasses

    from lepton_spark.graph.programs import BlockEngine, indexed_graph, label_propagation_program

    ids, src, dst = _graph(seed=37)
    ok = np.isin(dst, ids)
    s, d = src[ok], dst[ok]
    g = _frame(spark, ids, s, d)
    prog = dataclasses.replace(label_propagation_program(), direction=direction)
    with BlockEngine(indexed_graph(g.vertices, g.edges), plan="partitioned", num_blocks=3) as engine:
        got = engine.run(prog, 3).toPandas().set_index("id").loc[ids, "value"].to_numpy()
    pairs = list(zip(s.tolist(), d.tolist()))
    if direction == "undirected":
        pairs += [(b, a) for a, b in pairs]
    labels = {int(i): int(i) for i in ids}
    for _ in range(3):
        heard: dict[int, list[int]] = {}
        for a, b in pairs:
            heard.setdefault(b, []).append(labels[a])
        new = {}
        for v, lab in labels.items():
            if v in heard:
                vals, counts = np.unique(heard[v], return_counts=True)
                new[v] = int(vals[np.argmax(counts)])  # np.unique sorts: the first maximum is the smallest
            else:
                new[v] = lab
        labels = new
    assert got.tolist() == [labels[int(i)] for i in ids]


def test_mode_and_min_kernels_by_hand():
    # rows: 0 <- [5, 3, 5, 3, 7] (tie 5/3 -> 3), 1 <- [9] , 2 <- [4, 4, 1]
    indptr = np.array([0, 5, 6, 9])
    x = np.array([5, 3, 5, 3, 7, 9, 4, 4, 1], dtype=np.int64)
    idx = np.arange(9, dtype=np.int32)
    w = np.ones(9, np.float32)
    assert reduce_rows(indptr, idx, w, x, "mode").tolist() == [3, 9, 4]
    assert reduce_rows(indptr, idx, w, x, "min").tolist() == [3, 9, 1]
    # summed counts from several partials: row 0 gets 2x label 8 and 1+1 of label 2 -> tie -> 2
    out = mode_of_counts(2, np.array([0, 0, 0, 1]), np.array([8, 2, 2, 6]), np.array([2, 1, 1, 3]))
    assert out.tolist() == [2, 6]


@pytest.mark.parametrize(("low", "high"), [(0, 6), (-40, 40), (0, 1 << 40), (-(1 << 61), 1 << 61)])
def test_mode_of_uncounted_pairs_equals_python_counting(low, high):
    """mode_of_counts without counts (label propagation's pull rounds; one sort of packed keys) equals
    counting by hand: per row the most frequent value, ties to the smallest, rows with no pair 0 --
    with few and many labels, negative labels, and labels too wide for packed keys (general path)."""
    rng = np.random.default_rng(11)
    n, m = 50, 3000
    rows = rng.integers(0, n - 5, m)  # rows n-5.. get no pair
    vals = rng.integers(low, high, m, dtype=np.int64) if high - low < 100 else \
        rng.choice(rng.integers(low, high, 12, dtype=np.int64), m)  # a few wide labels: counts tie and differ
    want = np.zeros(n, dtype=np.int64)
    for r in range(n):
        got = vals[rows == r]
        if len(got):
            u, c = np.unique(got, return_counts=True)
            want[r] = u[np.argmax(c)]  # np.unique sorts: the first maximum is the smallest
    assert mode_of_counts(n, rows, vals, None).tolist() == want.tolist()
    assert mode_of_counts(n, rows, vals, np.ones(m, np.int64)).tolist() == want.tolist()
    assert mode_of_counts(n, rows[:0], vals[:0], None).tolist() == [0] * n


@pytest.mark.parametrize(("dtype", "high"), [(np.int64, 1_000_000), (np.int32, 1 << 31), (np.int64, 1 << 40),
                                             (np.int64, 500), (np.uint32, 1 << 32)])
def test_stable_argsort_is_numpys_stable_argsort(dtype, high):
    """kernels.stable_argsort (two 16-bit radix passes for keys in [0, 2**32)) returns exactly numpy's
    stable permutation: ties keep their input order; keys beyond 2**32 and negative keys take numpy's."""
    from lepton_spark.graph.kernels import stable_argsort

    rng = np.random.default_rng(3)
    keys = rng.integers(0, high, 200_000, dtype=np.int64).astype(dtype)
    keys[::7] = keys[0]  # many ties
    np.testing.assert_array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))
    neg = keys.astype(np.int64) - high // 2
    np.testing.assert_array_equal(stable_argsort(neg), np.argsort(neg, kind="stable"))
    assert stable_argsort(np.zeros(0, np.int64)).tolist() == []


@pytest.mark.parametrize("undirected", [False, True])
def test_edge_splitter_cuts_every_edge_into_its_block(monkeypatch, undirected):
    """The packing's pre-shuffle split: every edge (and, undirected, its reverse) lands in exactly one
    row, the row of block ``dst % parts`` labelled with that block's key, in pieces of at most
    ``_SPLIT_EDGES`` input edges; null weights stay NaN; ids < 0 (not a vertex) still travel."""
    import pyarrow as pa

    from lepton_spark.graph import blocks
    from lepton_spark.graph.arrow import binary_cells

    monkeypatch.setattr(blocks, "_SPLIT_EDGES", 50)
    rng = np.random.default_rng(5)
    m, keys = 230, [7, 3, 11]
    src = rng.integers(-1, 40, m)
    dst = rng.integers(-1, 40, m)
    wt = rng.random(m).astype(np.float32)
    wt[::9] = np.nan
    weight = pa.array(np.where(np.isnan(wt), None, wt).tolist(), pa.float32())
    batches = [pa.RecordBatch.from_arrays([pa.array(src[i:i + 30]), pa.array(dst[i:i + 30]), weight[i:i + 30]],
                                          names=["src", "dst", "weight"]) for i in range(0, m, 30)]
    rows = list(blocks._edge_splitter(keys, undirected)(iter(batches)))
    assert len(rows) == 4  # pieces of 60, 60, 60 and 50 input edges (batches of 30, flushed at >= 50)
    got = []
    for b in rows:
        for pid, s_, d_, w_ in zip(b.column("pid").to_pylist(),
                                   *[binary_cells(b.column(k)) for k in ("src", "dst", "weight")]):
            s_, d_ = np.frombuffer(s_, np.int32), np.frombuffer(d_, np.int32)  # small ids travel as int32
            w_ = np.frombuffer(w_, np.float32)
            assert len(s_) and set((d_ % 3).tolist()) == {keys.index(pid)}
            got += list(zip(s_.tolist(), d_.tolist(), np.nan_to_num(w_, nan=-1.0).tolist()))
    want = list(zip(src.tolist(), dst.tolist(), np.nan_to_num(wt, nan=-1.0).tolist()))
    if undirected:
        want += [(d, s, w) for s, d, w in want]
    assert sorted(got) == sorted(want)
    # a block's rows read back give its edges (the packing task's input); ids beyond int32 travel as int64
    s_l, d_l, w_l = blocks._split_arrays(iter(rows))
    assert sum(len(a) for a in s_l) == len(want) and len(s_l) == len(d_l) == len(w_l)
    big = pa.RecordBatch.from_arrays([pa.array([1 << 40, 5]), pa.array([3, 2]), pa.array([1.0, 2.0], pa.float32())],
                                     names=["src", "dst", "weight"])
    wide = list(blocks._edge_splitter(keys, undirected)(iter([big])))
    assert wide[0].column("wide").to_pylist() == [True] * wide[0].num_rows
    s_l, d_l, _ = blocks._split_arrays(iter(wide))
    pairs = sorted(zip(np.concatenate(s_l).tolist(), np.concatenate(d_l).tolist()))
    assert pairs == sorted([(1 << 40, 3), (5, 2), *([(3, 1 << 40), (2, 5)] if undirected else [])])


def test_stale_exchange_directories_of_dead_drivers_are_removed(tmp_path):
    """A killed driver leaves its /dev/shm exchange behind; the next run removes it (not live ones)."""
    import os
    import subprocess
    import sys

    from lepton_spark.graph.blocks import EXCHANGE_PREFIX, remove_stale_exchanges

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / f"{EXCHANGE_PREFIX}{dead}-abc"
    live = tmp_path / f"{EXCHANGE_PREFIX}{os.getppid()}-def"
    other = tmp_path / "lepton-blocks-nopid"
    for d in (stale, live, other):
        (d / "block-1").mkdir(parents=True)
    assert remove_stale_exchanges(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()


def test_broadcast_operator_rounds_reuse_one_job_per_reduction(spark):
    """In local mode the operator makes one round DataFrame per (reduction, weighting) and collects it
    every round, its tasks reading the round's input from fixed file names: rounds of another dtype
    and width through the same job, and another reduction, still equal scipy."""
    import scipy.sparse as sp

    from lepton_spark.graph.blocks import BroadcastOperator

    ids, src, dst = _graph(seed=11)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 2.0, len(src))
    edges = spark.createDataFrame([(int(s), int(d), float(x)) for s, d, x in zip(src, dst, w)],
                                  "src long, dst long, weight double")
    pos = {int(v): i for i, v in enumerate(ids)}
    keep = [k for k in range(len(src)) if int(dst[k]) in pos]
    # A[v, u] = summed weight of the edges u -> v (float32 weights, as the blocks store them)
    rows, cols = [pos[int(dst[k])] for k in keep], [pos[int(src[k])] for k in keep]
    a = sp.csr_matrix((w[keep].astype(np.float32).astype(np.float64), (rows, cols)), shape=(len(ids), len(ids)))
    with BroadcastOperator.prepare(spark, ids, edges, 3) as op:
        assert op.block_paths is not None  # the local-mode path this test is about
        x1 = rng.normal(size=len(ids))
        x2 = rng.normal(size=(len(ids), 3)).astype(np.float32)
        got1, _ = op.apply(x1, "sum")
        got2, _ = op.apply(x2, "sum")
        got3, _ = op.apply(x1, "sum", weighted=False)
        labels = rng.integers(0, 5, len(ids)).astype(np.int64)
        got4, received = op.apply(labels, "min")
        again, _ = op.apply(x1, "sum")
        assert len(op._round_jobs) == 3  # (sum, weighted), (sum, unweighted), (min, weighted)
    np.testing.assert_allclose(got1, a @ x1, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got2, a @ x2.astype(np.float64), rtol=1e-5, atol=1e-5)
    counts = sp.csr_matrix((np.ones(len(keep)), (rows, cols)), shape=a.shape)  # multi-edges count twice
    np.testing.assert_allclose(got3, counts @ x1, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(again, got1)
    assert got2.dtype == np.float32 and got4.dtype == np.int64
    for v in range(len(ids)):
        senders = [c for r, c in zip(rows, cols) if r == v]
        assert received[v] == bool(senders)
        if senders:
            assert got4[v] == min(labels[s] for s in senders)


@pytest.mark.parametrize(("plan", "exchange"), [("partitioned", True), ("broadcast", True), ("broadcast", False)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_programs_sharing_rounds_equal_their_own_runs(spark, caplog, symmetric, plan, exchange):
    """``BlockEngine.run_many`` on either plan: PageRank for 12 rounds, components to their fixed
    point, LPA for 3 rounds and a 0-round program stop at different rounds, and each result equals
    the program's own run exactly. On a symmetric graph all four share one set of rounds over the
    directed blocks (the broadcast plan: one job a round for all of them); otherwise PageRank
    (in-edges) runs apart from the undirected programs, and vertex_analytics's partitioned tables
    (so split) equal the broadcast plan's. The broadcast plan without a local exchange (a cluster's:
    the blocks are cached rows and the messages ride in the task closure) shares its rounds too."""
    import logging

    from pyspark.testing import assertDataFrameEqual

    from lepton_spark.analytics.batch import vertex_analytics
    from lepton_spark.config import GraphConfig
    from lepton_spark.graph.programs import (
        BlockEngine,
        components_program,
        indexed_graph,
        label_propagation_program,
        pagerank_program,
    )

    ids, src, dst = _graph(seed=41, n=60, m=70)
    ok = np.isin(dst, ids)
    s, d = src[ok], dst[ok]
    if symmetric:
        s, d = _symmetric(s, d)
    g = _frame(spark, ids, s, d)
    programs = [(pagerank_program(0.15), 12), (components_program(), 2**31 - 2),
                (label_propagation_program(), 3), (pagerank_program(0.15), 0)]
    ig = indexed_graph(g.vertices, g.edges)
    cfg = GraphConfig(local_exchange=exchange)
    with BlockEngine(ig, plan=plan, num_blocks=3, symmetric=symmetric, config=cfg) as engine:
        alone = [engine.run(p, m).toPandas() for p, m in programs]
    caplog.clear()
    logger = "lepton_spark.graph.partitioned" if plan == "partitioned" else "lepton_spark.graph.programs"
    with caplog.at_level(logging.INFO, logger=logger), \
            BlockEngine(ig, plan=plan, num_blocks=3, symmetric=symmetric, config=cfg) as engine:
        together = [df.toPandas() for df in engine.run_many(programs)]
    for got, ref in zip(together, alone):
        assertDataFrameEqual(spark.createDataFrame(got), spark.createDataFrame(ref), rtol=1e-12, atol=0.0)

    def rounds(name: str) -> int:
        return sum(1 for r in caplog.records if r.getMessage().startswith(f"{name}[{plan}] round"))

    assert (rounds("pagerank"), rounds("labelPropagation")) == (12, 3) and 3 < rounds("components") < 12
    shared = [r.getMessage() for r in caplog.records if "rounds shared with" in r.getMessage()]
    assert shared and all(("pagerank+components+labelPropagation+pagerank" in m) == symmetric for m in shared)
    if plan == "broadcast":  # one line per set of shared rounds: its programs and the rounds it ran
        ends = [r.getMessage() for r in caplog.records if "[broadcast]: " in r.getMessage()]
        want = ["pagerank+components+labelPropagation+pagerank[broadcast]: 12 rounds"] if symmetric else \
            ["pagerank+pagerank[broadcast]: 12 rounds", "components+labelPropagation[broadcast]: "]
        assert len(ends) == len(want) and all(m.startswith(w) for m, w in zip(sorted(ends), sorted(want)))
    if not symmetric and plan == "partitioned":  # (vertex_analytics with the default exchange)
        part, bcast = ({k: df.toPandas() for k, df in vertex_analytics(
            g.vertices, g.edges, local_max_edges=0, lpa_iters=3, config=GraphConfig(plan=plan, num_partitions=3)
        ).items()} for plan in ("partitioned", "broadcast"))
        for name in ("pagerank", "components", "communities"):
            assertDataFrameEqual(spark.createDataFrame(part[name]), spark.createDataFrame(bcast[name]),
                                 rtol=1e-9, atol=0.0)


def test_partitioned_rounds_run_without_adaptive_execution_and_restore_it(spark, monkeypatch):
    """The partitioned engine's rounds run with ``ROUND_CONF`` (adaptive execution off: their shuffles
    have fixed partition counts) and leave the session's own setting as it was; results unchanged."""
    from lepton_spark.graph import partitioned

    seen = []
    real = partitioned._run

    def spy(spark_, *args, **kwargs):
        seen.append(spark_.conf.get("spark.sql.adaptive.enabled"))
        return real(spark_, *args, **kwargs)

    monkeypatch.setattr(partitioned, "_run", spy)
    before = spark.conf.get("spark.sql.adaptive.enabled", None)
    ids, src, dst = _graph()
    ok = np.isin(dst, ids)
    g = _frame(spark, ids, src[ok], dst[ok])
    got = page_rank(g, maxIter=5, plan="partitioned", num_blocks=2).vertices.toPandas()
    ref = page_rank(g, maxIter=5, plan="broadcast").vertices.toPandas()
    assert seen == ["false"]
    assert spark.conf.get("spark.sql.adaptive.enabled", None) == before
    m = dict(zip(ref["id"], ref["pagerank"]))
    np.testing.assert_allclose(got["pagerank"].to_numpy(), [m[i] for i in got["id"]], rtol=1e-9)


@pytest.mark.parametrize("parts", [3, 4])  # block numbers by dst modulo 3, and by a mask for 4
def test_broadcast_operator_packs_the_same_blocks_from_edge_files(spark, tmp_path, caplog, parts):
    """In local mode an operator given the Parquet files its edges were read from (EdgeFiles) packs
    its blocks from the files, and every round, degree and receiver set equals the operator packed
    from the DataFrame: non-dense ids, self-loops, multi-edges, an edge to a missing vertex; weighted
    and unweighted files. Files with a string ``src`` are not used (the DataFrame is packed); a
    null weight is rejected either way."""
    import logging

    from lepton_spark.errors import InvalidGraphError
    from lepton_spark.graph.blocks import BroadcastOperator, EdgeFiles

    ids, src, dst = _graph(seed=11)
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2.0, len(src))
    path = str(tmp_path / "edges")
    spark.createDataFrame([(int(s), int(d), float(x)) for s, d, x in zip(src, dst, w)],
                          "src long, dst long, weight double").repartition(3).write.parquet(path)
    edges = spark.read.parquet(path)
    x = rng.normal(size=(len(ids), 2))
    labels = rng.integers(0, 5, len(ids)).astype(np.int64)

    def rounds(op: BroadcastOperator) -> list[np.ndarray]:
        return [*op.apply(x, "sum"), op.apply(x, "sum", weighted=False)[0], op.apply(labels, "min")[0],
                op.apply(x, "max")[0], op.out_degrees(), op.in_degrees()]

    with BroadcastOperator.prepare(spark, ids, edges, parts) as op:
        expected = rounds(op)
    with (caplog.at_level(logging.INFO, logger="lepton_spark.graph.blocks"),
          BroadcastOperator.prepare(spark, ids, edges, parts, files=EdgeFiles(path)) as op):
        got = rounds(op)
    assert "read from the edge files" in caplog.text
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=0)

    # unweighted files: every edge weighs 1, as an edge DataFrame without a weight column
    plain = edges.select("src", "dst")
    with BroadcastOperator.prepare(spark, ids, plain, parts) as op:
        expected = rounds(op)
    with BroadcastOperator.prepare(spark, ids, plain, parts, files=EdgeFiles(path, weight=None)) as op:
        got = rounds(op)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=0)

    # a string src column: the files are not used, and the DataFrame's blocks give the same rounds
    spath = str(tmp_path / "edges_str")
    edges.selectExpr("cast(src as string) as src", "dst", "weight").write.parquet(spath)
    caplog.clear()
    with (caplog.at_level(logging.INFO, logger="lepton_spark.graph.blocks"),
          BroadcastOperator.prepare(spark, ids, spark.read.parquet(spath), parts, files=EdgeFiles(spath)) as op):
        got_sum = op.apply(x, "sum")[0]
    assert "other types" in caplog.text and "read from the edge files" not in caplog.text
    with BroadcastOperator.prepare(spark, ids, edges, parts) as op:
        np.testing.assert_allclose(got_sum, op.apply(x, "sum")[0], rtol=1e-12, atol=0)

    # a null weight: InvalidGraphError from the files as from the DataFrame
    npath = str(tmp_path / "edges_null")
    spark.createDataFrame([(int(ids[0]), int(ids[1]), None), (int(ids[1]), int(ids[2]), 1.0)],
                          "src long, dst long, weight double").write.parquet(npath)
    for files in (None, EdgeFiles(npath)):
        with pytest.raises(InvalidGraphError, match="null, NaN or infinite weight"):
            BroadcastOperator.prepare(spark, ids, spark.read.parquet(npath), parts, files=files)


@pytest.mark.parametrize("symmetric", [False, True])
def test_analytics_pack_their_blocks_from_edge_files(spark, tmp_path, caplog, symmetric):
    """vertex_analytics with the Parquet directory its edges were read from (edge_files) packs the
    broadcast engine's in-edge blocks from the files, and PageRank, components and communities equal
    the run without it (a symmetric graph: every program on those blocks)."""
    import logging

    from pyspark.testing import assertDataFrameEqual

    from lepton_spark.analytics.batch import vertex_analytics

    ids, src, dst = _graph(seed=5)
    if symmetric:  # every edge once each way (the build's symmetrised, merged graph)
        pairs = {(int(a), int(b)) for a, b in zip(src, dst) if a != b} | {(int(ids[0]), int(ids[0]))}
        pairs |= {(b, a) for a, b in pairs}
        src, dst = np.array([p[0] for p in sorted(pairs)]), np.array([p[1] for p in sorted(pairs)])
    vpath, epath = str(tmp_path / "vertices"), str(tmp_path / "edges")
    spark.createDataFrame([(int(i),) for i in ids], "id long").write.parquet(vpath)
    spark.createDataFrame([(int(s), int(d), 1.0) for s, d in zip(src, dst)],
                          "src long, dst long, weight double").repartition(2).write.parquet(epath)
    v, e = spark.read.parquet(vpath), spark.read.parquet(epath)
    expected = vertex_analytics(v, e, local_max_edges=0, symmetric=symmetric)
    expected = {k: df.collect() for k, df in expected.items()}
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.blocks"):
        got = vertex_analytics(v, e, local_max_edges=0, symmetric=symmetric, edge_files=epath)
        got = {k: df.collect() for k, df in got.items()}
    assert "read from the edge files" in caplog.text
    assert got.keys() == expected.keys() == {"pagerank", "components", "communities"}
    for k in got:
        assertDataFrameEqual(spark.createDataFrame(got[k]), spark.createDataFrame(expected[k]), rtol=1e-12)


@pytest.mark.parametrize("files", ["written", "unwritable", "off"])
def test_partitioned_rounds_read_their_blocks_from_executor_files(spark, caplog, tmp_path, files):
    """The partitioned rounds after the first read each block's CSR from the files its executor wrote
    in the first (``written``: the files are made, used, and removed by the last step). When a block
    finds no files (``unwritable``: the root is a plain file, so nothing can be written there), that
    round is redone with the blocks shipped, and so are the rounds after it, once; ``off``
    (``graph.worker_block_files: false``) ships them every round. All three equal the local twins
    (checked against networkx above) and networkx's components."""
    import logging

    from lepton_spark.config import GraphConfig
    from lepton_spark.graph.programs import (
        BlockEngine,
        components_program,
        indexed_graph,
        label_propagation_program,
        pagerank_program,
    )

    ids, src, dst = _graph(seed=43, n=50, m=80)
    ok = np.isin(dst, ids)
    s, d = _symmetric(src[ok], dst[ok])
    g = _frame(spark, ids, s, d)
    root = tmp_path / "root"
    if files == "unwritable":
        root.write_text("not a directory")
    programs = [(pagerank_program(0.15), 9), (components_program(), 2**31 - 2), (label_propagation_program(), 3)]
    cfg = GraphConfig(worker_block_files=files != "off")
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.partitioned"), \
            BlockEngine(indexed_graph(g.vertices, g.edges), plan="partitioned", num_blocks=3, symmetric=True,
                        config=cfg) as engine:
        op = engine._operator(programs[0][0])
        op.cache_root = str(root)
        pr, cc, lpa = (df.toPandas().set_index("id").loc[ids, "value"].to_numpy() for df in engine.run_many(programs))
    np.testing.assert_allclose(pr * (len(ids) / pr.sum()), local.pagerank(ids, s, d, 0.15, 9), rtol=1e-9)
    np.testing.assert_array_equal(lpa, local.label_propagation(ids, s, d, 3))
    G = nx.Graph()
    G.add_nodes_from(ids.tolist())
    G.add_edges_from(zip(s.tolist(), d.tolist()))
    want = {v: min(c) for c in nx.connected_components(G) for v in c}
    assert cc.tolist() == [want[int(i)] for i in ids]
    redone = [r for r in caplog.records if "the round is redone with the blocks shipped" in r.getMessage()]
    assert len(redone) == (1 if files == "unwritable" else 0)
    if files == "written":  # made (the run's directory under lepton-blocks) and removed by the last step
        assert (root / "lepton-blocks").is_dir() and not any((root / "lepton-blocks").iterdir())
    if files == "off":
        assert not root.exists()


def test_worker_block_files_round_trip(tmp_path):
    """``worker_blocks``: arrays stored once, read back memory-mapped and equal; a missing block or
    array, or a root that is not a directory, reads as a miss (None); ``drop`` removes the block and
    the run's directory once it is empty."""
    from lepton_spark.graph import worker_blocks

    arrays = {"ids": np.array([5, 9, 12], np.int64), "indices": np.zeros(0, np.int32),
              "data": np.array([0.5, 1.5], np.float32)}
    assert worker_blocks.store(str(tmp_path), "t1", 7, arrays)
    assert worker_blocks.store(str(tmp_path), "t1", 7, {"ids": np.array([1])})  # already there: kept as it was
    got = worker_blocks.load(str(tmp_path), "t1", 7, ("ids", "indices", "data"))
    assert got is not None and all(np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in arrays.items())
    assert worker_blocks.load(str(tmp_path), "t1", 8, ("ids",)) is None
    assert worker_blocks.load(str(tmp_path), "t1", 7, ("ids", "deg")) is None
    assert worker_blocks.load(None, "t1", 7, ("ids",)) is None
    assert worker_blocks.store(str(tmp_path), "t1", 3, arrays)
    worker_blocks.drop(str(tmp_path), "t1", 7)
    assert worker_blocks.load(str(tmp_path), "t1", 7, ("ids",)) is None and (tmp_path / "lepton-blocks" / "t1").is_dir()
    worker_blocks.drop(str(tmp_path), "t1", 3)
    assert not (tmp_path / "lepton-blocks" / "t1").exists()
    plain = tmp_path / "file"
    plain.write_text("x")
    assert not worker_blocks.store(str(plain), "t1", 1, arrays)
    assert worker_blocks.worker_root() is None  # the driver is no executor's worker
