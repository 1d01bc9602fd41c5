"""Link outputs on Spark: the GAE encoder against the driver (1e-5), the decoder against numpy, candidates
(no self pairs, no existing edges, hub capping), top-k against brute force with ties, and the nightly with
the links stage end to end (plus the ``links``/``train`` subcommands' contract)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from lepton_spark.cli import main
from lepton_spark.links.spark import candidate_pairs, edge_scores, link_predictions, top_k
from lepton_spark.models.gae import score_pairs, train_link_model

from .test_gae import planted_graph

DATE = "2026-11-02"


def _edges_df(spark, src, dst, weight=None):
    weight = np.ones(len(src)) if weight is None else weight
    return spark.createDataFrame(pa.table({"src": pa.array(np.asarray(src), pa.int64()),
                                           "dst": pa.array(np.asarray(dst), pa.int64()),
                                           "weight": pa.array(np.asarray(weight), pa.float32())}).to_pandas())


def _emb_df(spark, Z: np.ndarray, ids: np.ndarray | None = None):
    ids = np.arange(Z.shape[0]) if ids is None else ids
    t = pa.table({"id": pa.array(ids, pa.int64()),
                  "embedding": pa.array([list(map(float, z)) for z in Z.astype(np.float32)], pa.list_(pa.float32()))})
    return spark.createDataFrame(t.to_pandas())


def _pairs(df) -> set[tuple[int, int]]:
    return {(r["src"], r["dst"]) for r in df.collect()}


# --------------------------------------------------------------------------------------------------
# encoder and decoder
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variational", [False, True])
def test_gae_forward_spark_matches_driver_on_cora(spark, cora, variational: bool) -> None:
    from lepton_spark.datasets.planetoid import to_arrow_tables
    from lepton_spark.graph import GraphFrame

    A, X = cora.adjacency, cora.features
    model, _ = train_link_model("gae", A, X, {"loss": "sampled", "variational": variational}, seed=0)
    vt, et = to_arrow_tables(cora)
    g = GraphFrame(spark.createDataFrame(vt.select(["id", "features"]).to_pandas()),
                   spark.createDataFrame(et.to_pandas()))
    out = model.forward_spark(g)
    assert out.columns == ["id", "embedding"]
    pdf = out.toPandas().sort_values("id")
    assert pdf["id"].tolist() == list(range(A.shape[0]))
    got = np.stack([np.asarray(v, dtype=np.float64) for v in pdf["embedding"]])
    want = model.embed_local(A, X)
    assert got.shape == want.shape == (A.shape[0], 16)
    assert np.abs(want).max() > 1.0  # a trained model, not a near-zero embedding
    diff = np.abs(got - want).max()
    assert diff <= 1e-5, f"max |embedding diff| = {diff:.3g}"


def test_edge_scores_equal_numpy(spark) -> None:
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((30, 5)) * 2
    src, dst = rng.integers(0, 30, 80), rng.integers(0, 30, 80)
    w = rng.random(80)
    got = edge_scores(_edges_df(spark, src, dst, w), _emb_df(spark, Z)).toPandas()
    assert list(got.columns) == ["src", "dst", "weight", "score"] and len(got) == 80
    Z32 = Z.astype(np.float32).astype(np.float64)  # what the array<float> embeddings hold
    want = score_pairs(Z32, np.stack([got["src"], got["dst"]], axis=1))
    np.testing.assert_allclose(got["score"].to_numpy(), want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sorted(got["weight"]), sorted(w.astype(np.float32)))
    # an edge whose endpoint has no embedding is not scored; broadcast hint: same rows
    some = _emb_df(spark, Z[:20], np.arange(20))
    kept = edge_scores(_edges_df(spark, src, dst, w), some, broadcast=True).count()
    assert kept == int(((src < 20) & (dst < 20)).sum())


# --------------------------------------------------------------------------------------------------
# candidates and top-k
# --------------------------------------------------------------------------------------------------
def _random_edges(n: int, m: int, seed: int, hub: bool = True):
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    if hub:  # vertex 0 is a hub touching a third of the graph
        k = n // 3
        src = np.concatenate([src, np.zeros(k, np.int64), [4, 4]])
        dst = np.concatenate([dst, rng.choice(np.arange(1, n), k, replace=False), [4, 7]])  # + a self-loop 4-4
    return src, dst


@pytest.mark.parametrize("method", ["two_hop", "lsh", "both"])
def test_candidates_never_include_existing_edges_or_self_pairs(spark, method: str) -> None:
    n = 120
    src, dst = _random_edges(n, 300, 1)
    edges = _edges_df(spark, src, dst)
    Z = np.random.default_rng(2).standard_normal((n, 4))
    cap = 5
    cands = candidate_pairs(edges, _emb_df(spark, Z), method=method, max_neighbors=cap, seed=3,
                            lsh_bucket_length=0.5, lsh_num_tables=3, lsh_max_bucket=8,
                            lsh_projections=2).toPandas()
    pairs = list(zip(cands["src"], cands["dst"], strict=True))
    assert len(pairs) == len(set(pairs)) > 0  # distinct
    existing = set(zip(src, dst, strict=True)) | set(zip(dst, src, strict=True))
    assert not any(u == v for u, v in pairs)
    assert not [p for p in pairs if p in existing]
    if method == "lsh":  # at most tables x max_bucket candidates per vertex
        assert cands.groupby("src").size().max() <= 3 * 8
    if method == "two_hop":  # hub capping: at most cap^2 candidates per vertex, and all are 2 hops away
        assert cands.groupby("src").size().max() <= cap * cap
        A = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        A = ((A + A.T) > 0).astype(np.int64)
        two = (A @ A).tocsr()
        assert all(two[u, v] > 0 for u, v in pairs)


def test_top_k_equals_brute_force_with_ties(spark) -> None:
    """A graph of diameter 2 (vertex 0 touches all) without capping: 2-hop candidates are ALL non-adjacent
    pairs, so the top-k must equal exact all-pairs top-k. Repeated embeddings make tied scores."""
    n, k = 24, 4
    rng = np.random.default_rng(5)
    src = np.concatenate([np.zeros(n - 1, np.int64), rng.integers(1, n, 30)])
    dst = np.concatenate([np.arange(1, n), rng.integers(1, n, 30)])
    base = rng.standard_normal((5, 3))
    Z = base[rng.integers(0, 5, n)]  # only 5 distinct vectors: many exact ties
    Z32 = Z.astype(np.float32).astype(np.float64)
    got = link_predictions(_edges_df(spark, src, dst), _emb_df(spark, Z), k=k, max_neighbors=n).toPandas()
    assert list(got.columns) == ["src", "dst", "score", "rank"]
    adj = np.zeros((n, n), bool)
    adj[src, dst] = adj[dst, src] = True
    want = []
    for u in range(n):
        cand = [v for v in range(n) if v != u and not adj[u, v]]
        s = score_pairs(Z32, np.array([[u, v] for v in cand])) if cand else np.zeros(0)
        order = sorted(range(len(cand)), key=lambda i: (-s[i], cand[i]))[:k]
        want += [(u, cand[i], s[i], r + 1) for r, i in enumerate(order)]
    got_rows = sorted(zip(got["src"], got["dst"], got["score"], got["rank"], strict=True))
    want_rows = sorted(want)
    assert [(a, b, r) for a, b, _, r in got_rows] == [(a, b, r) for a, b, _, r in want_rows]
    np.testing.assert_allclose([s for *_, s, _ in got_rows], [s for *_, s, _ in want_rows], rtol=1e-12)
    ties = got.groupby(["src", "score"]).size()
    assert (ties > 1).any(), "the case must contain ties"
    with pytest.raises(Exception, match=r"links\.k must be >= 1"):
        top_k(got, 0)


# --------------------------------------------------------------------------------------------------
# the nightly with the links stage, and the subcommands
# --------------------------------------------------------------------------------------------------
def _write_graph(root: Path) -> Path:
    A, X = planted_graph(n=200, groups=8, p_in=0.25, seed=3)
    coo = sp.triu(A, 1).tocoo()
    src = np.concatenate([coo.row, coo.col]).astype(np.int64)
    dst = np.concatenate([coo.col, coo.row]).astype(np.int64)
    g = root / "graph"
    (g / "vertices").mkdir(parents=True)
    (g / "edges").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array(np.arange(A.shape[0]), pa.int64()),
                             "features": pa.array([list(map(float, x)) for x in X.astype(np.float32)],
                                                  pa.list_(pa.float32())),
                             "label": pa.array([None] * A.shape[0], pa.int32()),
                             "split": pa.array([None] * A.shape[0], pa.string())}),
                   g / "vertices" / "part-0.parquet")
    pq.write_table(pa.table({"src": src, "dst": dst, "weight": pa.array(np.ones(src.size), pa.float32())}),
                   g / "edges" / "part-0.parquet")
    return g


@pytest.fixture(scope="module")
def link_nightly(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("links_nightly")
    graph = _write_graph(root)
    out = root / "out"
    argv = ["nightly", "--output", str(out), "--run-date", DATE,
            "--set", f"pipeline.graph_dir={graph}", "--set", "model.type=gae",
            "--set", "model.params={epochs: 60}", "--set", "links.k=5",
            "--set", "pipeline.stages=[build, train, propagate, links, report]"]
    return root, graph, out, main(argv)


def test_nightly_with_links_end_to_end(spark, link_nightly, capsys) -> None:
    _, graph, out, rc = link_nightly
    assert rc == 0
    manifest = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    assert set(manifest["tables"]) == {"embeddings", "edge_scores", "link_predictions"}
    assert "predictions" in manifest["counts"]["skipped_tables"]
    assert not (out / "outputs" / "predictions").exists()
    emb = pq.read_table(out / "outputs" / "embeddings" / f"run_date={DATE}").to_pandas().sort_values("id")
    assert len(emb) == 200 and len(emb["embedding"].iloc[0]) == 16
    scores = pq.read_table(out / "outputs" / "edge_scores" / f"run_date={DATE}").to_pandas()
    e = pq.read_table(graph / "edges").to_pandas()
    assert len(scores) == len(e) and manifest["tables"]["edge_scores"]["rows"] == len(e)
    Z = np.stack(emb["embedding"].to_numpy()).astype(np.float64)
    np.testing.assert_allclose(scores["score"], score_pairs(Z, scores[["src", "dst"]].to_numpy()), rtol=1e-6)
    preds = pq.read_table(out / "outputs" / "link_predictions" / f"run_date={DATE}").to_pandas()
    existing = set(zip(e["src"], e["dst"], strict=True))
    assert not any((a, b) in existing or a == b for a, b in zip(preds["src"], preds["dst"], strict=True))
    for _, grp in preds.groupby("src"):
        assert grp["rank"].tolist() == list(range(1, len(grp) + 1)) and len(grp) <= 5
        assert (np.diff(grp.sort_values("rank")["score"].to_numpy()) <= 0).all()
    assert manifest["counts"]["links"]["vertices_with_predictions"] == preds["src"].nunique() > 150
    # the model card: link metrics; the report: AUC rows and the score histogram
    card = json.loads((out / "runs" / DATE / "model" / "model.json").read_text())
    assert card["model_type"] == "gae" and card["metrics"]["final"]["test_auc"] > 0.8
    page = (out / "runs" / DATE / "report" / "index.html").read_text()
    assert "link_scores.png" in page and "test AUC" in page
    assert (out / "runs" / DATE / "report" / "link_scores.png").stat().st_size > 1000
    assert not (out / "_staging").exists() and not (out / "_work").exists()


def test_links_and_train_subcommands(spark, link_nightly, tmp_path, capsys) -> None:
    _, graph, out, _ = link_nightly
    model = out / "runs" / DATE / "model"
    capsys.readouterr()
    rc = main(["links", "--graph", str(graph), "--model", str(model), "--output", str(tmp_path / "o"),
               "--run-date", DATE, "--set", "links.k=2"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["command"] == "links" and set(summary["tables"]) == {"edge_scores", "link_predictions"}
    preds = pq.read_table(tmp_path / "o" / "outputs" / "link_predictions" / f"run_date={DATE}").to_pandas()
    assert preds["rank"].max() == 2
    # train prints the link metrics in its JSON line
    rc = main(["train", "--graph", str(graph), "--output", str(tmp_path / "m"), "--set", "model.type=gae",
               "--set", "model.params={epochs: 5}"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert {"val_auc", "val_ap", "test_auc", "test_ap"} <= set(line) and line["model_type"] == "gae"
    assert 0.0 <= line["test_auc"] <= 1.0


def test_large_graph_path_trains_from_spark_propagated_features(spark, link_nightly, tmp_path, capsys) -> None:
    """Above train.local_max_nodes, gae (sgc encoder) trains from sampled pairs of Spark-propagated
    features; its Spark forward pass equals the driver's; the gcn encoder is refused (usage, exit 2)."""
    from lepton_spark.graph import GraphFrame
    from lepton_spark.models.artifact import load_model
    from lepton_spark.pipeline.stages import local_graph

    _, graph, _, _ = link_nightly
    base = ["train", "--graph", str(graph), "--set", "model.type=gae", "--set", "train.local_max_nodes=10"]
    rc = main([*base, "--output", str(tmp_path / "m"), "--set", "model.params={encoder: sgc, epochs: 100}"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert line["test_auc"] > 0.85 and line["test_ap"] > 0.8, line
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["metrics"]["other"]["path"] == "spark-propagated features"
    assert card["metrics"]["other"]["edge_split"]["sampled"]["test"] > 0
    model = load_model(tmp_path / "m")
    vertices, edges = spark.read.parquet(str(graph / "vertices")), spark.read.parquet(str(graph / "edges"))
    data = local_graph(spark, vertices, edges, str(graph))
    got = model.forward_spark(GraphFrame(vertices, edges)).toPandas().sort_values("id")
    Z = np.stack(got["embedding"].to_numpy()).astype(np.float64)
    assert np.abs(Z - model.embed_local(data["A"], data["X"])).max() <= 1e-5
    rc = main([*base, "--output", str(tmp_path / "m2")])
    err = capsys.readouterr().err
    assert rc == 2 and "encoder: sgc" in err


def test_links_bad_inputs_get_clear_errors(spark, link_nightly, tmp_path, capsys) -> None:
    from .test_cli import _tiny_model

    _, graph, out, _ = link_nightly
    model = out / "runs" / DATE / "model"
    node_model = _tiny_model(tmp_path, dim=16)
    cases = [
        (["links", "--graph", str(graph), "--model", str(node_model)], 3, "needs a link model"),
        (["links", "--graph", str(graph), "--model", str(model), "--set", "links.k=0"], 2, "links.k: must be > 0"),
        (["links", "--graph", str(graph)], 2, "links needs --model"),
        (["links", "--graph", str(graph), "--model", str(model), "--set", "links.candidates=all"], 2,
         "links.candidates"),
    ]
    for argv, code, needle in cases:
        rc = main([*argv, "--output", str(tmp_path / "o"), "--run-date", DATE])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("lepton-spark:")]
        assert rc == code, (argv, err)
        assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "o" / "outputs").exists()


def test_large_graph_gae_propagation_follows_the_graph_config(spark, link_nightly, tmp_path, caplog) -> None:
    """The gae Spark path's propagation over the training graph obeys the run's ``graph`` settings
    (a forced plan here), as the propagate stage's does."""
    import logging

    from lepton_spark.config import load_config
    from lepton_spark.pipeline.stages import train_model

    _, graph, _, _ = link_nightly
    cfg = load_config(None, ["model.type=gae", "train.local_max_nodes=10", "graph.plan=partitioned",
                             "model.params={encoder: sgc, epochs: 20}"])
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation"):
        metrics = train_model(spark, cfg, str(graph), str(tmp_path / "m"), hparams=cfg.model.params)
    plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("propagate: ")
             and " plan (" in r.getMessage()]
    assert plans and all(m.startswith("propagate: partitioned plan (forced)") for m in plans), plans
    assert metrics["path"] == "spark-propagated features" and 0.0 <= metrics["test_auc"] <= 1.0
