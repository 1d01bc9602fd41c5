"""Large-graph link training: propagate with Spark, collect sampled pairs' rows, train on the driver.

Above ``train.local_max_nodes`` the GAE's full-graph training does not fit the driver. Like SGC's
large-graph path (:mod:`lepton_spark.models.precompute`), the parameter-free part runs on Spark and
only a bounded sample comes to the driver; this needs the ``sgc`` encoder (``model.params.encoder:
sgc``: ``K`` propagation rounds first, then the dense layers), whose input ``S^K X̃`` is per row.

1. **Edge split on Spark**, by a seeded hash of each undirected pair ``(min, max)``:
   ``r = xxhash64(u, v, seed) mod 2^30 / 2^30``; test when ``r < test_frac``, validation when
   ``r < test_frac + val_frac``, else training (a Bernoulli split with the model's fractions, not the
   driver path's exact counts). Both directions of a pair get the same ``r``, so the TRAINING graph
   is a filter of the edge table (held-out pairs removed in both directions, self-loops kept), no join.
2. **Features**: ``feature_norm`` resolved from one summary pass over all vertices (auto/standard),
   then ``S^K X̃`` propagated over the training graph on Spark.
3. **Samples**: at most ``max_train_pairs`` training pairs and ``max_eval_pairs`` validation and test
   pairs each (by the same ``r``, so uniform and nested); a pool of uniformly sampled vertices (by a
   second hash) for negatives; validation and test negatives are pairs of pool vertices that are
   not edges of the graph (checked with an anti-join on Spark), disjoint.
4. **Collect** the ``S^K X̃`` rows of the vertices in the samples only, and train on the driver with
   :meth:`lepton_spark.models.gae.GAE.fit_pairs` (the balanced pair loss, fresh uniform negatives
   from the pool every epoch).

Metrics are those of the driver path (val/test AUC and AP) on the sampled held-out pairs; the
propagation of the held-out pairs' endpoints used the training graph only, so there is no leak.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lepton_spark import storage
from lepton_spark.errors import UsageError
from lepton_spark.models.gae import GAE

log = logging.getLogger(__name__)

_HASH_MOD = 1 << 30
#: vertices in the negative pool (at least; capped by the vertex count)
POOL_MIN = 50_000


def _pair_hash(u: Any, v: Any, seed: int, salt: int = 0) -> Any:
    """A uniform number in [0, 1) per (u, v) (Spark column)."""
    return F.pmod(F.xxhash64(u, v, F.lit(int(seed)), F.lit(int(salt))), F.lit(_HASH_MOD)) / F.lit(float(_HASH_MOD))


def split_columns(edges: DataFrame, seed: int, val_frac: float, test_frac: float) -> DataFrame:
    """``edges`` (src, dst, weight) plus ``u``/``v`` (the canonical pair), ``r`` and ``part``
    (train | val | test | loop)."""
    lo, hi = F.least("src", "dst"), F.greatest("src", "dst")
    e = edges.withColumn("u", lo).withColumn("v", hi).withColumn("r", _pair_hash(lo, hi, seed))
    part = (F.when(F.col("u") == F.col("v"), "loop").when(F.col("r") < test_frac, "test")
            .when(F.col("r") < test_frac + val_frac, "val").otherwise("train"))
    return e.withColumn("part", part)


def _negatives(spark: Any, pool: np.ndarray, count: int, pairs: DataFrame, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct pairs (u < v) of pool vertices that are not pairs of the graph, in draw order."""
    if count == 0:
        return np.zeros((0, 2), np.int64)
    got = np.zeros((0, 2), np.int64)
    for _ in range(20):
        need = count - len(got)
        if need <= 0:
            break
        a, b = rng.choice(pool, 2 * need + 16), rng.choice(pool, 2 * need + 16)
        keep = a != b
        cand = np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1)
        t = pa.table({"u": cand[:, 0], "v": cand[:, 1], "i": np.arange(len(cand), dtype=np.int64)})
        free = storage.create_df(spark, t).join(pairs.select("u", "v"), on=["u", "v"], how="left_anti")
        arr = storage.collect_arrow(free.orderBy("i"))
        fresh = np.stack([arr.column("u").to_numpy(), arr.column("v").to_numpy()], axis=1) if arr.num_rows \
            else np.zeros((0, 2), np.int64)
        allp = np.vstack([got, fresh])
        _, first = np.unique(allp[:, 0] * (1 << 32) + allp[:, 1], return_index=True)
        got = allp[np.sort(first)]
    if len(got) < count:
        raise ValueError(f"could not sample {count} negative pairs from a pool of {len(pool)} vertices")
    return got[:count]


