"""Graph algorithms on the builtin engine against networkx / exact Python references.

Tolerances: PageRank 1e-4 absolute on networkx's scale (ranks / N, personalised ranks as they are);
fixed-iteration PageRank 1e-9 against a numpy transcription of GraphX's iteration; everything else
exact.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import networkx as nx
import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark.graph import engine as eng
from lepton_spark.graph.frame import GraphFrame

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def _builtin_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eng.ENV_VAR, raising=False)


def rows(df, *cols):
    return sorted(tuple(r[c] for c in cols) for r in df.collect())


def to_graph(spark, nodes, edges, id_type: str = "long") -> GraphFrame:
    v = spark.createDataFrame([(n,) for n in nodes], f"id {id_type}")
    e = spark.createDataFrame(list(edges), f"src {id_type}, dst {id_type}")
    return GraphFrame(v, e)


# ------------------------------------------------------------------------------------ PageRank


@pytest.fixture(scope="module")
def pr_case(spark):
    """Random digraph with dangling vertices, isolated vertices, a multi-edge and a self-loop."""
    rng = random.Random(7)
    nodes = list(range(25))
    edges = [(u, v) for u in range(20) for v in range(20) if u != v and rng.random() < 0.12]
    edges += [(3, 7), (3, 7), (5, 5), (20, 21), (0, 24)]  # multi-edge, self-loop, 22, 23 isolated
    dangling = set(nodes) - {u for u, _ in edges}
    assert len(dangling) >= 5
    G = nx.MultiDiGraph()
    G.add_nodes_from(nodes)
    G.add_edges_from(edges)
    g = to_graph(spark, nodes, edges)
    return nodes, edges, G, g


def graphx_pagerank(nodes, edges, reset, iters, source=None):
    """numpy transcription of GraphX PageRank.runWithOptions (leaky), normalised like GraphFrames."""
    idx = {n: i for i, n in enumerate(nodes)}
    out = Counter(u for u, _ in edges)
    if source is None:
        pr, teleport = np.ones(len(nodes)), np.full(len(nodes), reset)
    else:
        pr, teleport = np.zeros(len(nodes)), np.zeros(len(nodes))
        pr[idx[source]], teleport[idx[source]] = 1.0, reset
    for _ in range(iters):
        acc = np.zeros(len(nodes))
        for u, v in edges:
            acc[idx[v]] += pr[idx[u]] / out[u]
        pr = teleport + (1 - reset) * acc
    return pr * (len(nodes) / pr.sum() if source is None else 1 / pr.sum())


def test_pagerank_matches_networkx_with_dangling_nodes(pr_case):
    nodes, edges, G, g = pr_case
    res = g.pageRank(resetProbability=0.15, tol=3e-3)  # L1 change of the GraphX-scale ranks
    assert res.vertices.columns == ["id", "pagerank"]
    got = dict(rows(res.vertices, "id", "pagerank"))
    assert math.isclose(sum(got.values()), len(nodes), rel_tol=1e-9)  # GraphFrames' convention: sum N
    ref = nx.pagerank(G, alpha=0.85, tol=1e-12, max_iter=1000)
    err = max(abs(got[n] / len(nodes) - ref[n]) for n in nodes)
    assert err < 1e-4, err
    # edges keep their columns and get weight = 1 / outDegree(src); multi-edges stay separate rows
    w = rows(res.edges, "src", "dst", "weight")
    assert len(w) == len(edges) and (3, 7, 1 / Counter(u for u, _ in edges)[3]) in w


def test_pagerank_personalised_matches_networkx(pr_case):
    nodes, _, G, g = pr_case
    # resetProbability 0.3 converges in fewer iterations (keeps the test fast); 0.15 is covered above
    got = dict(rows(g.pageRank(resetProbability=0.3, sourceId=3, tol=1e-4).vertices, "id", "pagerank"))
    assert math.isclose(sum(got.values()), 1.0, rel_tol=1e-9)  # personalised: sum 1
    ref = nx.pagerank(G, alpha=0.7, personalization={3: 1.0}, tol=1e-12, max_iter=1000)
    err = max(abs(got[n] - ref[n]) for n in nodes)
    assert err < 1e-4, err


def test_pagerank_fixed_iterations_equal_graphx(pr_case, spark):
    nodes, edges, _, g = pr_case
    got = dict(rows(g.pageRank(resetProbability=0.2, maxIter=4).vertices, "id", "pagerank"))
    ref = graphx_pagerank(nodes, edges, 0.2, 4)
    assert max(abs(got[n] - ref[i]) for i, n in enumerate(nodes)) < 1e-9


def test_pagerank_arguments(spark, pr_case):
    g = pr_case[3]
    with pytest.raises(ValueError, match=r"Exactly one of maxIter or tol should be set\."):
        g.pageRank()
    with pytest.raises(ValueError, match="Exactly one of maxIter or tol"):
        g.pageRank(maxIter=3, tol=0.1)
    with pytest.raises(ValueError, match="not a vertex id"):
        g.pageRank(maxIter=1, sourceId=999)
    # string ids and attribute columns pass through; an existing weight column is replaced
    v = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "id string, attr int")
    e = spark.createDataFrame([("a", "b", 9.0), ("b", "c", 9.0), ("c", "a", 9.0), ("a", "c", 9.0)], "src string, dst string, weight double")
    res = GraphFrame(v, e).pageRank(maxIter=3)
    assert res.vertices.columns == ["id", "attr", "pagerank"] and res.edges.columns == ["src", "dst", "weight"]
    assert sorted(r["weight"] for r in res.edges.collect()) == [0.5, 0.5, 1.0, 1.0]
    ref = graphx_pagerank(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")], 0.15, 3)
    assert np.allclose([p for _, p in rows(res.vertices, "id", "pagerank")], ref, atol=1e-9)


# -------------------------------------------------------------------------- connectedComponents


def test_connected_components_match_networkx(spark):
    path = [(i, i + 1) for i in range(100, 114)]  # a 15-vertex path, smallest id at one end
    edges = [*path[::-1], (1, 2), (2, 3), (3, 1), (3, 1), (10, 11), (12, 10), (40, 40), (50, 51), (51, 50)]
    nodes = sorted({x for e in edges for x in e} | {7, 8, 60})  # 7, 8, 60 isolated; 40 only a self-loop
    v = spark.createDataFrame([(n, f"n{n}") for n in nodes], "id int, name string")  # int ids -> long labels
    g = GraphFrame(v, spark.createDataFrame(edges, "src int, dst int"))
    res = g.connectedComponents()
    assert res.columns == ["id", "name", "component"]
    assert res.schema["component"].dataType == T.LongType()
    G = nx.Graph()
    G.add_nodes_from(nodes)
    G.add_edges_from(edges)
    expected = sorted((n, min(c)) for c in nx.connected_components(G) for n in c)
    assert rows(res, "id", "component") == expected
    assert res.is_cached
    res.unpersist()
    with pytest.raises(ValueError, match="Supported algorithms"):
        g.connectedComponents(algorithm="magic")
    # all GraphFrames algorithm names are accepted (case-insensitive)
    small = g.filterVertices("id < 20")
    assert rows(small.connectedComponents(algorithm="GraphX", use_local_checkpoints=True, checkpointInterval=1),
                "id", "component") == [(n, c) for n, c in expected if n < 20]


def test_connected_components_string_ids(spark):
    g = to_graph(spark, ["b", "a", "c", "x", "y", "lonely"], [("b", "a"), ("c", "b"), ("y", "x")], "string")
    labels = rows(g.connectedComponents(useLabelsAsComponents=True), "id", "component")
    assert labels == [("a", "a"), ("b", "a"), ("c", "a"), ("lonely", "lonely"), ("x", "x"), ("y", "x")]
    opaque = dict(rows(g.connectedComponents(), "id", "component"))
    assert all(isinstance(c, int) for c in opaque.values())
    assert opaque["a"] == opaque["b"] == opaque["c"] and opaque["x"] == opaque["y"]
    assert len({opaque["a"], opaque["x"], opaque["lonely"]}) == 3


# ------------------------------------------------------------------------------ labelPropagation


def graphx_lpa(nodes, edges, steps):
    """Exact GraphX LabelPropagation: undirected, own label not counted, ties -> smallest label."""
    label = {n: n for n in nodes}
    for _ in range(steps):
        msgs: dict = defaultdict(Counter)
        for s, d in edges:
            msgs[s][label[d]] += 1
            msgs[d][label[s]] += 1
        new = {}
        for n in nodes:
            if msgs[n]:
                top = max(msgs[n].values())
                new[n] = min(lab for lab, c in msgs[n].items() if c == top)
            else:
                new[n] = label[n]
        label = new
    return label


def nmi(a, b) -> float:
    """Normalised mutual information (arithmetic normalisation, as sklearn's default)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    cont = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(cont, (ia, ib), 1)
    p = cont / cont.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    ha, hb = float(-(pa * np.log(pa)).sum()), float(-(pb * np.log(pb)).sum())
    return 1.0 if ha + hb == 0 else 2 * mi / (ha + hb)


def test_label_propagation_tie_breaks_by_hand(spark):
    # 1: neighbours 2, 3 -> tie -> 2 | 4: neighbours 5, 5 (multi-edge), 6 -> 5 | 7: self-loop x2 counts
    # its own label twice, plus neighbour 8 -> 7 | 9: isolated keeps 9
    edges = [(1, 2), (3, 1), (4, 5), (5, 4), (6, 4), (7, 7), (8, 7)]
    nodes = list(range(1, 10))
    res = to_graph(spark, nodes, edges).labelPropagation(maxIter=1)
    one_step = dict(rows(res, "id", "label"))
    assert {k: one_step[k] for k in (1, 4, 7, 9)} == {1: 2, 4: 5, 7: 7, 9: 9}
    assert one_step == graphx_lpa(nodes, edges, 1)
    assert res.schema["label"].dataType == T.LongType()
    assert dict(rows(to_graph(spark, nodes, edges).labelPropagation(maxIter=3), "id", "label")) == graphx_lpa(nodes, edges, 3)


def test_label_propagation_planted_partition(spark):
    G = nx.planted_partition_graph(4, 50, 0.3, 0.01, seed=3)
    nodes, edges = list(G.nodes), list(G.edges)
    g = to_graph(spark, nodes, edges)
    got = dict(rows(g.labelPropagation(maxIter=5), "id", "label"))
    assert got == graphx_lpa(nodes, edges, 5)  # exact GraphX semantics
    truth = [n // 50 for n in nodes]
    score = nmi(truth, [got[n] for n in nodes])
    assert score >= 0.9, score


def test_label_propagation_string_ids_and_graphframes_variant(spark):
    g = to_graph(spark, ["a", "b", "c", "d"], [("a", "b"), ("c", "b"), ("b", "d")], "string")
    assert rows(g.labelPropagation(maxIter=1), "id", "label") == [("a", "b"), ("b", "a"), ("c", "b"), ("d", "b")]
    gf = g.labelPropagation(maxIter=1, algorithm="graphframes")
    assert gf.columns == ["id", "_pregel_is_active", "label"]
    # directed: a and c receive nothing -> null; b gets {a, c} -> a; d gets b
    assert rows(gf, "id", "label") == [("a", None), ("b", "a"), ("c", None), ("d", "b")]
    with pytest.raises(ValueError, match="Supported algorithms"):
        g.labelPropagation(1, algorithm="louvain")


def test_mode_min_fallback_matches_native(spark):
    from lepton_spark.analytics.communities import mode_min

    df = spark.createDataFrame([(1, 5), (1, 3), (1, 5), (1, 3), (1, 9), (2, 4), (3, 2), (3, 2), (3, 1)], "g int, x long")
    fallback = rows(df.groupBy("g").agg(mode_min(F.col("x"), native=False).alias("m")), "g", "m")
    assert fallback == [(1, 3), (2, 4), (3, 2)]
    if int(spark.version.split(".")[0]) >= 4:  # mode(col, deterministic) is Spark 4
        assert rows(df.groupBy("g").agg(mode_min(F.col("x"), native=True).alias("m")), "g", "m") == fallback


# ---------------------------------------------------------------------------------- shortestPaths


def test_shortest_paths_match_networkx(spark):
    G = nx.gnp_random_graph(30, 0.07, seed=11, directed=True)
    G.add_edge(29, 29)
    nodes, edges = list(G.nodes), list(G.edges)
    marks = [0, 5, 17, 5]
    g = to_graph(spark, nodes, edges)
    for directed in (True, False):
        res = g.shortestPaths(landmarks=marks, is_directed=directed)
        assert res.columns == ["id", "distances"]
        assert res.schema["distances"].dataType == T.MapType(T.LongType(), T.IntegerType(), True)
        got = {r["id"]: r["distances"] for r in res.collect()}
        H = G if directed else G.to_undirected()
        expected: dict[int, dict[int, int]] = {n: {} for n in nodes}
        for lm in dict.fromkeys(marks):
            # distance from n TO the landmark along edge direction = BFS from lm on the reversed graph
            for n, d in nx.single_source_shortest_path_length(H.reverse() if directed else H, lm).items():
                expected[n][lm] = d
        assert got == expected


def test_shortest_paths_undirected_chain_string_ids(spark):
    # GraphFrames test_shortest_paths2 on a chain; string ids keep their keys
    g = to_graph(spark, ["1", "2", "3", "4", "5"], [("1", "2"), ("2", "3"), ("3", "4"), ("4", "5")], "string")
    und = rows(g.shortestPaths(landmarks=["1"], is_directed=False), "id", "distances")
    assert und == [("1", {"1": 0}), ("2", {"1": 1}), ("3", {"1": 2}), ("4", {"1": 3}), ("5", {"1": 4})]
    directed = dict(rows(g.shortestPaths(landmarks=["1", "3"]), "id", "distances"))
    assert directed == {"1": {"1": 0, "3": 2}, "2": {"3": 1}, "3": {"3": 0}, "4": {}, "5": {}}
    assert rows(g.shortestPaths(landmarks=[]), "id", "distances")[0] == ("1", {})


@pytest.mark.parametrize("symmetric", [True, False])
def test_degree_histogram_from_edge_files_equals_networkx(spark, tmp_path, symmetric):
    """The build report's file-based degree histogram (numpy in the tasks, one task per file, ``parts``
    id ranges) against networkx's degrees and the DataFrame aggregate, on ids 0..n-1 spread over three
    files (one of them empty), with self-loops, a repeated edge, isolated vertices and an endpoint
    outside 0..n-1 (not counted, as the DataFrame version's join leaves it out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lepton_spark.analytics.degrees import degree_histogram, degree_histogram_from_files
    from lepton_spark.graph.blocks import EdgeFiles

    rng = random.Random(5)
    n = 60
    pairs = [(rng.randrange(50), rng.randrange(50)) for _ in range(150)] + [(3, 3), (7, 7), (1, 2), (1, 2)]
    if symmetric:
        pairs = sorted({(u, v) for u, v in pairs} | {(v, u) for u, v in pairs})
    d = tmp_path / "edges"
    d.mkdir()
    thirds = [pairs[: len(pairs) // 3], pairs[len(pairs) // 3:], []]
    thirds[0] = [*thirds[0], (5, n + 4)]  # an endpoint that is not a vertex
    for i, chunk in enumerate(thirds):
        pq.write_table(pa.table({"src": pa.array([u for u, _ in chunk], pa.int64()),
                                 "dst": pa.array([v for _, v in chunk], pa.int64())}), d / f"part-{i}.parquet")
    g = nx.MultiDiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(pairs)
    # networkx counts a self-loop twice in the degree (once out, once in), as the build's histogram
    # does; (5, n + 4) counts for 5 only: once as given, twice for a symmetric graph (whose degree is
    # twice the out-degree)
    extra = 2 if symmetric else 1
    want = sorted(Counter(g.degree(v) + (extra if v == 5 else 0) for v in range(n)).items())
    files = EdgeFiles(str(d), weight=None)
    assert files.usable()
    for parts in (1, 4, 7, 200):
        assert degree_histogram_from_files(spark, files, n, symmetric=symmetric, parts=parts) == want, parts
    frame = degree_histogram(spark.range(n), spark.read.parquet(str(d)), symmetric=symmetric)
    assert frame == want
