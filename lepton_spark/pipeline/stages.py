"""The pipeline's stages. Each takes the :class:`RunContext`, does one thing, records counts/timings."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lepton_spark import storage
from lepton_spark.errors import InvalidInputError, UsageError
from lepton_spark.pipeline.context import RunContext, held_rows, stage_df, stage_in_tasks, stage_rows

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ graph


def read_graph(ctx: RunContext) -> tuple[DataFrame, DataFrame]:
    vertices, edges = ctx.graph()
    if "features" not in vertices.columns:
        raise InvalidInputError(f"graph {ctx.graph_dir}/vertices: no 'features' column")
    return vertices, edges


def local_graph(spark: SparkSession, vertices: DataFrame, edges: DataFrame,
                graph_dir: str | None = None) -> dict[str, Any]:
    """The graph on the driver: ids (sorted), A (row = src), X (float32), y (-1 = none), split masks.

    With ``graph_dir`` the Parquet files are read with pyarrow directly (falling back to collecting
    the DataFrames through Spark when pyarrow cannot read them, e.g. a file system it has no driver for).
    """
    vcols = [c for c in ("id", "features", "label", "split") if c in vertices.columns]
    ecols = ["src", "dst", *(["weight"] if "weight" in edges.columns else [])]
    vt = et = None
    if graph_dir:
        try:
            vt = storage.read_parquet_arrow(storage.join_path(graph_dir, "vertices"), vcols)
            et = storage.read_parquet_arrow(storage.join_path(graph_dir, "edges"), ecols)
        except (OSError, ValueError, TypeError) as exc:  # e.g. no pyarrow file system for the URI
            log.info("train: reading %s with pyarrow failed (%s); collecting through Spark", graph_dir,
                     storage.first_line(exc))
            vt = et = None
    if vt is None or et is None:
        vt = storage.collect_arrow(vertices.select(*vcols))
        et = storage.collect_arrow(edges.select(*ecols))
    return _graph_arrays(vt, et)


def _sorted_features(col: Any, order: np.ndarray) -> np.ndarray:
    """``list_to_matrix(col)[order]`` without joining the column's chunks first: each chunk's rows are
    scattered to their sorted places in one matrix (at 1M x 64 the joined copy, a second 256 MB
    matrix with its page faults, cost about a second). The same errors for null or ragged rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lepton_spark.graph.arrow import list_to_matrix

    chunks = [c for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]) if len(c)]
    if len(chunks) <= 1 or col.null_count:
        return list_to_matrix(col)[order]  # one chunk is not copied; null rows: list_to_matrix raises
    dim = int(pc.list_value_length(chunks[0].slice(0, 1)).to_numpy()[0])  # the first row's, as list_to_matrix
    if any(np.any(pc.list_value_length(c).to_numpy(zero_copy_only=False) != dim) for c in chunks):
        return list_to_matrix(col)[order]  # ragged rows: list_to_matrix raises its error
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))  # where each input row goes
    x = np.empty((len(order), dim), dtype=np.float32)
    start = 0
    for c in chunks:
        x[pos[start:start + len(c)]] = list_to_matrix(c, dim)
        start += len(c)
    return x