def train_link_from_spark(g: Any, model: GAE, *, seed: int = 0, features: str = "features",
                          weight: str = "weight",
                          propagate_options: Mapping[str, Any] | None = None) -> tuple[GAE, dict[str, Any]]:
    """Train ``model`` (a :class:`GAE` with ``encoder="sgc"``) from a
    :class:`lepton_spark.graph.GraphFrame` over the RAW graph; see the module docstring. Returns
    ``(model, metrics)`` with the keys of :func:`lepton_spark.models.gae.train_link_model` (``path``:
    ``spark-propagated features``, ``edge_split``: the pair counts per part and the sample sizes).
    ``propagate_options``: passed to the Spark propagation of the training graph (e.g. ``config``, the
    run's :class:`~lepton_spark.config.GraphConfig`); not an operator cache keyed by the whole graph,
    whose edges differ from the training graph's."""
    from lepton_spark.graph import GraphFrame
    from lepton_spark.models.base import json_clean as _clean
    from lepton_spark.models.plan import SparkOps

    if not isinstance(model, GAE):
        raise UsageError(f"{type(model).__name__} is not a link model")
    if model.encoder != "sgc":
        raise UsageError("a graph above train.local_max_nodes trains gae from Spark-propagated features: set "
                         "model.params.encoder: sgc (the gcn encoder needs the whole graph on the driver)")
    t0 = time.perf_counter()
    spark = g.vertices.sparkSession
    w = F.col(weight).cast("float") if weight in g.edges.columns else F.lit(1.0).cast("float")
    edges = g.edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"),
                           w.alias("weight"))
    tagged = split_columns(edges, seed, model.val_frac, model.test_frac).persist()
    try:
        pairs = tagged.filter(F.col("part") != "loop").select("u", "v", "r", "part").distinct().persist()
        counts = {r["part"]: int(r["count"]) for r in pairs.groupBy("part").count().collect()}
        n = g.vertices.count()
        if counts.get("train", 0) == 0:
            raise ValueError("no training pairs: the graph has no edges between distinct vertices")
        f_train = min(1.0, model.max_train_pairs / counts["train"])
        f_val = min(1.0, model.max_eval_pairs / max(counts.get("val", 0), 1))
        f_test = min(1.0, model.max_eval_pairs / max(counts.get("test", 0), 1))
        tf, vf = model.test_frac, model.val_frac
        keep = ((F.col("part") == "test") & (F.col("r") < tf * f_test)) | \
               ((F.col("part") == "val") & (F.col("r") < tf + vf * f_val)) | \
               ((F.col("part") == "train") & (F.col("r") < tf + vf + (1.0 - tf - vf) * f_train))
        sample = storage.collect_arrow(pairs.filter(keep).select("u", "v", "part").orderBy("u", "v"))
        part = np.asarray(sample.column("part").to_pylist(), dtype=object)
        uv = np.stack([sample.column("u").to_numpy(), sample.column("v").to_numpy()], axis=1)
        pos = {p: uv[part == p] for p in ("train", "val", "test")}
        # negatives: a uniform pool of vertices (second hash), val/test negatives checked on Spark
        target = min(n, max(POOL_MIN, 4 * model.max_eval_pairs))
        pool_df = g.vertices.select(F.col("id").cast("long").alias("id")) \
            .filter(_pair_hash(F.col("id"), F.lit(0), seed, salt=1) < min(1.0, target / max(n, 1)))
        pool = np.sort(storage.collect_arrow(pool_df).column("id").to_numpy())
        rng = np.random.default_rng(seed)
        negs = _negatives(spark, pool, len(pos["val"]) + len(pos["test"]), pairs, rng)
        neg = {"val": negs[: len(pos["val"])], "test": negs[len(pos["val"]):]}
        pairs.unpersist()
        # S^K X~ over the TRAINING graph, collected for the sampled vertices only
        if not hasattr(model, "params_"):
            ops0 = SparkOps(GraphFrame(g.vertices, edges), features=features, propagate_options=propagate_options)
            needs_stats = model.feature_norm in ("auto", "standard")
            model.resolve_feature_norm(ops0.feature_summary(ops0.features()) if needs_stats else None)
        train_edges = tagged.filter(F.col("part").isin("train", "loop")).select("src", "dst", "weight")
        ops = SparkOps(GraphFrame(g.vertices, train_edges), features=features, propagate_options=propagate_options)
        try:
            x = model._input_table(ops)
            z = ops.propagate(x, ops.gcn_edges(), model.K) if model.K else x
            ids = np.unique(np.concatenate([uv.reshape(-1), pool]))
            want = storage.create_df(spark, pa.table({"id": ids}))
            rows = storage.collect_arrow(z.join(want, on="id", how="inner").select("id", "features").orderBy("id"))
        finally:
            ops.close()
    finally:
        tagged.unpersist()
    from lepton_spark.graph.arrow import list_to_matrix

    row_ids = rows.column("id").to_numpy()
    Z = list_to_matrix(rows.column("features")).astype(np.float64)
    if not np.array_equal(row_ids, ids):
        raise ValueError(f"{len(ids) - len(row_ids)} sampled vertices have no features")
    t1 = time.perf_counter()

    def idx(p: np.ndarray) -> np.ndarray:
        return np.searchsorted(row_ids, p).reshape(-1, 2) if p.size else np.zeros((0, 2), np.int64)

    model.fit_pairs(Z, idx(pos["train"]), np.searchsorted(row_ids, pool),
                    val=(idx(pos["val"]), idx(neg["val"])), test=(idx(pos["test"]), idx(neg["test"])), seed=seed)
    t2 = time.perf_counter()
    log.info("gae trained from Spark-propagated features: %d train / %d val / %d test pairs sampled, "
             "%d rows collected in %.1fs, fit %.1fs: val AUC %.4f AP %.4f, test AUC %.4f AP %.4f",
             len(pos["train"]), len(pos["val"]), len(pos["test"]), len(row_ids), t1 - t0, t2 - t1,
             *(model.link_metrics_[k] for k in ("val_auc", "val_ap", "test_auc", "test_ap")))
    metrics: dict[str, Any] = {
        "model_type": model.model_type, "task": "link", "seed": int(seed), "hyperparameters": model.get_params(),
        "num_classes": 0, **model.link_metrics_, "train_acc": None, "val_acc": None, "test_acc": None,
        "train_loss": model.history_["train_loss"][-1], "loss_mode": model.loss_mode_,
        "epochs_run": len(model.history_["epoch"]), "best_epoch": model.best_epoch_,
        "stopped_early": model.stopped_early_, "collect_seconds": t1 - t0, "fit_seconds": t2 - t1,
        "feature_norm": model.feature_norm_, "path": "spark-propagated features",
        "edge_split": {"pairs": counts, "sampled": {p: len(v) for p, v in pos.items()},
                       "negatives": {p: len(v) for p, v in neg.items()}, "pool": len(pool),
                       "rows_collected": len(row_ids), "seed": int(seed)},
        "history": model.history_,
    }
    return model, _clean(metrics)
