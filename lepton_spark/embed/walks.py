"""Random walks as DataFrame operations (DeepWalk, and node2vec's second-order walks).

Walks never collect the graph. The adjacency is a table ``(id, nbrs array<long>, deg)``; hubs keep at
most ``max_degree_sample`` neighbours, chosen by a seeded hash, so a vertex with millions of edges does
not become one huge array (DeepWalk samples neighbours uniformly, so a uniform subsample of a hub's
neighbours keeps the walk distribution close while bounding memory).

Randomness is a hash of ``(seed, walk id, step, attempt)`` — not ``rand()`` — so the walks are the same
for the same seed whatever the partitioning or the number of executors.

node2vec (p, q): the next vertex ``x`` from ``cur`` (having come from ``prev``) has weight ``1/p`` if
``x == prev``, ``1`` if ``x`` is a neighbour of ``prev``, ``1/q`` otherwise. It is drawn by rejection
sampling (as KnightKing does): propose a uniform neighbour, accept it with probability
``weight / max(1/p, 1, 1/q)``; the neighbour test is a semi-join with the edge table. Walkers still
rejected after ``attempts`` proposals take their last proposal (a bias bounded by the rejection rate,
documented, and zero for p = q = 1, which is DeepWalk).
"""

from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

_SCALE = float(2**53)


def _uniform(*cols: Column) -> Column:
    """Deterministic uniform [0, 1) from a hash of the given columns."""
    return (F.pmod(F.xxhash64(*cols), F.lit(2**53)).cast("double") / F.lit(_SCALE))


def adjacency(edges: DataFrame, max_degree: int, seed: int, undirected: bool = True) -> DataFrame:
    """``(id, nbrs, deg)`` with at most ``max_degree`` neighbours per vertex (seeded hash sample)."""
    e = edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"))
    if undirected:
        e = e.unionByName(e.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    e = e.filter(F.col("src") != F.col("dst")).distinct()
    rank = F.row_number().over(Window.partitionBy("src").orderBy(F.xxhash64(F.col("dst"), F.lit(seed))))
    sampled = e.withColumn("_r", rank).filter(F.col("_r") <= max_degree)
    return sampled.groupBy(F.col("src").alias("id")).agg(F.collect_list("dst").alias("nbrs")).withColumn(
        "deg", F.size("nbrs"))


def random_walks(vertices: DataFrame, edges: DataFrame, *, walks_per_node: int, walk_length: int, p: float = 1.0,
                 q: float = 1.0, seed: int = 42, max_degree: int = 1000, attempts: int = 4,
                 checkpoint_every: int = 4, undirected: bool = True) -> DataFrame:
    """``(walk_id, walk array<long>)``: ``walks_per_node`` walks of ``walk_length`` vertices from every
    vertex (isolated vertices give walks of length 1)."""
    t0 = time.perf_counter()
    adj = adjacency(edges, max_degree, seed, undirected).persist()
    second_order = not (p == 1.0 and q == 1.0)
    edge_set = None
    if second_order:
        edge_set = adj.select(F.col("id").alias("_a"), F.explode("nbrs").alias("_b")).persist()
    wmax = max(1.0 / p, 1.0, 1.0 / q)
    starts = vertices.select(F.col("id").cast("long").alias("start")).crossJoin(
        vertices.sparkSession.range(walks_per_node).select(F.col("id").alias("k")))
    walkers = starts.select(
        (F.col("start") * F.lit(walks_per_node) + F.col("k")).alias("walk_id"),
        F.col("start").alias("cur"), F.lit(None).cast("long").alias("prev"), F.array("start").alias("walk"),
    )
    for step in range(1, walk_length):
        ts = time.perf_counter()
        w = walkers.join(adj, walkers.cur == adj.id, "left").drop("id")
        if not second_order:
            pick = F.floor(_uniform(F.lit(seed), F.col("walk_id"), F.lit(step)) * F.col("deg")).cast("int")
            nxt = F.when(F.col("deg") > 0, F.element_at("nbrs", pick + 1))
            w = w.withColumn("_next", nxt)
        else:
            w = w.withColumn("_next", F.lit(None).cast("long")).withColumn("_done", F.col("deg").isNull())
            for a in range(attempts):
                pick = F.floor(_uniform(F.lit(seed), F.col("walk_id"), F.lit(step), F.lit(a)) * F.col("deg"))
                w = w.withColumn("_cand", F.when(~F.col("_done"), F.element_at("nbrs", pick.cast("int") + 1)))
                w = w.join(edge_set, (F.col("prev") == F.col("_a")) & (F.col("_cand") == F.col("_b")), "left") \
                    .withColumn("_isnbr", F.col("_b").isNotNull()).drop("_a", "_b")
                weight = (F.when(F.col("prev").isNull(), F.lit(wmax))
                          .when(F.col("_cand") == F.col("prev"), F.lit(1.0 / p))
                          .when(F.col("_isnbr"), F.lit(1.0)).otherwise(F.lit(1.0 / q)))
                accept = _uniform(F.lit(seed + 1), F.col("walk_id"), F.lit(step), F.lit(a)) * F.lit(wmax) < weight
                last = a == attempts - 1
                take = ~F.col("_done") & (accept | F.lit(last))
                w = w.withColumn("_next", F.when(take, F.col("_cand")).otherwise(F.col("_next"))) \
                    .withColumn("_done", F.col("_done") | take).drop("_cand", "_isnbr")
            w = w.drop("_done")
        walkers = w.select(
            "walk_id",
            F.coalesce(F.col("_next"), F.col("cur")).alias("cur"),
            F.when(F.col("_next").isNotNull(), F.col("cur")).otherwise(F.col("prev")).alias("prev"),
            F.when(F.col("_next").isNotNull(), F.concat("walk", F.array("_next"))).otherwise(F.col("walk")).alias("walk"),
        )
        if step % checkpoint_every == 0 or step == walk_length - 1:
            walkers = walkers.localCheckpoint(eager=True)
            log.info("walks step %d/%d: %d walkers, %.2fs", step, walk_length - 1, walkers.count(),
                     time.perf_counter() - ts)
    out = walkers.select("walk_id", "walk")
    adj.unpersist()
    if edge_set is not None:
        edge_set.unpersist()
    log.info("random walks (%s): %d per vertex, length %d, %.1fs", "node2vec" if second_order else "deepwalk",
             walks_per_node, walk_length, time.perf_counter() - t0)
    return out
