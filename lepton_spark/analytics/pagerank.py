"""PageRank on the builtin block engine, with GraphFrames' API and output convention.

Iteration (GraphX / GraphFrames ``PageRank.runWithOptions``): every vertex starts at 1.0 (personalised:
1.0 at the source, 0 elsewhere); each iteration ``PR[v] = r_v + (1 - r) * sum_{u->v} PR[u] / outDeg(u)``
with ``r_v = r`` (personalised: ``r`` at the source, 0 elsewhere); at the end the ranks are rescaled to
sum ``N`` (personalised: 1). Multi-edges count with multiplicity (weight ``1/outDeg`` each), a
self-loop is an ordinary edge.

**Dangling nodes (decision).** Vertices without out-edges send nothing, so mass leaks during the
iteration, as in GraphX. We keep this iteration on purpose, because its *normalised fixed point is
exactly the standard PageRank that redistributes dangling mass* (networkx's definition: uniformly,
or to the personalisation vector): with ``P`` the row-stochastic matrix of the non-dangling rows,
``d`` the dangling indicator and ``p`` the teleport vector, the standard ranks satisfy
``x = a P^T x + (a d^T x + 1 - a) p``, i.e. ``x = c (I - a P^T)^{-1} p`` for a scalar ``c``, while the
leaky iteration converges to ``y = (1 - a)(I - a P^T)^{-1} p``: the same vector up to scale. So

* ``pagerank / N`` (non-personalised) and ``pagerank`` (personalised, ``sourceId`` = networkx's
  ``personalization={source: 1}``) equal ``networkx.pagerank(G, alpha=1 - resetProbability)`` once
  converged (tested to 1e-4 on graphs with dangling nodes), and
* for a fixed ``maxIter`` the output equals GraphFrames' output iteration for iteration.

Convergence: with ``tol``, iterate until the L1 change of the (unnormalised, GraphX-scale) rank
vector between two iterations is below ``tol`` (computed in the iteration's own Spark action).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from lepton_spark.config import GraphConfig
from lepton_spark.graph.messages import quote
from lepton_spark.graph.programs import indexed_graph, pagerank_program, run_program

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

log = logging.getLogger(__name__)

PAGERANK = "pagerank"
WEIGHT = "weight"
_OUT = "_outdeg"
MAX_ITER_FOR_TOL = 10_000


def normalise_rank_array(ranks: np.ndarray, personalised: bool = False) -> np.ndarray | None:
    """:func:`normalise_ranks` of ranks held on the driver (None when they sum to 0, where the
    DataFrame version gives nulls). One vector operation instead of an aggregation job and a join over
    a DataFrame of driver rows (2 s of a nightly's analytics at 1M vertices)."""
    total = float(np.sum(ranks))
    if total == 0.0:
        return None
    return ranks * ((1.0 if personalised else float(len(ranks))) / total)


def normalise_ranks(ranks: DataFrame, personalised: bool = False) -> DataFrame:
    """(id, pagerank) rescaled to sum to the number of vertices (personalised: to 1), as GraphFrames.

    Ranks unpacked from a partitioned run's packed states
    (:func:`~lepton_spark.graph.resident.lookup_packed_rows`) stay so: their sum and count are taken
    from the packed rows (one small job), and the rescaling is part of the unpacking, so a writer on
    this machine still writes them in its own tasks."""
    from lepton_spark.graph import resident

    hit = resident.lookup_packed_rows(ranks)
    if hit is not None:
        packed, rows = hit
        got = packed.mapInArrow(_RankTotal(rows), "total double, n long").agg(
            F.sum("total").alias("total"), F.sum("n").alias("n")).first()
        if got["total"]:  # a zero sum gives nulls: the DataFrame version below
            factor = (1.0 if personalised else float(got["n"])) / float(got["total"])
            scaled = _Scaled(rows, factor)
            return resident.remember_packed_rows(packed.mapInArrow(scaled, ranks.schema), packed, scaled)
    total = ranks.agg(F.sum(PAGERANK).alias("_sum"), F.count(F.lit(1)).alias("_n"))
    target = F.lit(1.0) if personalised else F.col("_n").cast("double")
    scaled = F.try_divide(F.col(PAGERANK) * target, F.col("_sum"))  # null only if every rank is 0
    return ranks.crossJoin(F.broadcast(total)).select("id", scaled.alias(PAGERANK))


class _RankTotal:
    """``mapInArrow`` function: one ``(total, n)`` row per partition, the sum and count of the
    ``pagerank`` column of what ``rows`` makes of its batches."""

    def __init__(self, rows: Any) -> None:
        self.rows = rows

    def __call__(self, batches: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        total, n = 0.0, 0
        for b in self.rows(batches):
            total += float(pc.sum(b.column(PAGERANK)).as_py() or 0.0)
            n += b.num_rows
        yield pa.RecordBatch.from_pydict({"total": [total], "n": [n]})


class _Scaled:
    """``rows`` with the ``pagerank`` column multiplied by ``factor`` (picklable when ``rows`` is)."""

    def __init__(self, rows: Any, factor: float) -> None:
        self.rows, self.factor = rows, factor

    def __call__(self, batches: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        for b in self.rows(batches):
            i = b.schema.get_field_index(PAGERANK)
            yield pa.RecordBatch.from_arrays(
                [pc.multiply(c, pa.scalar(self.factor, pa.float64())) if j == i else c
                 for j, c in enumerate(b.columns)], names=b.schema.names)


def page_rank(
    g: GraphFrame,
    resetProbability: float = 0.15,
    sourceId: Any | None = None,
    maxIter: int | None = None,
    tol: float | None = None,
    *,
    checkpointInterval: int = 2,
    use_local_checkpoints: bool = False,
    storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER,
    config: GraphConfig | None = None,
    plan: str | None = None,
    num_blocks: int | None = None,
) -> GraphFrame:
    """PageRank of ``g`` -> GraphFrame(vertices + ``pagerank`` (double), edges + ``weight`` = 1/outDegree(src)).

    Exactly one of ``maxIter`` and ``tol`` must be given (ValueError otherwise; GraphFrames classic
    raises AssertionError with the same text). A ``sourceId`` that is not a vertex raises ValueError.
    Ranks sum to the number of vertices, or to 1 when personalised (see the module docstring for
    the dangling-node semantics). The result vertices are persisted at ``storage_level``. An
    existing ``weight`` edge column is replaced. The iteration runs on the block engine
    (:mod:`lepton_spark.graph.programs`); ``plan`` (auto | broadcast | partitioned, default
    ``config.plan``), ``num_blocks`` and ``config`` choose its physical plan. ``checkpointInterval``
    and ``use_local_checkpoints`` are accepted for GraphFrames compatibility (the engine cuts lineage
    every round).
    """
    if (maxIter is None) == (tol is None):
        raise ValueError("Exactly one of maxIter or tol should be set.")
    if not 0.0 <= resetProbability <= 1.0:
        raise ValueError(f"resetProbability must be in [0, 1], got {resetProbability}")
    if maxIter is not None and maxIter < 1:
        raise ValueError(f"maxIter must be >= 1, got {maxIter}")
    start = time.perf_counter()
    v, e = g.vertices, g.edges
    if sourceId is not None and v.filter(F.col("id") == F.lit(sourceId)).limit(1).count() == 0:
        raise ValueError(f"sourceId {sourceId!r} is not a vertex id")

    ig = indexed_graph(v.select("id"), e.select("src", "dst"))
    source = None
    if sourceId is not None:
        source = int(sourceId) if ig.mapping is None else int(
            ig.mapping.filter(F.col("id") == F.lit(sourceId)).first()["_pos"])
    limit = maxIter if maxIter is not None else MAX_ITER_FOR_TOL
    ranks = run_program(ig, pagerank_program(resetProbability, source, tol), limit, config=config, plan=plan,
                        num_blocks=num_blocks).withColumnRenamed("value", PAGERANK)
    ranks = ig.to_original(ranks, [PAGERANK], []).persist(storage_level)
    try:
        normalised = normalise_ranks(ranks, personalised=sourceId is not None)
        v_out = v.drop(PAGERANK) if PAGERANK in v.columns else v
        vertices = (
            v_out.join(normalised, "id", "left")
            .select(*[quote(c) for c in v_out.columns], PAGERANK)
            .persist(storage_level)
        )
        n = vertices.count()
    finally:
        ranks.unpersist()
    out = e.groupBy(F.col("src").alias("id")).agg(F.count(F.lit(1)).alias(_OUT))
    e_out = e.drop(WEIGHT) if WEIGHT in e.columns else e
    w = out.select(F.col("id").alias("__wsrc"), (F.lit(1.0) / F.col(_OUT)).alias(WEIGHT))
    edges = e_out.join(w, F.col("src") == F.col("__wsrc"), "left").select(*[quote(c) for c in e_out.columns], WEIGHT)
    log.info("pageRank: %d vertices%s in %.2fs", n, " (personalised)" if sourceId is not None else "",
             time.perf_counter() - start)
    return type(g)(vertices, edges, engine=g._engine)  # g's class: no import of graph.frame (one-way)