def _graph_arrays(vt: Any, et: Any) -> dict[str, Any]:
    import pyarrow.compute as pc

    from lepton_spark.graph import kernels

    ids = vt.column("id").to_numpy()
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    x = _sorted_features(vt.column("features"), order)
    n = len(ids)
    y = np.full(n, -1, dtype=np.int64)
    if "label" in vt.column_names:
        lab = vt.column("label").to_numpy(zero_copy_only=False)
        lab = np.where(np.isnan(lab.astype(float)), -1, lab).astype(np.int64) if lab.dtype.kind == "f" else lab
        y = np.asarray(lab, dtype=np.int64)[order]
    def split_is(name: str) -> np.ndarray:
        if "split" not in vt.column_names:
            return np.zeros(n, dtype=bool)
        return pc.fill_null(pc.equal(vt.column("split"), name), False).to_numpy(zero_copy_only=False)[order]

    src, dst = et.column("src").to_numpy(), et.column("dst").to_numpy()
    w = et.column("weight").to_numpy(zero_copy_only=False).astype(np.float64) if "weight" in et.column_names \
        else np.ones(len(src))  # a null weight -> NaN -> rejected below
    bad_w = int(np.count_nonzero(~np.isfinite(w)))
    if bad_w:
        raise InvalidInputError(f"graph: {bad_w} edges have a null, NaN or infinite weight")
    if x.size and not np.isfinite(x).all():
        raise InvalidInputError(f"graph: {int((~np.isfinite(x)).any(axis=1).sum())} vertices have NaN or "
                                "infinite features")
    (ps, sv), (pd, dv) = kernels.positions(ids, src), kernels.positions(ids, dst)
    ok = sv & dv
    if not ok.all():  # a built graph has no dangling edges: skip three 19M-element copies (1 s at 10M edges)
        w, ps, pd = w[ok], ps[ok], pd[ok]
    A = sp.csr_matrix((w, (ps, pd)), shape=(n, n))
    masks = {s: split_is(s) & (y >= 0) for s in ("train", "val", "test")}
    if x.size and np.count_nonzero(x) < 0.1 * x.size:
        x = sp.csr_matrix(x)  # bag-of-words style features: sparse products are ~10x cheaper
    return {"ids": ids, "A": A, "X": x, "y": y, "masks": masks}


# ------------------------------------------------------------------------------------------ stages


def _dense_ids(ctx: RunContext) -> bool:
    """Whether the run's graph says its vertex ids are exactly 0..n-1 (``_graph.json``: ``dense_ids``,
    written by build and sample)."""
    return bool(storage.read_graph_meta(ctx.graph_dir).get("dense_ids", False))


def _symmetric(ctx: RunContext, weights: bool = False) -> bool:
    """Whether the run's graph says every edge has its reverse, once (``_graph.json``: ``symmetric``),
    and with ``weights`` also that both carry the same weight (``symmetric_weights``)."""
    return bool(storage.read_graph_meta(ctx.graph_dir).get("symmetric_weights" if weights else "symmetric", False))


def build_stage(ctx: RunContext) -> None:
    b = ctx.cfg.build
    if not (b.vertices and b.edges):
        vertices, edges = read_graph(ctx)
        meta = ctx.graph_meta()
        if isinstance(meta.get("num_vertices"), int) and isinstance(
                meta.get("num_edges"), int):  # written with the graph by build or sample: no count jobs
            n, m = meta["num_vertices"], meta["num_edges"]
        else:
            n, m = vertices.count(), edges.count()
        ctx.counts.update({"input_vertices": n, "input_edges": m, "quarantine": {}})
        log.info("build: no raw inputs configured (build.vertices/build.edges); using graph %s", ctx.graph_dir)
        return
    from lepton_spark.ingest import build_graph

    out = storage.join_path(ctx.run_dir, "graph")
    report = build_graph(ctx.spark, b, out)
    ctx.graph_dir = storage.join_path(out, "graph")
    ctx.counts.update({"input_vertices": report["counts"]["vertices_in"],
                       "input_edges": report["counts"]["edges_in"],
                       "graph_vertices": report["counts"]["vertices_out"],
                       "graph_edges": report["counts"]["edges_out"], "quarantine": report["quarantine"]})


def _hparams(ctx: RunContext) -> dict[str, Any]:
    from lepton_spark.models.trainer import preset_hparams

    return {**preset_hparams(ctx.cfg.model.type, ctx.cfg.model.preset), **ctx.cfg.model.params}


