"""Models on Spark: ``forward_spark`` agrees with ``forward_local`` to 1e-5 on Cora for every model, and
the large-graph path (``train_from_spark``) trains SGC/SIGN/APPNP from propagated, labelled-only rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lepton_spark.models import create_model
from lepton_spark.models.artifact import data_fingerprint, load_model, save_model
from lepton_spark.models.precompute import train_from_spark
from lepton_spark.models.trainer import evaluate, train

ALL_TYPES = ("gcn", "sage", "sgc", "sign", "appnp")
FAST = {
    "gcn": {},
    "sgc": {"weight_decay": 1e-5},
    "appnp": {"epochs": 300, "patience": 50},
    "sign": {"epochs": 200, "patience": 50},
    "sage": {"epochs": 200, "patience": 50},
}


@pytest.fixture(scope="module")
def cora_inputs(cora):
    masks = {s: cora.mask(s) for s in ("train", "val", "test")}
    return cora.adjacency, cora.features, cora.labels, masks


@pytest.fixture(scope="module")
def cora_g(spark, cora, tmp_path_factory):
    """Cora as a GraphFrame over the RAW tables (project layout: id, features, label, split / src, dst,
    weight), read from Parquet so no Python-object conversion of 3.9M floats is needed."""
    import pyarrow.parquet as pq

    from lepton_spark.datasets.planetoid import to_arrow_tables
    from lepton_spark.graph import GraphFrame

    root = tmp_path_factory.mktemp("cora_models")
    vertices, edges = to_arrow_tables(cora)
    pq.write_table(vertices, root / "vertices.parquet")
    pq.write_table(edges, root / "edges.parquet")
    v = spark.read.parquet(str(root / "vertices.parquet"))
    e = spark.read.parquet(str(root / "edges.parquet"))
    return GraphFrame(v, e)


@pytest.fixture(scope="module")
def cora_trained(cora_inputs) -> dict[str, tuple[Any, dict[str, Any]]]:
    A, X, y, masks = cora_inputs
    return {t: train(t, A, X, y, masks, FAST[t], seed=0) for t in ALL_TYPES}


def _collect(df, n: int, col: str) -> np.ndarray:
    pdf = df.select("id", col).toPandas().sort_values("id")
    assert pdf["id"].tolist() == list(range(n)), "every vertex exactly once"
    return np.stack([np.asarray(v, dtype=np.float64) for v in pdf[col].to_numpy()])


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_forward_spark_matches_forward_local_on_cora(cora_g, cora_inputs, cora_trained, mtype: str) -> None:
    A, X, _, _ = cora_inputs
    model, _ = cora_trained[mtype]
    probs, hidden = model.forward_local(A, X, return_hidden=True)
    out = model.forward_spark(cora_g).cache()
    assert out.columns == ["id", "embedding", "probs"]
    got_p = _collect(out, A.shape[0], "probs")
    got_h = _collect(out, A.shape[0], "embedding")
    out.unpersist()
    assert got_p.shape == probs.shape and got_h.shape == hidden.shape
    dp, dh = np.abs(got_p - probs).max(), np.abs(got_h - hidden).max()
    assert dp <= 1e-5, f"{mtype}: max |probs diff| = {dp:.3g}"
    assert dh <= 1e-5, f"{mtype}: max |embedding diff| = {dh:.3g}"


@pytest.mark.parametrize("mtype", ["gcn", "sgc"])
def test_forward_spark_from_driver_held_features(cora_g, cora_inputs, cora_trained, mtype: str) -> None:
    """With the features handed over as a driver matrix (``driver_features``: the nightly reads a small
    validated graph's features with pyarrow), the first per-row step and propagation read that matrix
    and the forward pass still equals forward_local to 1e-5."""
    import scipy.sparse as sp

    A, X, _, _ = cora_inputs
    model, _ = cora_trained[mtype]
    x = (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float32)
    out = model.forward_spark(cora_g, propagate_options={"driver_features": (np.arange(A.shape[0]), x)}).cache()
    got_p, got_h = _collect(out, A.shape[0], "probs"), _collect(out, A.shape[0], "embedding")
    out.unpersist()
    probs, hidden = model.forward_local(A, X, return_hidden=True)
    assert np.abs(got_p - probs).max() <= 1e-5 and np.abs(got_h - hidden).max() <= 1e-5


def test_sgc_forward_spark_without_embedding(cora_g, cora_inputs, cora_trained) -> None:
    A, X, _, _ = cora_inputs
    model, _ = cora_trained["sgc"]
    out = model.forward_spark(cora_g, with_embedding=False)
    assert out.columns == ["id", "probs"]
    got = _collect(out, A.shape[0], "probs")
    assert np.abs(got - model.forward_local(A, X)).max() <= 1e-5


def test_loaded_artifact_runs_on_spark(tmp_path, cora_g, cora_inputs, cora_trained) -> None:
    A, X, _, masks = cora_inputs
    model, metrics = cora_trained["appnp"]
    save_model(model, tmp_path / "m", metrics=metrics, fingerprint=data_fingerprint(A, X, masks))
    loaded = load_model(tmp_path / "m", num_features=X.shape[1], num_classes=7)
    got = _collect(loaded.forward_spark(cora_g, with_embedding=False), A.shape[0], "probs")
    assert np.abs(got - model.forward_local(A, X)).max() <= 1e-5


@pytest.mark.parametrize("mtype", ["sgc", "sign", "appnp"])
def test_train_from_spark_labelled_rows_only(cora_g, cora_inputs, mtype: str) -> None:
    A, X, y, masks = cora_inputs
    hp = {"sgc": {"weight_decay": 1e-5}, "sign": {"epochs": 100, "patience": 30},
          "appnp": {"epochs": 200, "patience": 30}}[mtype]
    model, metrics = train_from_spark(cora_g, create_model(mtype, **hp), seed=0)
    assert metrics["labelled_rows"] == 1640  # 140 train + 500 val + 1000 test, nothing else collected
    assert metrics["test_acc"] >= 0.72
    ev = evaluate(model, A, X, y, masks)  # the trained model is an ordinary model
    assert abs(ev["test_acc"] - metrics["test_acc"]) <= 0.005
    if mtype == "sgc":
        _, ref = train("sgc", A, X, y, masks, hp, seed=0)
        assert abs(metrics["test_acc"] - ref["test_acc"]) <= 0.005


def test_train_from_spark_refuses_gcn(cora_g) -> None:
    with pytest.raises(TypeError, match="full graph"):
        train_from_spark(cora_g, create_model("gcn"))


@pytest.mark.parametrize("mtype", ["gcn", "sign"])
def test_forward_spark_partitioned_plan_matches_forward_local(cora_g, cora_inputs, cora_trained, mtype: str) -> None:
    """The partitioned plan normalises the GCN edges as a table; the broadcast plan (above) scales by
    D^-1/2 around (A + I) x on the driver: both equal the driver reference."""
    from lepton_spark.config import GraphConfig

    A, X, _, _ = cora_inputs
    model, _ = cora_trained[mtype]
    probs = model.forward_local(A, X)
    out = model.forward_spark(cora_g, with_embedding=False,
                              propagate_options={"config": GraphConfig(plan="partitioned")})
    got = _collect(out, A.shape[0], "probs")
    assert np.abs(got - probs).max() <= 1e-5


def test_train_from_spark_propagation_is_served_to_the_forward_pass(tmp_path, monkeypatch, cora_g,
                                                                      cora_inputs) -> None:
    """With one operator cache and a key naming the graph (the nightly's train and propagate stages),
    SGC's forward pass after a save/load gets its propagated features from training's propagation
    (same recipe: the features, the fitted standardisation, K rounds of GCN's operator) and runs no
    propagation of its own; the result equals the driver's forward pass. Another key propagates."""
    import lepton_spark.graph as engine
    from lepton_spark.config import GraphConfig
    from lepton_spark.graph import OperatorCache

    A, X, _, masks = cora_inputs
    calls: list[int] = []
    original = engine.propagate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("rounds", 0))
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, "propagate", counting)
    cache = OperatorCache()
    cfg = GraphConfig(plan="partitioned")
    try:
        opts = {"operators": cache, "operator_key": "cora", "config": cfg}
        model, metrics = train_from_spark(cora_g, create_model("sgc", weight_decay=1e-5, feature_norm="standard"),
                                          seed=0, propagate_options={**opts, "keep_results": True})
        assert calls == [2]
        save_model(model, tmp_path / "m", metrics=metrics, fingerprint=data_fingerprint(A, X, masks))
        loaded = load_model(tmp_path / "m", num_features=X.shape[1], num_classes=7)
        out = loaded.forward_spark(cora_g, propagate_options=dict(opts))
        got = _collect(out, A.shape[0], "probs")
        emb = _collect(out, A.shape[0], "embedding")
        assert calls == [2]  # served: no second propagation
        assert np.abs(got - model.forward_local(A, X)).max() <= 1e-5
        assert np.abs(emb - model.precompute_local(A, X)).max() <= 1e-4
        loaded.forward_spark(cora_g, propagate_options={**opts, "operator_key": "another graph"}).count()
        assert calls == [2, 2]
        cache.drop_results()  # the forward passes only read the cache: nothing is served any more
        loaded.forward_spark(cora_g, propagate_options=dict(opts)).count()
        assert calls == [2, 2, 2]
    finally:
        cache.close()



SPARK_PATH_SGC = ["model.type=sgc", "train.local_max_nodes=10", "model.params={weight_decay: 0.00001}"]


@pytest.fixture(scope="module")
def cora_spark_path_sgc(spark, tmp_path_factory) -> dict[str, Any]:
    """The train stage's metrics for SGC on the bundled Cora graph through the Spark path, default config."""
    from lepton_spark.config import load_config
    from lepton_spark.pipeline.stages import train_model

    from .conftest import ROOT

    cfg = load_config(None, SPARK_PATH_SGC)
    return train_model(spark, cfg, str(ROOT / "data" / "cora"), str(tmp_path_factory.mktemp("sgc-ref") / "model"),
                       hparams=cfg.model.params)


@pytest.mark.parametrize("plan", ["broadcast", "partitioned"])
def test_train_stage_spark_path_follows_the_graph_config(spark, tmp_path, caplog, cora_spark_path_sgc,
                                                         plan: str) -> None:
    """Above train.local_max_nodes the train stage's propagations obey the run's ``graph`` settings
    (here a forced plan), like the propagate stage's: they ran on the defaults whatever the config
    said. The model is the one the default config trains (test accuracy within 0.01)."""
    import logging

    from lepton_spark.config import load_config
    from lepton_spark.pipeline.stages import train_model

    from .conftest import ROOT

    cfg = load_config(None, [*SPARK_PATH_SGC, f"graph.plan={plan}"])
    with caplog.at_level(logging.INFO, logger="lepton_spark.graph.propagation"):
        metrics = train_model(spark, cfg, str(ROOT / "data" / "cora"), str(tmp_path / "model"),
                              hparams=cfg.model.params)
    plans = [r.getMessage() for r in caplog.records if r.getMessage().startswith("propagate: ")
             and " plan (" in r.getMessage()]
    assert plans and all(m.startswith(f"propagate: {plan} plan (forced)") for m in plans), plans
    ref = cora_spark_path_sgc
    assert metrics["test_acc"] > 0.7 and abs(metrics["test_acc"] - ref["test_acc"]) <= 0.01, (metrics, ref)
