"""The ``links`` stage: a link model's edge scores and top-k new links, staged like every table.

It loads the run's (or ``--model``'s) artifact, refuses a model that is not a link model, runs the
encoder on Spark through the same propagation machinery as ``propagate`` (the nightly's operator
cache shares the edge blocks ``propagate`` packed, so only the rounds run again; its rounds are
checkpointed under ``_work/<run id>/links`` like propagate's), and stages

* ``edge_scores`` (src long, dst long, weight float, score double): the decoder's score of every edge;
* ``link_predictions`` (src long, dst long, score double, rank int): per vertex its ``links.k`` best
  new links (:func:`lepton_spark.links.spark.link_predictions`).

Counts recorded for the manifest: ``links`` (k, candidate method, vertices with a prediction,
score histograms of both tables for the run report).
"""

from __future__ import annotations

import logging

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lepton_spark.errors import InvalidInputError, UsageError
from lepton_spark.pipeline import publish
from lepton_spark.pipeline.context import RunContext, stage_df

log = logging.getLogger(__name__)

#: bins of the score histograms recorded for the report (scores are in [0, 1])
HISTOGRAM_BINS = 20


def score_histogram(df: DataFrame, bins: int = HISTOGRAM_BINS) -> list[int]:
    """Counts of ``score`` in ``bins`` equal bins over [0, 1] (the last bin includes 1.0); one job."""
    b = F.least(F.floor(F.col("score") * bins), F.lit(bins - 1)).cast("int")
    counts = np.zeros(bins, dtype=np.int64)
    for row in df.select(b.alias("b")).groupBy("b").count().collect():
        if row["b"] is not None:
            counts[int(row["b"])] = int(row["count"])
    return counts.tolist()


def links_stage(ctx: RunContext) -> None:
    """Stage ``edge_scores`` and ``link_predictions`` (module docstring)."""
    from lepton_spark.links.spark import edge_scores, link_predictions
    from lepton_spark.pipeline.stages import forward_on_spark, graph_dims, load_model_checked, read_graph

    if not ctx.model_dir:
        raise UsageError("links needs a model: run the train stage or set pipeline.model_dir / --model")
    cfg = ctx.cfg.links
    vertices, edges = read_graph(ctx)
    dim, n = graph_dims(ctx, vertices, edges)
    model = load_model_checked(ctx.model_dir, dim, None)
    if getattr(model, "task", "node") != "link":
        raise InvalidInputError(f"model {ctx.model_dir} is a {model.model_type} model (node classification); "
                                "the links stage needs a link model (model.type gae)")
    emb = forward_on_spark(ctx, model, vertices, edges, "links", num_vertices=n, num_features=dim).persist()
    try:
        if n is None:
            n = emb.count()
        broadcast = n * model.embedding_dim * 4 <= cfg.broadcast_max_bytes
        stage_df(ctx, edge_scores(edges, emb, broadcast=broadcast), "edge_scores")
        preds = link_predictions(edges, emb, k=cfg.k, method=cfg.candidates, max_neighbors=cfg.max_neighbors,
                                 seed=cfg.seed, broadcast=broadcast, lsh_bucket_length=cfg.lsh_bucket_length,
                                 lsh_num_tables=cfg.lsh_num_tables, lsh_max_bucket=cfg.lsh_max_bucket,
                                 lsh_projections=cfg.lsh_projections)
        stage_df(ctx, preds, "link_predictions")
    finally:
        emb.unpersist()
    scores = ctx.spark.read.parquet(publish.staged_dir(ctx.output, ctx.run_id, "edge_scores", ctx.run_date))
    predicted = ctx.spark.read.parquet(publish.staged_dir(ctx.output, ctx.run_id, "link_predictions", ctx.run_date))
    ctx.counts["links"] = {
        "k": cfg.k, "candidates": cfg.candidates, "max_neighbors": cfg.max_neighbors,
        "vertices_with_predictions": predicted.select("src").distinct().count(),
        "histogram_bins": HISTOGRAM_BINS,
        "edge_score_histogram": score_histogram(scores),
        "prediction_score_histogram": score_histogram(predicted),
    }
    log.info("links: %d edges scored, %d new links for %d vertices (k=%d, %s candidates)",
             ctx.tables.get("edge_scores", 0), ctx.tables.get("link_predictions", 0),
             ctx.counts["links"]["vertices_with_predictions"], cfg.k, cfg.candidates)