def train_stage(ctx: RunContext) -> None:
    if not ctx.cfg.train.enabled:
        if not ctx.model_dir:
            raise UsageError("train.enabled is false but pipeline.model_dir is not set")
        log.info("train: disabled; reusing model %s", ctx.model_dir)
        return
    model_dir = storage.join_path(ctx.run_dir, "model")

    def keep(ids: np.ndarray, x: Any) -> None:
        ctx.held_features = (ctx.graph_dir, ids, x)

    # the run's operator cache: a propagation of training (SGC/SIGN above train.local_max_nodes) is kept
    # there and served to the propagate stage when it asks for the same table (SparkOps recipes)
    summary = train_model(ctx.spark, ctx.cfg, ctx.graph_dir, model_dir, hparams=_hparams(ctx), graph=ctx.graph(),
                          num_vertices=ctx.graph_meta().get("num_vertices"),
                          propagate_options={"operators": ctx.operators, "operator_key": ctx.graph_dir,
                                             "keep_results": True, "symmetric": _symmetric(ctx, weights=True),
                                             "dense_ids": _dense_ids(ctx),
                                             # a validated graph's features passed build's rules
                                             "checked_features": bool(ctx.graph_meta().get("validated")),
                                             "edge_files": edge_files(ctx)},
                          keep_features=keep if "propagate" in ctx.stages else None)
    ctx.model_dir = model_dir
    keys = ("train_acc", "val_acc", "test_acc", "epochs_run", "majority_rate", "underfit", "feature_norm")
    if summary.get("task") == "link":
        keys = ("val_auc", "val_ap", "test_auc", "test_ap", "epochs_run", "feature_norm")
    ctx.counts["train"] = {k: summary.get(k) for k in keys}


def train_model(spark: SparkSession, cfg: Any, graph_dir: str, model_dir: str,
                hparams: dict[str, Any] | None = None,
                propagate_options: dict[str, Any] | None = None,
                graph: tuple[DataFrame, DataFrame] | None = None, num_vertices: int | None = None,
                keep_features: Callable[[np.ndarray, np.ndarray], None] | None = None) -> dict[str, Any]:
    """Train ``cfg.model.type`` on the graph in ``graph_dir``; write model.npz + model.json to model_dir.

    ``propagate_options``: passed to the Spark propagations of the large-graph path (SGC/SIGN/APPNP).
    ``graph``: its ``(vertices, edges)`` DataFrames when the caller has read them already;
    ``num_vertices``: its vertex count when known (a validated graph's ``_graph.json``), else counted.
    ``keep_features``: called with ``(sorted ids, float32 features)`` when training read a dense
    feature matrix on the driver (the nightly keeps it for its propagate stage).
    """
    from lepton_spark.models import MODEL_TYPES, create_model
    from lepton_spark.models.artifact import data_fingerprint
    from lepton_spark.models.trainer import train

    vertices, edges = graph or storage.read_graph(spark, graph_dir)
    n = num_vertices if isinstance(num_vertices, int) else vertices.count()
    hp = dict(hparams or {})
    if n > cfg.train.local_max_nodes:
        if cfg.model.type not in ("sgc", "sign", "appnp", "gae"):
            raise UsageError(f"graph has {n} vertices > train.local_max_nodes={cfg.train.local_max_nodes}: "
                             f"{cfg.model.type} trains on the driver only; use sgc, sign or appnp (or gae "
                             "with encoder sgc)")
        from lepton_spark.graph import GraphFrame
        from lepton_spark.links.large import train_link_from_spark
        from lepton_spark.models.precompute import train_from_spark

        g, model = GraphFrame(vertices, edges), create_model(cfg.model.type, **hp)
        # the run's graph settings (plan, broadcast_max_bytes, partitions, ...) rule these propagations
        # as they rule the propagate stage's; a caller's "config" wins
        options = {"config": cfg.graph, **(propagate_options or {})}
        if cfg.model.type == "gae":  # sampled pairs, over the training graph: no shared operators
            model, metrics = train_link_from_spark(g, model, seed=cfg.train.seed,
                                                   propagate_options={"config": options["config"]})
        else:
            model, metrics = train_from_spark(g, model, seed=cfg.train.seed, propagate_options=options)
        fingerprint = {"num_vertices": n, "num_edges": edges.count(), "trained_from": "spark-propagated features"}
    else:
        data = local_graph(spark, vertices, edges, graph_dir)
        link = getattr(MODEL_TYPES.get(cfg.model.type), "task", "node") == "link"  # learns from edges, no labels
        if not link and not data["masks"]["train"].any():
            raise InvalidInputError(f"graph {graph_dir}: no labelled vertices with split 'train'")
        model, metrics = train(cfg.model.type, data["A"], data["X"], data["y"], data["masks"], hp, cfg.train.seed)
        fingerprint = data_fingerprint(data["A"], data["X"], data["masks"], data["ids"])
        if keep_features is not None and isinstance(data["X"], np.ndarray) and data["X"].dtype == np.float32:
            keep_features(data["ids"], data["X"])
    _save(model, model_dir, metrics, fingerprint)
    return metrics


