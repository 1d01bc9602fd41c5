"""Random walks (DeepWalk / node2vec) and Word2Vec embeddings: validity, determinism, quality."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from lepton_spark.config import EmbedConfig
from lepton_spark.embed import random_walk_embeddings, random_walks

from .conftest import SAMPLE_GRAPH


def _graph_df(spark, g: nx.Graph):
    v = spark.createDataFrame([(int(n),) for n in g.nodes()], "id long")
    e = spark.createDataFrame([(int(a), int(b)) for a, b in g.edges()], "src long, dst long")
    return v, e


def _walks(df) -> dict[int, list[int]]:
    return {r["walk_id"]: r["walk"] for r in df.collect()}


def test_walks_follow_edges_and_are_deterministic(spark) -> None:
    g = nx.barabasi_albert_graph(60, 2, seed=1)
    g.add_node(60)  # isolated: its walks stay put
    v, e = _graph_df(spark, g)
    a = _walks(random_walks(v, e, walks_per_node=3, walk_length=8, seed=7))
    b = _walks(random_walks(v, e, walks_per_node=3, walk_length=8, seed=7))
    c = _walks(random_walks(v, e, walks_per_node=3, walk_length=8, seed=8))
    assert a == b and a != c
    assert len(a) == 61 * 3
    for wid, walk in a.items():
        assert walk[0] == wid // 3
        if walk[0] == 60:
            assert walk == [60]
            continue
        assert len(walk) == 8
        assert all(g.has_edge(x, y) for x, y in itertools.pairwise(walk))


def test_hub_neighbours_are_capped(spark) -> None:
    from lepton_spark.embed import adjacency

    g = nx.star_graph(50)
    _, e = _graph_df(spark, g)
    adj = {r["id"]: r["deg"] for r in adjacency(e, max_degree=10, seed=1).collect()}
    assert adj[0] == 10 and adj[5] == 1


def _return_rate(walks: dict[int, list[int]]) -> float:
    back = total = 0
    for w in walks.values():
        for i in range(2, len(w)):
            total += 1
            back += w[i] == w[i - 2]
    return back / total


def test_node2vec_return_parameter(spark) -> None:
    g = nx.random_regular_graph(4, 80, seed=3)
    v, e = _graph_df(spark, g)
    deepwalk = _return_rate(_walks(random_walks(v, e, walks_per_node=2, walk_length=6, seed=1)))
    returning = _return_rate(_walks(random_walks(v, e, walks_per_node=2, walk_length=6, seed=1, p=0.1, q=1.0)))
    outward = _return_rate(_walks(random_walks(v, e, walks_per_node=2, walk_length=6, seed=1, p=10.0, q=1.0)))
    # uniform walks on a 4-regular graph return with probability 1/4; node2vec's exact rate for p=0.1 is
    # (1/p)/(1/p + 3) = 10/13 and for p=10 it is 0.1/3.1 (rejection sampling, 4 attempts, stays close)
    assert abs(deepwalk - 0.25) < 0.06
    assert returning > 0.6 and outward < 0.1


def _cosine(x: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def test_planted_communities_are_closer(spark) -> None:
    g = nx.planted_partition_graph(3, 30, 0.3, 0.01, seed=5)
    v, e = _graph_df(spark, g)
    cfg = EmbedConfig(walks_per_node=8, walk_length=15, dim=16, window=4, epochs=2, seed=3)
    emb = {r["id"]: r["embedding"] for r in random_walk_embeddings(spark, v, e, cfg).collect()}
    ids = sorted(emb)
    sim = _cosine(np.array([emb[i] for i in ids], dtype=np.float64))
    block = np.array([i // 30 for i in ids])
    same = block[:, None] == block[None, :]
    off_diag = ~np.eye(len(ids), dtype=bool)
    intra, inter = sim[same & off_diag].mean(), sim[~same].mean()
    assert intra > inter + 0.3, (intra, inter)


def test_cora_embeddings_beat_random_baseline(spark) -> None:
    vertices = spark.read.parquet(str(SAMPLE_GRAPH / "vertices"))
    edges = spark.read.parquet(str(SAMPLE_GRAPH / "edges"))
    cfg = EmbedConfig(walks_per_node=5, walk_length=20, dim=64, window=5, epochs=1, seed=42)
    emb = {r["id"]: r["embedding"] for r in random_walk_embeddings(spark, vertices.select("id"), edges, cfg).collect()}
    rows = {r["id"]: (r["label"], r["split"]) for r in vertices.select("id", "label", "split").collect()}
    ids = sorted(rows)
    x = np.array([emb[i] for i in ids], dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    y = np.array([rows[i][0] for i in ids])
    split = np.array([rows[i][1] for i in ids], dtype=object)
    tr, te = split == "train", split == "test"
    acc = _softmax_regression_accuracy(x[tr], y[tr], x[te], y[te])
    majority = np.bincount(y[te]).max() / te.sum()
    assert acc > majority + 0.25, (acc, majority)  # DeepWalk on Cora's 140 labels: ~0.6-0.7


def _softmax_regression_accuracy(xtr, ytr, xte, yte, epochs: int = 300, lr: float = 0.1, l2: float = 1e-2) -> float:
    """A small numpy multinomial logistic regression (full-batch gradient descent)."""
    c = int(max(ytr.max(), yte.max())) + 1
    w = np.zeros((xtr.shape[1], c))
    onehot = np.eye(c)[ytr]
    for _ in range(epochs):
        z = xtr @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (xtr.T @ (p - onehot) / len(ytr) + l2 * w)
    return float(np.mean((xte @ w).argmax(axis=1) == yte))


@pytest.mark.parametrize("bad", [{"p": 0.0}, {"walk_length": 0}])
def test_embed_config_validation(bad) -> None:
    from lepton_spark.config import ConfigError, load_config

    key, value = next(iter(bad.items()))
    with pytest.raises(ConfigError):
        load_config(None, [f"embed.{key}={value}"])
