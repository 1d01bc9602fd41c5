"""What a propagation reads: the features and edges in the plans' types, checked once (docs/architecture.md §2.2).

Features are ``array<float>`` of one length: null, ragged or NaN/inf features raise
:class:`~lepton_spark.errors.InvalidGraphError` here, before any plan runs. Weights are checked by the
plans while they pack the edges (no extra pass over the edges); :func:`check_weights` is the same rule
as one job, for callers that validate a graph up front (the build stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import resident
from lepton_spark.graph.propagation.schemas import FEATURES_T


@dataclass
class Inputs:
    """A propagation's inputs as the plans read them."""

    spark: SparkSession
    x0: DataFrame  # id long, features array<float> (persisted by prepare: the caller unpersists it)
    edges: DataFrame  # src long, dst long, weight float
    n: int
    dim: int
    source_edges: DataFrame | None = None  # the caller's edges DataFrame (the operator cache key)
    # False: ``n`` is the caller's count and ``dim`` the first row's length, nothing checked yet; the
    # plan validates the features where it reads them (the partitioned plan in its blocks' table, the
    # broadcast plan on the driver)
    checked: bool = True
    # (sorted ids, matrix) when the driver already holds the features (graph.resident): the broadcast
    # plan reads them instead of collecting x0
    local: tuple[np.ndarray, np.ndarray] | None = None
    # (base x0, fn) when the features are ``fn`` applied row by row to ``base``'s, keeping their width
    # (graph.resident.lookup_mapped): the partitioned plan may apply fn in its first round's blocks
    source: tuple[DataFrame, Callable[[np.ndarray], np.ndarray]] | None = None


def check_matrix(lengths: np.ndarray, nulls: int, values: np.ndarray) -> int:
    """:func:`check_features`'s rule on features already on the driver: ``lengths`` of the non-null
    vectors, the number of ``nulls``, and all their ``values``; returns the feature length."""
    counts = np.bincount(lengths)
    seen = {**({-1: nulls} if nulls else {}), **{int(d): int(c) for d, c in enumerate(counts) if c}}
    dim = int(np.argmax(counts)) if len(lengths) else 0
    bad_rows = 0
    if len(lengths) and values.size and np.all(lengths == dim):
        bad_rows = int((~np.isfinite(values.reshape(len(lengths), dim))).any(axis=1).sum())
    return _feature_rule(seen, bad_rows)[1]


def check_features(vertices: DataFrame, features: str = "features") -> tuple[int, int]:
    """``(vertices, dims)`` of an ``array`` feature column, in one aggregation job.

    Raises :class:`~lepton_spark.errors.InvalidGraphError` (a ValueError; exit code 3) when features
    are null, of more than one length, or hold NaN/inf. An empty table gives ``(0, 0)``.
    """
    col = F.col(features)
    nonfinite = F.exists(col, lambda v: F.isnan(v) | (F.abs(v) == F.lit(float("inf"))))
    rows = vertices.groupBy(F.size(col).alias("d")).agg(
        F.count(F.lit(1)).alias("count"), F.sum(F.when(nonfinite, 1).otherwise(0)).alias("bad")).collect()
    lengths = {(-1 if r["d"] is None else int(r["d"])): int(r["count"]) for r in rows}
    return _feature_rule(lengths, sum(int(r["bad"] or 0) for r in rows))


def _feature_rule(lengths: dict[int, int], nonfinite_rows: int) -> tuple[int, int]:
    """``(vertices, dims)`` from the rows per feature length (-1: null) and the rows holding NaN/inf,
    or the :class:`~lepton_spark.errors.InvalidGraphError` of the first rule they break (the one rule
    of :func:`check_features` and its driver twin :func:`check_matrix`)."""
    n = sum(lengths.values())
    valid = {d: c for d, c in lengths.items() if d >= 0}
    if not valid:
        if n == 0:
            return 0, 0
        raise InvalidGraphError(f"propagate: all {n} feature vectors are null")
    dim = max(valid, key=lambda d: (valid[d], -d))
    bad = n - valid[dim]
    if bad:
        raise InvalidGraphError(
            f"propagate: {bad} of {n} vertices have null features or a length other than {dim} "
            f"(lengths seen: {dict(sorted(lengths.items()))})"
        )
    if nonfinite_rows:
        raise InvalidGraphError(f"propagate: {nonfinite_rows} of {n} vertices have NaN or infinite features")
    return n, dim


