"""Degree summaries and a one-call description of a graph (counts, degrees, class balance)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def degree_stats(vertices: DataFrame, edges: DataFrame, symmetric: bool = False) -> dict[str, Any]:
    """min / median / mean / p99 / max of the (out+in) degree over *all* vertices, and isolated count.

    Vertices with no incident edge count as degree 0 (GraphFrames' ``degrees`` omits them; a summary
    should not). Quantiles are exact (``percentile``), fine for the sizes a summary is run on; use
    ``approx`` for billions of edges. ``symmetric``: every (u, v) has its (v, u), each once (a built,
    symmetrised graph), so in-degree = out-degree and the degree is twice the count of ``src`` (a
    self-loop is its own reverse and counts 2, as it does in src + dst): half the rows to aggregate.
    """
    if symmetric:
        deg = edges.groupBy(F.col("src").alias("id")).agg((F.count(F.lit(1)) * 2).alias("degree"))
    else:
        deg = (
            edges.select(F.col("src").alias("id"))
            .unionAll(edges.select(F.col("dst").alias("id")))
            .groupBy("id")
            .agg(F.count(F.lit(1)).alias("degree"))
        )
    full = vertices.select("id").join(deg, "id", "left").fillna(0, subset=["degree"])
    row = full.agg(
        F.count(F.lit(1)).alias("n"),
        F.min("degree").alias("min"),
        F.expr("percentile(degree, 0.5)").alias("median"),
        F.avg("degree").alias("mean"),
        F.expr("percentile(degree, 0.99)").alias("p99"),
        F.max("degree").alias("max"),
        F.sum(F.when(F.col("degree") == 0, 1).otherwise(0)).alias("isolated"),
    ).first()
    if row is None or not row["n"]:
        return {"min": 0, "median": 0.0, "mean": 0.0, "p99": 0.0, "max": 0, "isolated": 0}
    return {
        "min": int(row["min"]),
        "median": float(row["median"]),
        "mean": round(float(row["mean"]), 4),
        "p99": float(row["p99"]),
        "max": int(row["max"]),
        "isolated": int(row["isolated"]),
    }


def describe_graph(vertices: DataFrame, edges: DataFrame) -> dict[str, Any]:
    """Counts, degree summary, feature dimension, class balance and split sizes of a graph."""
    out: dict[str, Any] = {
        "vertices": vertices.count(),
        "edges": edges.count(),
        "degree": degree_stats(vertices, edges),
    }
    if "features" in vertices.columns:
        dims = vertices.select(F.size("features").alias("d")).distinct().collect()
        out["feature_dims"] = sorted(int(r["d"]) for r in dims)
    if "label" in vertices.columns:
        rows = vertices.groupBy("label").count().collect()
        out["classes"] = {("null" if r["label"] is None else str(r["label"])): int(r["count"])
                          for r in sorted(rows, key=lambda r: (r["label"] is None, r["label"] or 0))}
    if "split" in vertices.columns:
        rows = vertices.groupBy("split").count().collect()
        out["split"] = {str(r["split"]): int(r["count"]) for r in rows}
    return out
