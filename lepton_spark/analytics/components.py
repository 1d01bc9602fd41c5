"""Weakly connected components on the builtin Pregel engine (GraphFrames' ``connectedComponents``).

Algorithm: min-label propagation over the undirected simple graph. Self-loops are dropped, every edge
is reoriented to ``(min, max)`` and deduplicated (GraphFrames' two_phase ``prepare``), then
symmetrised, so each vertex needs only its *own* label to send messages (no destination join). Every
vertex starts with its id as label; an iteration sends the label of every vertex whose label changed
in the previous iteration (the frontier: ``setSkipMessagesFromNonActiveVertices``) to its
neighbours, and a vertex takes the minimum of its label and the labels it receives. The run stops
when no label changes (vote to halt) or no message is sent, so the number of iterations is bounded
by the largest distance from a component's smallest vertex plus one, and the work per iteration
shrinks with the frontier. Nothing is collected to the driver; lineage is cut every
``checkpointInterval`` iterations.

Output (GraphFrames): all vertex columns plus ``component``. For integral ids the component is the
smallest vertex id of the component as a long (an isolated vertex gets its own id). For other id
types it is an opaque long, increasing with the smallest original id of the component, unless
``useLabelsAsComponents=True``, which returns that smallest original id itself. Unlike a GraphFrames
quirk, ids that appear in edges but not in vertices never take part (and so never become labels).

Arguments: ``algorithm`` is validated like GraphFrames (``two_phase``, ``randomized_contraction``,
``graphframes`` - the deprecated alias of two_phase - and ``graphx``, case-insensitive) but every
choice runs the algorithm above. ``max_iter`` bounds the iterations for every choice (GraphFrames
uses it for graphx only; the default is effectively unlimited). ``broadcastThreshold`` is accepted
and ignored: Spark's own broadcast joins of the (small) label state and AQE skew handling play
that role. ``checkpointInterval``, ``use_local_checkpoints`` and ``storage_level`` are honoured.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.storagelevel import StorageLevel

from lepton_spark.config import GraphConfig
from lepton_spark.graph.messages import quote
from lepton_spark.graph.programs import components_program, indexed_graph, run_program

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

log = logging.getLogger(__name__)

COMPONENT = "component"
ALGORITHMS = ("two_phase", "randomized_contraction", "graphframes", "graphx")
INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def is_integral_id(df: DataFrame) -> bool:
    """True when the ``id`` column has an integral type (labels are then longs, as in GraphX)."""
    return isinstance(df.schema["id"].dataType, INTEGRAL)


def connected_components(
    g: GraphFrame,
    algorithm: str = "graphframes",
    checkpointInterval: int = 2,
    broadcastThreshold: int = 1000000,
    useLabelsAsComponents: bool = False,
    use_local_checkpoints: bool = False,
    max_iter: int = 2**31 - 2,
    storage_level: StorageLevel = StorageLevel.MEMORY_AND_DISK_DESER,
    config: GraphConfig | None = None,
    plan: str | None = None,
    num_blocks: int | None = None,
) -> DataFrame:
    """Weakly connected components of ``g``: vertices + ``component`` (see the module docstring).

    The result is persisted at ``storage_level`` and materialised (unpersist it when done).
    """
    algo = algorithm.lower()
    if algo not in ALGORITHMS:
        raise ValueError(f"Supported algorithms are {', '.join(ALGORITHMS)}, but got {algorithm}.")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    log.debug("connectedComponents: algorithm %r -> builtin min-label propagation (broadcastThreshold %d ignored)",
              algorithm, broadcastThreshold)
    start = time.perf_counter()
    v, e = g.vertices, g.edges
    ig = indexed_graph(v.select("id"), e.select("src", "dst"))
    labels = run_program(ig, components_program(), max_iter, config=config, plan=plan,
                         num_blocks=num_blocks).withColumnRenamed("value", COMPONENT)
    # renumbered ids: the label is the position of the component's smallest id in sort order, an
    # opaque long increasing with that id; useLabelsAsComponents maps it back to the id itself
    labels = ig.to_original(labels, [COMPONENT], [COMPONENT] if useLabelsAsComponents else [])
    v_out = v.drop(COMPONENT) if COMPONENT in v.columns else v
    out = (
        v_out.join(labels, "id", "left")
        .select(*[quote(c) for c in v_out.columns], COMPONENT)
        .persist(storage_level)
    )
    n = out.count()
    log.info("connectedComponents: %d vertices in %.2fs", n, time.perf_counter() - start)
    return out