def check_weights(edges: DataFrame, weight: str = "weight") -> None:
    """Raise :class:`~lepton_spark.errors.InvalidGraphError` when an edge weight is null, NaN or infinite
    (one aggregation job; a missing weight column means weight 1.0 and passes)."""
    if weight not in edges.columns:
        return
    w = F.col(weight).cast("double")
    bad = edges.agg(F.sum(F.when(w.isNull() | F.isnan(w) | (F.abs(w) == F.lit(float("inf"))), 1)
                          .otherwise(0)).alias("bad")).first()["bad"]
    if bad:
        raise InvalidGraphError(f"propagate: {int(bad)} edges have a null, NaN or infinite weight")


def _cast_features(vertices: DataFrame, features: str) -> DataFrame:
    return vertices.select(F.col("id").cast("long").alias("id"), F.col(features).cast(FEATURES_T).alias("features"))


def prepare(g: Any, features: str, weight: str | None, num_vertices: int | None = None,
            num_features: int | None = None) -> Inputs:
    """``g``'s features and edges cast to the plans' types, the features persisted and checked.

    With ``num_vertices`` (the caller's count of ``g``'s vertices) the features are neither persisted
    nor checked here: the plan is chosen from that count and the first row's length, and the plan
    checks the features where it reads them (``Inputs.checked`` False). At 1M x 64 the check's job and
    cache cost 5 s of a 7 s preparation whose broadcast plan then collects the features anyway.

    Raises ValueError for a missing or non-numeric-array feature column and
    :class:`~lepton_spark.errors.InvalidGraphError` for bad features (see :func:`check_features`).
    """
    vertices, edges = g.vertices, g.edges
    if features not in vertices.columns:
        raise ValueError(f"propagate: vertices have no column {features!r} (columns: {', '.join(vertices.columns)})")
    ftype = vertices.schema[features].dataType
    if not isinstance(ftype, T.ArrayType) or not isinstance(
        ftype.elementType, T.FloatType | T.DoubleType | T.IntegerType | T.LongType | T.ShortType
    ):
        raise ValueError(f"propagate: column {features!r} must be array<float>, got {ftype.simpleString()}")
    x0 = _cast_features(vertices, features)
    # a null weight is bad data (checked while the edges are packed), not weight 1.0; only a missing
    # weight column (or weight=None) means 1.0
    w = F.col(weight).cast("float") if weight and weight in edges.columns else F.lit(1.0).cast("float")
    e = edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"), w.alias("weight"))
    spark = vertices.sparkSession
    held = resident.lookup(vertices) if features == "features" else None  # a registered table is (id, features)
    if held is not None:  # a broadcast propagation's result: its matrix is on the driver, checked here
        ids, x = held
        dim = check_matrix(np.full(len(ids), x.shape[1], np.int64), 0, x.reshape(-1)) if len(ids) else 0
        return Inputs(spark, x0, e, len(ids), dim, edges, local=held)
    if num_vertices is not None:
        if num_features is not None:  # the caller knows the length too: no first-row job
            n = max(int(num_vertices), 0)
            mapped = resident.lookup_mapped(vertices) if features == "features" else None
            source = None if mapped is None else (_cast_features(mapped[0], "features"), mapped[1])
            return Inputs(spark, x0, e, n, max(int(num_features), 0) if n else 0, edges, checked=False,
                          source=source)
        first = x0.select(F.size("features").alias("d")).first() if num_vertices else None
        dim = max(int(first["d"]), 0) if first is not None and first["d"] is not None else 0
        return Inputs(spark, x0, e, int(num_vertices) if first is not None else 0, dim, edges, checked=False)
    # kept for the plan's own read: the features often come out of a dense layer (a Python UDF), which
    # would otherwise run twice (for this check and for the plan)
    x0 = x0.persist()
    try:
        n, dim = check_features(x0, "features")
    except InvalidGraphError:
        x0.unpersist()
        raise
    return Inputs(spark, x0, e, n, dim, edges)
