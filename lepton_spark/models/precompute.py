"""Large-graph training: propagate with Spark, collect only the labelled rows, train on the driver.

For graphs too large for the driver, the parameter-free part of a model runs on Spark and only the
rows that carry a label (train/val/test) are brought to the driver:

* **SGC** – ``S^K X̃`` (K rounds of :func:`lepton_spark.graph.propagate` on the GCN-normalised edges);
  the logistic regression then trains on exactly the rows the full local fit would use, so the result
  equals the local fit up to float32 rounding of the features.
* **SIGN** – the hop features ``X̃, ÂX̃, …, Â^r X̃`` (one round per hop, each hop persisted), restricted
  to the labelled ids and concatenated; again the same training problem as the local fit.
* **APPNP** – its propagation acts on the MLP *output*, so it cannot be precomputed from ``X``. What is
  done instead: the MLP is trained on the labelled rows' (normalised) features alone, i.e. without
  propagation during training, and the propagation is applied at inference (``forward_spark``).
  APPNP's paper describes this "propagation only at inference" variant as cheaper but less accurate;
  it is an approximation of the full-graph model, measured and reported by ``bench/accuracy.py``.
  Reported metrics for APPNP come from the full propagated forward pass on Spark, restricted to the
  labelled rows.

GCN and GraphSAGE have learned weights inside every propagation round and are trained on the full
graph only (``trainer.train``); ``train_from_spark`` refuses them with a ``TypeError``.

Feature normalisation is resolved exactly as in ``fit``: for ``auto``/``standard`` an unfitted model
gets its mode and per-column statistics from one summary pass over ALL rows of the vertex table
(:meth:`~lepton_spark.models.plan.Ops.feature_summary`, partial summaries merged on the driver), and
the transform is applied with ``ops.map`` before the first propagation round, so the collected rows are
the same ``S^K X̃`` / hop features / ``X̃`` the local path computes. After training, the underfit
check of :func:`lepton_spark.models.trainer.underfit_check` runs on the train rows (WARNING + the
``underfit``/``majority_rate`` metrics).

Everything is written against :class:`lepton_spark.models.plan.Ops`, so the same code runs on Spark
(:class:`~lepton_spark.models.plan.SparkOps`) and on the float32 numpy twin used by the tests.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lepton_spark.graph.functional import accuracy
from lepton_spark.models.appnp import APPNP
from lepton_spark.models.base import GraphModel
from lepton_spark.models.plan import LabelledRows, Ops, SparkOps
from lepton_spark.models.sgc import SGC
from lepton_spark.models.sign import SIGN
from lepton_spark.models.trainer import underfit_check

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def collect_labelled(ops: Ops, model: GraphModel, splits: tuple[str, ...] = SPLITS) -> LabelledRows:
    """Compute the model's per-row input on the backend and collect the labelled rows only.

    ``model`` only needs its hyper-parameters (it may be unfitted); the feature width is taken from
    the data. An unfitted model resolves ``feature_norm`` here from the whole feature table (one
    summary pass for ``auto``/``standard``); a fitted model applies its fitted normalisation. Returns
    :class:`~lepton_spark.models.plan.LabelledRows` sorted by id.
    """
    if not isinstance(model, SGC | SIGN | APPNP):
        raise TypeError(f"{type(model).__name__} has learned weights inside its propagation rounds and "
                        "cannot be trained from precomputed features; use trainer.train on the full graph")
    t0 = time.perf_counter()
    if not hasattr(model, "params_"):
        needs_stats = model.feature_norm in ("auto", "standard")
        model.resolve_feature_norm(ops.feature_summary(ops.features()) if needs_stats else None)
    x = model._input_table(ops)
    if isinstance(model, SGC):
        z = ops.propagate(x, ops.gcn_edges(), model.K) if model.K else x
        rows = ops.collect_labelled([z], splits)
    elif isinstance(model, SIGN):
        edges = ops.persist(ops.gcn_edges())
        hops = [ops.persist(x)]
        for _ in range(model.hops):
            hops.append(ops.persist(ops.propagate(hops[-1], edges, 1)))
        try:
            rows = ops.collect_labelled(hops, splits)
        finally:
            for t in hops:
                ops.unpersist(t)
            ops.unpersist(edges)
    else:  # APPNP: the MLP trains on the normalised feature rows; propagation at inference only
        rows = ops.collect_labelled([x], splits)
    log.info("collected %d labelled rows x %d columns for %s in %.1fs", rows.Z.shape[0], rows.Z.shape[1],
             model.model_type, time.perf_counter() - t0)
    return rows


def train_from_ops(ops: Ops, model: GraphModel, *, seed: int = 0, num_classes: int | None = None,
                   splits: tuple[str, ...] = SPLITS) -> tuple[GraphModel, dict[str, Any]]:
    """Collect labelled rows (:func:`collect_labelled`), ``fit_precomputed`` on the train/val rows,
    and report train/val/test accuracy. Returns ``(fitted model, metrics)``."""
    t0 = time.perf_counter()
    rows = collect_labelled(ops, model, splits)
    t1 = time.perf_counter()
    train, val = rows.mask("train"), rows.mask("val")
    model.fit_precomputed(rows.Z, rows.y, train, val if val.any() else None, seed=seed,
                          num_classes=num_classes)
    t2 = time.perf_counter()
    if isinstance(model, APPNP):
        # the real prediction propagates the MLP output; evaluate it on the backend
        _, probs_t = model.forward_plan(ops, with_embedding=False)
        prows = ops.collect_labelled([probs_t], splits)
        probs, ylab, split = prows.Z, prows.y, prows.split
        mlp_probs = model.predict_proba_precomputed(rows.Z)
        mlp_acc = {f"mlp_only_{s}_acc": accuracy(mlp_probs[rows.mask(s)], rows.y[rows.mask(s)])
                   for s in splits}
    else:
        probs, ylab, split = model.predict_proba_precomputed(rows.Z), rows.y, rows.split
        mlp_acc = {}
    metrics: dict[str, Any] = {
        "model_type": model.model_type,
        "seed": int(seed),
        "path": "precomputed",
        "labelled_rows": int(rows.Z.shape[0]),
        "input_width": int(rows.Z.shape[1]),
        "epochs_run": len(model.history_["epoch"]),
        "best_epoch": model.best_epoch_,
        "stopped_early": model.stopped_early_,
        "collect_seconds": round(t1 - t0, 3),
        "fit_seconds": round(t2 - t1, 3),
        "history": model.history_,
    }
    for s in splits:
        m = split == s
        metrics[f"{s}_acc"] = accuracy(probs[m], ylab[m])
    metrics.update(mlp_acc)
    metrics["feature_norm"] = model.feature_norm_
    metrics.update(underfit_check(model.model_type, metrics["train_acc"], rows.y[train],
                                  feature_norm=model.feature_norm_))
    return model, metrics


def train_from_spark(g: Any, model: GraphModel, *, seed: int = 0, features: str = "features",
                     weight: str = "weight", label_col: str = "label", split_col: str = "split",
                     num_classes: int | None = None,
                     propagate_options: dict[str, Any] | None = None) -> tuple[GraphModel, dict[str, Any]]:
    """Large-graph training of SGC/SIGN/APPNP from a :class:`lepton_spark.graph.GraphFrame` over the
    RAW graph: propagated inputs computed with :func:`lepton_spark.graph.propagate`, only the rows
    whose ``label_col`` is set and whose ``split_col`` is train/val/test are collected; training is
    numpy on the driver (see the module docstring for what APPNP does). Returns ``(model, metrics)``.

    ``propagate_options`` go to every :func:`~lepton_spark.graph.propagate` call; with a caller's
    ``operators`` cache and an ``operator_key`` naming the graph, the propagated features stay in that
    cache for a later forward pass over the same graph (the nightly's propagate stage).
    """
    ops = SparkOps(g, features=features, weight=weight, label=label_col, split=split_col,
                   propagate_options=propagate_options)
    try:
        return train_from_ops(ops, model, seed=seed, num_classes=num_classes)
    finally:
        ops.close()
