"""Hop distances to landmark vertices on the builtin Pregel engine (GraphFrames' ``shortestPaths``).

Semantics (GraphX ``ShortestPaths``): ``distances`` maps each landmark to the number of hops **from
the vertex to the landmark along the edge direction** (``src -> dst``); a landmark has itself at 0;
unreachable landmarks are absent; a vertex that reaches none has an empty map. With
``is_directed=False`` edge direction is ignored. Keys are longs for integral ids (GraphX vertex ids)
and the original ids otherwise; values are ints.

Plan: distances are kept as an ``array<int>`` with one slot per landmark (null = unreachable), so the
per-vertex aggregation is an element-wise ``min`` (plain hash aggregation, no map merging). Edges are
reversed once so a message needs only the sender's distances (no destination join), and only vertices
whose distances improved in the previous iteration send (BFS frontier). The run stops when nothing
improves, so iterations are bounded by the largest finite distance plus one. The map is built at the
end. ``algorithm`` (``graphx`` / ``graphframes``) is validated and both run this plan;
``use_local_checkpoints``, ``checkpoint_interval`` and ``storage_level`` are honoured.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from lepton_spark.analytics.components import is_integral_id
from lepton_spark.config import GraphConfig
from lepton_spark.graph.messages import quote
from lepton_spark.graph.programs import UNREACHED, indexed_graph, run_program, shortest_paths_program

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

log = logging.getLogger(__name__)

DISTANCES = "distances"
ALGORITHMS = ("graphx", "graphframes")
_DIST = "_dist"


def shortest_paths(
    g: GraphFrame,
    landmarks: list[Any],
    algorithm: str = "graphx",
    use_local_checkpoints: bool = False,
    checkpoint_interval: int = 2,
    storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER,
    is_directed: bool = True,
    config: GraphConfig | None = None,
    plan: str | None = None,
    num_blocks: int | None = None,
) -> DataFrame:
    """Vertices of ``g`` + ``distances`` (map landmark -> hops), see the module docstring.

    Duplicate landmarks are kept once. The result is persisted at ``storage_level`` and
    materialised (unpersist it when done).
    """
    if algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"Supported algorithms are {', '.join(ALGORITHMS)}, but got {algorithm}.")
    start = time.perf_counter()
    v, e = g.vertices, g.edges
    marks = list(dict.fromkeys(landmarks))
    integral = is_integral_id(v)
    id_type = v.schema["id"].dataType
    key_type = "bigint" if integral else id_type.simpleString()
    v_out = v.drop(DISTANCES) if DISTANCES in v.columns else v
    if not marks:
        empty = F.create_map().cast(f"map<{key_type},int>")
        out = v_out.select(*[quote(c) for c in v_out.columns], empty.alias(DISTANCES)).persist(storage_level)
        out.count()
        return out
    ig = indexed_graph(v.select("id"), e.select("src", "dst"))
    if ig.mapping is None:
        pos = [int(m) for m in marks]
    else:  # landmarks that are not vertices never match a position (-1)
        found = {r["id"]: int(r["_pos"]) for r in ig.mapping.filter(F.col("id").isin(marks)).collect()}
        pos = [found.get(m, -1) for m in marks]
    result = run_program(ig, shortest_paths_program(np.asarray(pos, dtype=np.int64), is_directed), 2**31 - 2,
                         config=config, plan=plan, num_blocks=num_blocks)
    dist = F.transform(F.col("value"), lambda x: F.when(x < F.lit(UNREACHED), x))
    result = ig.to_original(result.select("id", dist.alias(_DIST)), [_DIST], [])
    keys = F.array(*[F.lit(m).cast(key_type) for m in marks])
    dmap = F.map_filter(F.map_from_arrays(keys, F.col(_DIST)), lambda k, d: d.isNotNull())
    out = (
        v_out.join(result.select("id", dmap.alias(DISTANCES)), "id", "left")
        .select(*[quote(c) for c in v_out.columns], DISTANCES)
        .persist(storage_level)
    )
    n = out.count()
    log.info("shortestPaths: %d vertices, %d landmark(s), %s, in %.2fs", n, len(marks),
             "directed" if is_directed else "undirected", time.perf_counter() - start)
    return out
