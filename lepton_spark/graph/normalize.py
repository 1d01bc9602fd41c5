"""Edge-weight normalisations for propagation (GCN's symmetric one and the row/mean one).

Convention (same as :func:`lepton_spark.graph.propagate`): an edge ``u -> v`` with weight ``w`` sends
``w * x_u`` to ``v``. Degrees are weighted in-degrees (the dst side), so for an undirected graph stored
with both directions they are the usual degrees.

* ``sym``: ``w_uv / sqrt(d_u * d_v)`` — with ``self_loops=True`` this is GCN's D^-1/2 (A+I) D^-1/2.
* ``row``: ``w_uv / d_v`` — every vertex's incoming weights sum to 1 (a weighted mean of neighbours).
* ``none``: weights unchanged (self-loops still added when asked).

Duplicate ``(src, dst)`` pairs are merged by summing their weights (the sparse-matrix meaning of a
multigraph), so the result equals the scipy computation on the same COO entries.
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def normalize_edges(
    edges: DataFrame,
    mode: Literal["sym", "row", "none"] = "sym",
    self_loops: bool = True,
    vertices: DataFrame | None = None,
    weight: str | None = "weight",
) -> DataFrame:
    """Normalised ``(src, dst, weight)`` edges. See the module docstring for the formulas.

    ``self_loops`` adds a weight-1 loop per vertex (A+I); pass ``vertices`` so that vertices without
    any edge get their loop too (otherwise loops are added for the ids that occur in ``edges``).
    """
    if mode not in ("sym", "row", "none"):
        raise ValueError(f"normalize_edges: mode must be sym, row or none, got {mode!r}")
    w = F.col(weight).cast("double") if weight and weight in edges.columns else F.lit(1.0).cast("double")
    e = edges.select(F.col("src"), F.col("dst"), F.coalesce(w, F.lit(1.0)).alias("weight"))
    if self_loops:
        if vertices is not None:
            ids = vertices.select(F.col("id"))
        else:
            ids = e.select(F.col("src").alias("id")).union(e.select(F.col("dst").alias("id"))).distinct()
        loops = ids.select(F.col("id").alias("src"), F.col("id").alias("dst"), F.lit(1.0).alias("weight"))
        e = e.unionByName(loops)
    e = e.groupBy("src", "dst").agg(F.sum("weight").alias("weight"))
    if mode == "none":
        return e.select("src", "dst", F.col("weight").cast("float").alias("weight"))
    deg = e.groupBy(F.col("dst").alias("id")).agg(F.sum("weight").alias("deg"))
    if mode == "row":
        out = e.join(deg, e.dst == deg.id).select(
            "src", "dst", F.when(F.col("deg") > 0, F.col("weight") / F.col("deg")).otherwise(0.0).alias("weight")
        )
    else:
        ds = deg.select(F.col("id").alias("s_id"), F.col("deg").alias("s_deg"))
        dd = deg.select(F.col("id").alias("d_id"), F.col("deg").alias("d_deg"))
        out = (
            e.join(ds, e.src == ds.s_id, "left")
            .join(dd, e.dst == dd.d_id)
            .select(
                "src",
                "dst",
                F.when((F.col("s_deg") > 0) & (F.col("d_deg") > 0),
                       F.col("weight") / F.sqrt(F.col("s_deg") * F.col("d_deg"))).otherwise(0.0).alias("weight"),
            )
        )
    return out.select("src", "dst", F.col("weight").cast("float").alias("weight"))
