"""The vertex analytics of a graph in one call: PageRank, connected components, label propagation.

Used by the nightly ``analytics`` stage and by ``export``. Graphs with at most ``local_max_edges``
edges and integral vertex ids are analysed on the driver with scipy (:mod:`lepton_spark.analytics.local`,
the same functions of the graph, tested against the engine), because on small graphs Spark's fixed
per-iteration job overhead is nearly all the time; larger graphs run on the Spark block engine (:mod:`lepton_spark.graph.programs`). The
choice is logged. Every result is a DataFrame ``(id, <value>)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lepton_spark import storage
from lepton_spark.config import GraphConfig
from lepton_spark.graph import resident

log = logging.getLogger(__name__)


def vertex_analytics(vertices: DataFrame, edges: DataFrame, *, reset: float = 0.15, pagerank_iters: int = 20,
                     pagerank_tol: float = 0.0, lpa_iters: int = 5, components: bool = True,
                     local_max_edges: int = 2_000_000, config: GraphConfig | None = None,
                     symmetric: bool = False, operators: Any = None, operator_key: Any = None,
                     num_edges: int | None = None, edge_files: str | None = None) -> dict[str, DataFrame]:
    """``{"pagerank": (id, pagerank double), "components": (id, component long), "communities": (id, label long)}``.

    ``pagerank_tol > 0`` iterates to that L1 tolerance instead of ``pagerank_iters`` iterations;
    ``components=False`` leaves components out. ``config`` (``graph.*``) chooses the block engine's
    plan for graphs that run on Spark. ``symmetric=True`` promises that every edge (u, v) has its
    reverse once (a graph built with ``build.symmetrize``): components and communities then reuse the
    directed edge blocks instead of packing the undirected ones. ``operators``/``operator_key``: an
    :class:`~lepton_spark.graph.propagation.OperatorCache` where a propagation of the same graph left
    its edge blocks under that key; they are reused instead of packed again. ``num_edges``: the edge
    table's row count when known (a validated graph's ``_graph.json``), else counted up to the threshold.
    ``edge_files``: the local Parquet directory ``edges`` was read from (a validated graph's); in local
    mode the block engine packs its edge blocks from those files (:class:`~lepton_spark.graph.blocks.EdgeFiles`).
    """
    from lepton_spark.analytics.components import is_integral_id

    # the count stops at the threshold: deciding must not scan a billion-edge table
    n_edges = num_edges if isinstance(num_edges, int) else edges.limit(local_max_edges + 1).count()
    if n_edges <= local_max_edges and is_integral_id(vertices):
        log.info("analytics: %d edges <= local_max_edges=%d: on the driver (scipy)", n_edges, local_max_edges)
        return _on_driver(vertices, edges, reset, pagerank_iters, pagerank_tol, lpa_iters, components)
    log.info("analytics: %s edges: on the Spark block engine",
             f"more than {local_max_edges}" if n_edges > local_max_edges else n_edges)
    from lepton_spark.analytics.pagerank import (
        MAX_ITER_FOR_TOL,
        PAGERANK,
        normalise_rank_array,
        normalise_ranks,
    )
    from lepton_spark.graph.programs import (
        BlockEngine,
        components_program,
        indexed_graph,
        label_propagation_program,
        pagerank_program,
    )

    ig = indexed_graph(vertices.select("id"), edges.select("src", "dst"))
    out: dict[str, DataFrame] = {}
    # one engine: the undirected edge blocks are packed once for components and communities
    with BlockEngine(ig, config=config, symmetric=symmetric, operators=operators,
                     operator_key=operator_key, edge_files=edge_files) as engine:
        tol = pagerank_tol if pagerank_tol > 0 else None
        prog, iters = pagerank_program(reset, None, tol), MAX_ITER_FOR_TOL if tol else pagerank_iters
        rest = [("components", "component", [], components_program(), 2**31 - 2)] if components else []
        rest.append(("communities", "label", ["label"], label_propagation_program(), lpa_iters))
        # the programs share their rounds over the same edge blocks (one job a round for all of them)
        if engine.plan == "broadcast":  # the ranks are on the driver: rescale them there
            (ids, state), *states = engine.run_many_local([(prog, iters), *[(p, m) for _, _, _, p, m in rest]])
            # renamed with storage.rename_columns: the tables stay rows the driver holds (integral ids need
            # no mapping back), which the nightly writes with pyarrow (Spark's writer: 0.84 s of a 1.8 s
            # analytics stage at 100k vertices)
            ranks = storage.rename_columns(engine.to_df(ids, normalise_rank_array(state)), {"value": PAGERANK})
            out["pagerank"] = ig.to_original(ranks, [PAGERANK], [])
            values = [engine.to_df(i, s) for i, s in states]
        else:
            # renamed keeping what the partitioned results are registered as (rows unpacked from packed
            # states, which a writer on this machine unpacks in its own tasks)
            ranks, *values = engine.run_many([(prog, iters), *[(p, m) for _, _, _, p, m in rest]])
            out["pagerank"] = normalise_ranks(ig.to_original(resident.rename_columns(ranks, {"value": PAGERANK}),
                                                             [PAGERANK], []))
        for (table, col, relabel, _, _), df in zip(rest, values):
            out[table] = ig.to_original(resident.rename_columns(df, {"value": col}), [col], relabel)
    return out


def _on_driver(vertices: DataFrame, edges: DataFrame, reset: float, pagerank_iters: int, pagerank_tol: float,
               lpa_iters: int, components: bool) -> dict[str, DataFrame]:
    import pyarrow as pa

    from lepton_spark.analytics import local

    spark = vertices.sparkSession
    ids = np.sort(storage.collect_arrow(vertices.select(F.col("id").cast("long"))).column("id").to_numpy())
    et = storage.collect_arrow(edges.select(F.col("src").cast("long"), F.col("dst").cast("long")))
    src, dst = et.column("src").to_numpy(), et.column("dst").to_numpy()
    tol = pagerank_tol if pagerank_tol > 0 else None
    results = {"pagerank": ("pagerank", pa.float64(),
                            local.pagerank(ids, src, dst, reset, None if tol else pagerank_iters, tol))}
    if components:
        results["components"] = ("component", pa.int64(), local.components(ids, src, dst))
    results["communities"] = ("label", pa.int64(), local.label_propagation(ids, src, dst, lpa_iters))
    return {name: storage.create_df(spark, pa.table({"id": pa.array(ids, pa.int64()), col: pa.array(vals, dtype)}))
            for name, (col, dtype, vals) in results.items()}
