"""Community detection by label propagation on the builtin Pregel engine (GraphFrames' ``labelPropagation``).

``algorithm="graphx"`` (default) follows GraphX's ``LabelPropagation`` exactly:

* the graph is treated as undirected: every edge sends each endpoint's label to the other one
  (implemented by symmetrising the edges, so a message needs only the sender's label and no
  destination join); multi-edges count with multiplicity and a self-loop sends the vertex's own
  label to itself twice;
* a vertex's own label is not counted (only its neighbours' labels are);
* the new label is the most frequent received label, **ties going to the smallest label**
  (GraphX's ``maxBy((count, -label))``); a vertex that receives nothing (isolated) keeps its label;
* updates are synchronous and exactly ``maxIter`` steps are run. We stop earlier only at a fixed
  point (no label changed), after which every further step would be identical, so the result is
  the same.

Initial labels are the vertex ids: longs for integral ids (as GraphX); for other id types the labels
are the original ids themselves (GraphFrames returns an opaque internal long there), ties going to
the smallest id in that type's order. Output: all vertex columns + ``label``.

``algorithm="graphframes"`` follows GraphFrames' own Pregel variant: directed (labels flow along
edges only), a vertex with no incoming label gets a null label, ties go to the smallest label (the
newer GraphFrames code), it stops when no label changes, and the output has only ``id``,
``_pregel_is_active`` and ``label``.

``use_local_checkpoints``, ``checkpoint_interval`` and ``storage_level`` are honoured.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from lepton_spark.analytics.components import is_integral_id
from lepton_spark.config import GraphConfig
from lepton_spark.graph.messages import quote
from lepton_spark.graph.pregel import Pregel
from lepton_spark.graph.programs import indexed_graph, label_propagation_program, run_program

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

log = logging.getLogger(__name__)

LABEL = "label"
ALGORITHMS = ("graphx", "graphframes")


def mode_min(c: Column, native: bool | None = None) -> Column:
    """Aggregate: the most frequent value of ``c``, the smallest one on ties.

    Spark >= 4 has ``mode(c, deterministic=True)`` (a hash-map aggregate with partial aggregation).
    On older Spark (``native=False`` forces it) the values are collected, sorted and scanned once
    with ``aggregate``; the strict ``>`` keeps the first (smallest) of equally frequent values.
    """
    if native is not False:
        try:
            return F.mode(c, True)
        except TypeError:  # pyspark 3.5: no `deterministic` argument
            if native:
                raise
    values = F.array_sort(F.collect_list(c))
    first = F.element_at(values, 1)
    init = F.struct(first.alias("cur"), F.lit(0).alias("cnt"), first.alias("best"), F.lit(0).alias("bestcnt"))

    def step(acc: Column, x: Column) -> Column:
        cnt = F.when(x == acc["cur"], acc["cnt"] + 1).otherwise(F.lit(1))
        return F.struct(
            x.alias("cur"),
            cnt.alias("cnt"),
            F.when(cnt > acc["bestcnt"], x).otherwise(acc["best"]).alias("best"),
            F.greatest(cnt, acc["bestcnt"]).alias("bestcnt"),
        )

    return F.aggregate(values, init, step, lambda acc: acc["best"])


def label_propagation(
    g: GraphFrame,
    maxIter: int,
    algorithm: str = "graphx",
    use_local_checkpoints: bool = False,
    checkpoint_interval: int = 2,
    storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER,
    config: GraphConfig | None = None,
    plan: str | None = None,
    num_blocks: int | None = None,
) -> DataFrame:
    """Label propagation communities of ``g``: vertices + ``label`` (see the module docstring).

    The result is persisted at ``storage_level`` and materialised (unpersist it when done).
    """
    algo = algorithm.lower()
    if algo not in ALGORITHMS:
        raise ValueError(f"Supported algorithms are {', '.join(ALGORITHMS)}, but got {algorithm}.")
    if maxIter < 1:
        raise ValueError(f"maxIter must be >= 1, got {maxIter}")
    start = time.perf_counter()
    v, e = g.vertices, g.edges
    if algo == "graphx":
        ig = indexed_graph(v.select("id"), e.select("src", "dst"))
        labels = run_program(ig, label_propagation_program(), maxIter, config=config, plan=plan,
                             num_blocks=num_blocks).withColumnRenamed("value", LABEL)
        labels = ig.to_original(labels, [LABEL], [LABEL])
        v_out = v.drop(LABEL) if LABEL in v.columns else v
        out = (v_out.join(labels, "id", "left").select(*[quote(c) for c in v_out.columns], LABEL)
               .persist(storage_level))
        n = out.count()
        log.info("labelPropagation: %d vertices, %d steps max, in %.2fs", n, maxIter, time.perf_counter() - start)
        return out
    init = F.col("id").cast("long") if is_integral_id(v) else F.col("id")
    lab = F.col(LABEL)
    pairs = e.select("src", "dst")
    if algo == "graphx":
        edges = pairs.unionByName(pairs.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
        update = F.coalesce(Pregel.msg(), lab)
        changed = F.coalesce(Pregel.msg() != lab, F.lit(False))
    else:
        edges = pairs
        update = Pregel.msg()
        changed = ~Pregel.msg().eqNullSafe(lab)
    result = (
        type(g)(v.select("id"), edges)  # g's class: no import of graph.frame (one-way)
        .pregel.setMaxIter(maxIter)
        .setCheckpointInterval(checkpoint_interval)
        .setUseLocalCheckpoints(use_local_checkpoints)
        .setIntermediateStorageLevel(storage_level)
        .withVertexColumn(LABEL, init, update)
        .setUpdateActiveVertexExpression(changed)
        .sendMsgToDst(Pregel.src(LABEL))
        .aggMsgs(mode_min(Pregel.msg()))
        .setStopIfAllNonActiveVertices(True)
        .run()
    )
    if algo == "graphframes":
        log.info("labelPropagation (graphframes variant): done in %.2fs", time.perf_counter() - start)
        return result
    try:
        v_out = v.drop(LABEL) if LABEL in v.columns else v
        out = (
            v_out.join(result.select("id", LABEL), "id", "left")
            .select(*[quote(c) for c in v_out.columns], LABEL)
            .persist(storage_level)
        )
        n = out.count()
    finally:
        result.unpersist()
    log.info("labelPropagation: %d vertices, %d steps max, in %.2fs", n, maxIter, time.perf_counter() - start)
    return out