def _save(model: Any, model_dir: str, metrics: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    from lepton_spark.models.artifact import save_model

    if "://" not in model_dir or model_dir.startswith("file://"):
        save_model(model, model_dir.removeprefix("file://"), metrics=metrics, fingerprint=fingerprint)
        return
    tmp = Path(tempfile.mkdtemp(prefix="lepton-model-"))
    try:
        save_model(model, tmp, metrics=metrics, fingerprint=fingerprint)
        storage.upload_dir(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_checked(model_dir: str, num_features: int, num_classes: int | None) -> Any:
    """Load the artifact (sha256 + shapes verified); corrupt or mismatched artifacts raise InvalidInputError."""
    from lepton_spark.models.artifact import load_model

    with storage.local_copy(model_dir) as local:  # a URI is downloaded to a temp dir (removed after)
        try:
            return load_model(local or model_dir.removeprefix("file://"), num_features=num_features,
                              num_classes=num_classes)
        except (ValueError, OSError, KeyError) as exc:
            raise InvalidInputError(f"model {model_dir}: {storage.first_line(exc)}") from None


def predictions_from(out: DataFrame) -> DataFrame:
    """(id, probs) -> (id, label = argmax, probs)."""
    label = (F.array_position(F.col("probs"), F.array_max("probs")) - 1).cast("int")
    return out.select("id", label.alias("label"), F.col("probs").cast("array<float>").alias("probs"))


def embedding_rows(rows: Any) -> Any:
    """The ``embeddings`` table from a forward pass's rows held as a pyarrow Table (``id``,
    ``embedding``; the types the DataFrame path writes)."""
    import pyarrow as pa

    return pa.table({"id": rows.column("id").cast(pa.int64()),
                     "embedding": rows.column("embedding").cast(pa.list_(pa.float32()))})


def prediction_rows(rows: Any) -> Any:
    """:func:`predictions_from` on a pyarrow Table: ``label`` is the first position of the largest
    probability (numpy's argmax, which like Spark's ``array_max`` takes NaN as the largest)."""
    import pyarrow as pa

    from lepton_spark.graph.arrow import list_to_matrix

    probs = rows.column("probs").cast(pa.list_(pa.float32())).combine_chunks()
    m = list_to_matrix(probs)
    labels = np.argmax(m, axis=1).astype(np.int32) if m.size else np.zeros(len(probs), dtype=np.int32)
    return pa.table({"id": rows.column("id").cast(pa.int64()), "label": pa.array(labels, pa.int32()), "probs": probs})


def graph_dims(ctx: RunContext, vertices: DataFrame, edges: DataFrame) -> tuple[int, int | None]:
    """(feature length, vertex count or None) of the run's graph, for loading a model against it.

    A graph whose ``_graph.json`` says ``validated`` (build or sample already rejected bad features and
    weights) is taken at its word; any other graph gets two scans with clear errors (exit 3).
    """
    from lepton_spark.graph.propagation import check_features, check_weights

    meta = ctx.graph_meta()
    if meta.get("num_vertices") and meta.get("num_features"):
        return int(meta["num_features"]), int(meta["num_vertices"])
    n, dim = check_features(vertices, "features")
    check_weights(edges)
    if n == 0:
        raise InvalidInputError(f"graph {ctx.graph_dir}: no vertices")
    return dim, n


#: feature matrices up to this size are read on the driver for the forward pass (:func:`driver_features`);
#: every per-row step on them then writes its whole output as a local-rows file, which at 1M x 64 still
#: costs less than collecting the features through Spark (the 1M / 10M nightly's propagate stage:
#: 13.6 s against 15.5 s with a 64 MiB limit, once its edge blocks came from the graph's files)
_DRIVER_FEATURES_MAX_BYTES = 512 << 20


def driver_features(ctx: RunContext, n: int | None, dim: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's graph's ``(sorted ids, float32 features)`` read on the driver with pyarrow, when the
    broadcast plan will hold them there anyway; else None (the model reads them through Spark).

    Only for a validated graph (``_graph.json``: its features passed build's rules) whose feature
    matrix fits ``graph.broadcast_max_bytes`` and ``_DRIVER_FEATURES_MAX_BYTES``, on a classic session
    with the plan not forced to ``partitioned``. Collecting the same features through Spark (a job that converts every row of an
    ``array<float>`` column to Arrow, in a JVM whose converters are cold) took 3.2 s of the nightly's
    propagate stage at 100k x 64; pyarrow reads the Parquet files in a fraction of that. Anything
    unexpected (another file system, other ids than counted, ragged rows) falls back to Spark.
    """
    from lepton_spark.graph.broadcast_limit import broadcast_max_bytes
    from lepton_spark.session import is_connect

    g = ctx.cfg.graph
    kept, ctx.held_features = ctx.held_features, None  # taken once: released after this stage
    if not n or not dim or g.plan == "partitioned" or is_connect(ctx.spark) \
            or n * dim * 4 > min(broadcast_max_bytes(ctx.spark, g), _DRIVER_FEATURES_MAX_BYTES) \
            or not ctx.graph_meta():
        return None
    if kept is not None and kept[0] == ctx.graph_dir and kept[2].shape == (n, dim) \
            and bool(np.all(kept[1][1:] > kept[1][:-1])):
        log.info("%s: the forward pass takes the %d x %d features the train stage read", ctx.graph_dir, n, dim)
        return np.asarray(kept[1], dtype=np.int64), kept[2]  # (train checked them finite)
    try:
        vt = storage.read_parquet_arrow(storage.join_path(ctx.graph_dir, "vertices"), ["id", "features"])
        ids = vt.column("id").to_numpy()
        order = np.argsort(ids, kind="stable")
        ids = ids[order].astype(np.int64)
        if len(ids) != n or np.any(ids[1:] <= ids[:-1]):
            return None
        x = _sorted_features(vt.column("features"), order)
    except (OSError, ValueError, TypeError) as exc:  # no pyarrow file system for the URI, null rows, ...
        log.info("%s: reading the features with pyarrow failed (%s); the model reads them through Spark",
                 ctx.graph_dir, storage.first_line(exc))
        return None
    return (ids, x) if x.shape == (n, dim) and np.isfinite(x).all() else None


def edge_files(ctx: RunContext) -> str | None:
    """The run's graph's edge directory when its propagations may pack their blocks from the files
    (:class:`~lepton_spark.graph.blocks.EdgeFiles`): a validated graph (``_graph.json``) on a local
    path, so the files are exactly the edges the graph's DataFrame reads; else None."""
    if not ctx.graph_dir or not storage.is_local_path(ctx.graph_dir) or not ctx.graph_meta():
        return None
    return storage.join_path(ctx.graph_dir, "edges")


def forward_on_spark(ctx: RunContext, model: Any, vertices: DataFrame, edges: DataFrame, stage: str,
                     num_vertices: int | None = None, num_features: int | None = None) -> DataFrame:
    """``model.forward_spark`` over the run's graph: round seconds recorded under ``stage``, round state
    checkpointed under ``_work/<run id>/<stage>`` (resume), the run's shared edge blocks, and the
    ``round:<k>`` fault points. ``num_vertices``: the graph's vertex count from :func:`graph_dims`
    (its features checked there or by the build), so propagation skips its own check; ``num_features``
    their length (propagation then skips reading the first row as well)."""
    from lepton_spark.graph import GraphFrame

    rounds: list[float] = []
    ctx.round_seconds[stage] = rounds

    def on_round(k: int, info: dict[str, Any]) -> None:
        rounds.append(round(info["seconds"], 3))
        ctx.fault(f"round:{len(rounds)}")

    held = driver_features(ctx, num_vertices, num_features)
    return model.forward_spark(
        GraphFrame(vertices, edges),
        propagate_options={"checkpoint": storage.join_path(ctx.work_dir, stage), "on_round": on_round,
                           **({"driver_features": held} if held is not None else {}),
                           "edge_files": edge_files(ctx),
                           "config": ctx.cfg.graph, "operators": ctx.operators, "operator_key": ctx.graph_dir,
                           "symmetric": _symmetric(ctx, weights=True), "dense_ids": _dense_ids(ctx),
                           # graph_dims checked the features, or the graph's metadata vouches for them
                           "checked_features": bool(num_vertices),
                           **({"num_vertices": int(num_vertices)} if num_vertices else {}),
                           **({"num_features": int(num_features)} if num_vertices and num_features else {})},
    )


def propagate_stage(ctx: RunContext) -> None:
    if not ctx.model_dir:
        raise UsageError("propagate needs a model: run the train stage or set pipeline.model_dir / --model")
    vertices, edges = read_graph(ctx)
    dim, n = graph_dims(ctx, vertices, edges)
    model = load_model_checked(ctx.model_dir, dim, None)
    out = forward_on_spark(ctx, model, vertices, edges, "propagate", num_vertices=n, num_features=dim)
    link = getattr(model, "task", "node") == "link"
    if link:  # a link model has no class predictions: embeddings only
        ctx.counts.setdefault("skipped_tables", {})["predictions"] = \
            f"{model.model_type} is a link model: no class predictions (see the links stage)"
    tables = [("embeddings", embedding_rows, None)] + ([] if link else [("predictions", prediction_rows, "label")])
    rows = held_rows(ctx, out)
    if rows is not None:  # a broadcast forward pass in local mode: the driver wrote these rows itself
        for table, derive, by in tables:
            stage_rows(ctx, derive(rows), table, count_by=by)
        ctx.operators.drop_results()
        return
    if stage_in_tasks(ctx, out, tables):  # a partitioned result on this machine: one pass, pyarrow writes
        ctx.operators.drop_results()
        return
    if link:
        stage_df(ctx, out.select("id", F.col("embedding").cast("array<float>").alias("embedding")), "embeddings")
        return
    out = out.persist()
    try:
        stage_df(ctx, out.select("id", F.col("embedding").cast("array<float>").alias("embedding")), "embeddings")
        stage_df(ctx, predictions_from(out), "predictions", count_by="label")
    finally:
        out.unpersist()
        ctx.operators.drop_results()  # training's propagated features, served above: not needed again


def analytics_stage(ctx: RunContext) -> None:
    from lepton_spark.analytics.batch import vertex_analytics

    a = ctx.cfg.analytics
    vertices, edges = read_graph(ctx)
    tables = vertex_analytics(vertices, edges, reset=a.pagerank_reset, pagerank_iters=a.pagerank_iters,
                              pagerank_tol=a.pagerank_tol, lpa_iters=a.lpa_iters, components=a.components,
                              local_max_edges=a.local_max_edges, config=ctx.cfg.graph,
                              num_edges=ctx.graph_meta().get("num_edges"),
                              symmetric=_symmetric(ctx),
                              operators=ctx.operators, operator_key=ctx.graph_dir, edge_files=edge_files(ctx))
    for table, df in tables.items():
        stage_df(ctx, df, table)


def embed_stage(ctx: RunContext) -> None:
    try:
        from lepton_spark.embed import random_walk_embeddings
    except ImportError:
        raise UsageError("the embed stage is not available in this version") from None
    e = ctx.cfg.embed
    vertices, edges = read_graph(ctx)
    emb = random_walk_embeddings(ctx.spark, vertices.select("id"), edges.select("src", "dst"), e)
    stage_df(ctx, emb.select("id", F.col("embedding").cast("array<float>").alias("embedding")), "walk_embeddings")
