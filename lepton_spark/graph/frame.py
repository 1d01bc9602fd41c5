"""``GraphFrame`` on plain DataFrames: GraphFrames' (graphframes-py 0.12) names and semantics.

Why: GraphFrames' JVM package cannot be installed on these machines (docs/architecture.md §2), yet project code and
users write GraphFrames code. This class offers the same API (constructor checks and messages,
``vertices``/``edges``/``triplets``, degrees, subgraphs, ``aggregateMessages`` with ``AM``,
``pregel``, and the algorithms) so such code runs unchanged, and delegates the algorithms to the real
GraphFrames when its jar is on the classpath (:mod:`lepton_spark.graph.engine`).

Deliberate differences from GraphFrames (everything else follows its sources):

* ``aggregateMessages`` never builds full triplets: only the columns the messages read flow
  through the joins, and the destination side is joined only when a message reads a ``dst`` field
  other than ``dst.id`` (see :mod:`lepton_spark.graph.messages`). On a graph that passes
  :meth:`GraphFrame.validate` the result is identical. On an inconsistent graph (edges to ids that
  are not vertices), messages *addressed* to missing ids are dropped as in GraphFrames, but an edge
  whose ``dst`` is missing still delivers its messages to an existing ``src`` when no message reads
  ``dst`` (GraphFrames drops the whole edge).
* GraphFrames (classic) repeats the first aggregate column when several ``Column`` aggregates are
  given (a bug); we return each aggregate once.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from lepton_spark.graph import engine as _engine
from lepton_spark.graph.messages import (
    DST,
    EDGE,
    ID,
    SRC,
    explode_messages,
    expr_text,
    prefixed,
    quote,
    struct_of,
    struct_use,
    to_column,
)

if TYPE_CHECKING:
    from lepton_spark.graph.pregel import Pregel

log = logging.getLogger(__name__)

WEIGHT = "weight"
MSG = "MSG"
DEFAULT_STORAGE = StorageLevel.MEMORY_AND_DISK_DESER


class _ClassProperty:
    """Read-only class property (``AM.src`` is a property of the class, as in GraphFrames)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.__doc__ = f.__doc__

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.f(owner)


class AM:
    """Column references for :meth:`GraphFrame.aggregateMessages` (GraphFrames' ``AggregateMessages``).

    ``AM.src["x"]`` / ``AM.dst["x"]`` read a source / destination vertex column, ``AM.edge["w"]`` an
    edge column, and ``AM.msg`` is the message column in aggregate expressions (``F.sum(AM.msg)``).
    """

    @_ClassProperty
    def src(cls) -> Column:
        """The source vertex struct (``col("src")``)."""
        return F.col(SRC)

    @_ClassProperty
    def dst(cls) -> Column:
        """The destination vertex struct (``col("dst")``)."""
        return F.col(DST)

    @_ClassProperty
    def edge(cls) -> Column:
        """The edge struct (``col("edge")``)."""
        return F.col(EDGE)

    @_ClassProperty
    def msg(cls) -> Column:
        """The message column (``col("MSG")``), for aggregate expressions."""
        return F.col(MSG)


AggregateMessages = AM


def _as_list(value: Any, what: str) -> list[Any]:
    """GraphFrames 0.12 takes lists; a single value still works but warns (as graphframes-py does)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    warnings.warn(f"Passing single column to {what} is deprecated, use list", DeprecationWarning, stacklevel=3)
    return [value]


def _messages(items: list[Column | str]) -> Column | None:
    """One message column per triplet: the single expression, or a struct of several (GraphFrames)."""
    if not items:
        return None
    if len(items) > 1 and not (all(isinstance(x, Column) for x in items) or all(isinstance(x, str) for x in items)):
        raise TypeError("Multiple messages should all be `Column` or `str`, not a mix of them.")
    cols = [to_column(x) for x in items]
    return cols[0] if len(cols) == 1 else F.struct(*cols)


def _condition(condition: str | Column) -> Column:
    if isinstance(condition, str):
        return F.expr(condition)
    if isinstance(condition, Column):
        return condition
    raise TypeError("condition should be string or Column")


class GraphFrame:
    """A graph as two DataFrames: ``vertices`` (column ``id``) and ``edges`` (columns ``src``, ``dst``).

    Like GraphFrames, the constructor checks only that those columns exist (ValueError naming the
    missing column); :meth:`validate` checks uniqueness and consistency. ``engine`` selects where the
    algorithms run (``auto``/``builtin``/``graphframes``, see :func:`~lepton_spark.graph.engine.resolve_engine`);
    the core operations (degrees, triplets, aggregateMessages, pregel, subgraphs) are always builtin.

    Parameters
    ----------
    v : DataFrame
        The vertices: an ``id`` column (any comparable type) plus attribute columns.
    e : DataFrame
        The edges: ``src`` and ``dst`` (vertex ids) plus attribute columns; multi-edges and self-loops
        are allowed.
    engine : {"auto", "builtin", "graphframes"}, optional
        Where :meth:`pageRank`, :meth:`connectedComponents`, :meth:`labelPropagation` and
        :meth:`shortestPaths` run; default ``$LEPTON_GRAPH_ENGINE``, else ``auto`` (the real
        GraphFrames when its JVM class loads, else builtin). Subgraphs and results keep it.

    Raises
    ------
    ValueError
        When ``v`` has no ``id`` column or ``e`` has no ``src`` or ``dst`` column.

    Examples
    --------
    A triangle and an isolated vertex (absent from the degrees, its own component):

    >>> from lepton_spark.graph import GraphFrame
    >>> v = spark.createDataFrame([(1, "a"), (2, "b"), (3, "c"), (4, "d")], "id long, name string")
    >>> e = spark.createDataFrame([(1, 2), (2, 3), (3, 1)], "src long, dst long")
    >>> g = GraphFrame(v, e)
    >>> sorted((r["id"], r["degree"]) for r in g.degrees.collect())
    [(1, 2), (2, 2), (3, 2)]
    >>> sorted((r["id"], r["component"]) for r in g.connectedComponents().collect())
    [(1, 1), (2, 1), (3, 1), (4, 4)]
    >>> ranks = g.pageRank(resetProbability=0.15, maxIter=10).vertices
    >>> sorted((r["id"], round(r["pagerank"], 4)) for r in ranks.collect())
    [(1, 1.2698), (2, 1.2698), (3, 1.2698), (4, 0.1905)]
    """

    ID: str = ID
    SRC: str = SRC
    DST: str = DST
    EDGE: str = EDGE
    WEIGHT: str = WEIGHT

    def __init__(self, v: DataFrame, e: DataFrame, *, engine: str | None = None) -> None:
        if ID not in v.columns:
            raise ValueError(
                f"Vertex ID column {ID} missing from vertex DataFrame, which has columns: {','.join(v.columns)}"
            )
        if SRC not in e.columns:
            raise ValueError(
                f"Source vertex ID column {SRC} missing from edge DataFrame, which has columns: {','.join(e.columns)}"
            )
        if DST not in e.columns:
            raise ValueError(
                f"Destination vertex ID column {DST} missing from edge DataFrame, which has columns: "
                f"{','.join(e.columns)}"
            )
        self._vertices = v
        self._edges = e
        self._engine = engine

    # ------------------------------------------------------------------------------------ basics

    @property
    def vertices(self) -> DataFrame:
        """The vertex DataFrame (column ``id`` plus attributes)."""
        return self._vertices

    @property
    def edges(self) -> DataFrame:
        """The edge DataFrame (columns ``src``, ``dst`` plus attributes)."""
        return self._edges

    @property
    def nodes(self) -> DataFrame:
        """Alias of :attr:`vertices` (GraphFrames 0.12)."""
        return self._vertices

    def _derive(self, v: DataFrame, e: DataFrame) -> GraphFrame:
        return GraphFrame(v, e, engine=self._engine)

    def __repr__(self) -> str:
        v_cols = [ID] + [c for c in self._vertices.columns if c != ID]
        e_cols = [SRC, DST] + [c for c in self._edges.columns if c not in {SRC, DST}]
        v = self._vertices.select(*[quote(c) for c in v_cols])
        e = self._edges.select(*[quote(c) for c in e_cols])
        return f"GraphFrame(v:{v!r}, e:{e!r})"

    def cache(self) -> GraphFrame:
        """Cache vertices and edges (default storage level); returns a new GraphFrame over them."""
        return self._derive(self._vertices.cache(), self._edges.cache())

    def persist(self, storageLevel: StorageLevel = StorageLevel.MEMORY_ONLY) -> GraphFrame:
        """Persist vertices and edges at ``storageLevel``; returns a new GraphFrame over them."""
        return self._derive(self._vertices.persist(storageLevel), self._edges.persist(storageLevel))

    def unpersist(self, blocking: bool = False) -> GraphFrame:
        """Unpersist vertices and edges; returns a new GraphFrame over them."""
        return self._derive(self._vertices.unpersist(blocking), self._edges.unpersist(blocking))

    # ----------------------------------------------------------------------------------- degrees

    @property
    def outDegrees(self) -> DataFrame:
        """``id, outDegree`` (long): out-edges per vertex, multi-edges counted; 0-degree vertices absent."""
        return self._edges.groupBy(F.col(SRC).alias(ID)).agg(F.count(F.lit(1)).alias("outDegree"))

    @property
    def inDegrees(self) -> DataFrame:
        """``id, inDegree`` (long): in-edges per vertex; vertices without in-edges are absent."""
        return self._edges.groupBy(F.col(DST).alias(ID)).agg(F.count(F.lit(1)).alias("inDegree"))

    @property
    def degrees(self) -> DataFrame:
        """``id, degree`` (long): in + out edges; a self-loop counts 2; isolated vertices are absent."""
        return (
            self._edges.select(F.explode(F.array(F.col(SRC), F.col(DST))).alias(ID))
            .groupBy(ID)
            .agg(F.count(F.lit(1)).alias("degree"))
        )

    def degree_stats(self) -> dict[str, Any]:
        """min / median / mean / p99 / max degree over *all* vertices and the isolated count.

        Delegates to :func:`lepton_spark.analytics.degrees.degree_stats` (isolated vertices count 0).
        """
        from lepton_spark.analytics.degrees import degree_stats

        return degree_stats(self._vertices, self._edges)

    # ---------------------------------------------------------------------------------- triplets

    @property
    def triplets(self) -> DataFrame:
        """``src, edge, dst``: structs of all vertex / edge columns, one row per edge (inner joins).

        Edges whose endpoint is not a vertex are dropped; multi-edges give one row each. Prefer
        :meth:`aggregateMessages` or :attr:`pregel` for computation: they never build full triplets.
        """
        v_cols = self._vertices.columns
        e_cols = self._edges.columns
        e, ef = prefixed(self._edges, "__e")
        s, sf = prefixed(self._vertices, "__s")
        d, df = prefixed(self._vertices, "__d")
        i_src, i_dst, i_id = e_cols.index(SRC), e_cols.index(DST), v_cols.index(ID)
        t = e.join(s, F.col(ef[i_src]) == F.col(sf[i_id])).join(d, F.col(ef[i_dst]) == F.col(df[i_id]))
        return t.select(
            struct_of(v_cols, sf).alias(SRC), struct_of(e_cols, ef).alias(EDGE), struct_of(v_cols, df).alias(DST)
        )

    # -------------------------------------------------------------------------------- subgraphs

    def filterVertices(self, condition: str | Column) -> GraphFrame:
        """Keep the vertices matching ``condition`` and the edges whose both endpoints are kept."""
        vv = self._vertices.filter(_condition(condition))
        ids = vv.select(F.col(ID).alias("__vid"))
        ee = self._edges.join(ids, F.col(SRC) == F.col("__vid"), "left_semi").join(
            ids, F.col(DST) == F.col("__vid"), "left_semi"
        )
        return self._derive(vv, ee)

    def filterEdges(self, condition: str | Column) -> GraphFrame:
        """Keep the edges matching ``condition``; all vertices are kept."""
        return self._derive(self._vertices, self._edges.filter(_condition(condition)))

    def dropIsolatedVertices(self) -> GraphFrame:
        """Drop vertices with no incident edge (edges unchanged)."""
        ends = self._edges.select(F.explode(F.array(F.col(SRC), F.col(DST))).alias("__vid"))
        vv = self._vertices.join(ends, F.col(ID) == F.col("__vid"), "left_semi")
        return self._derive(vv, self._edges)

    def as_undirected(self) -> GraphFrame:
        """Every edge plus its reverse (no dedup: exactly 2x the edges, a self-loop twice); attributes kept."""
        attrs = [c for c in self._edges.columns if c not in (SRC, DST)]
        fwd = self._edges.select(quote(SRC), quote(DST), *[quote(c) for c in attrs])
        rev = self._edges.select(F.col(DST).alias(SRC), F.col(SRC).alias(DST), *[quote(c) for c in attrs])
        return self._derive(self._vertices, fwd.unionByName(rev))

    def as_reversed(self) -> GraphFrame:
        """Every edge reversed (``src`` and ``dst`` swapped), attributes kept."""
        attrs = [c for c in self._edges.columns if c not in (SRC, DST)]
        rev = self._edges.select(F.col(DST).alias(SRC), F.col(SRC).alias(DST), *[quote(c) for c in attrs])
        return self._derive(self._vertices, rev)

    # -------------------------------------------------------------------------------- validation

    def validate(
        self, check_vertices: bool = True, intermediate_storage_level: StorageLevel = DEFAULT_STORAGE
    ) -> None:
        """Raise ValueError for duplicate vertex ids or (``check_vertices``) edges to missing vertices.

        Same checks and messages as graphframes-py 0.12; isolated vertices are allowed.
        """
        row = self._vertices.agg(F.count(F.lit(1)).alias("n"), F.count_distinct(F.col(ID)).alias("d")).first()
        n, distinct = (int(row["n"]), int(row["d"])) if row is not None else (0, 0)
        if n != distinct:
            raise ValueError(f"Graph contains ({n - distinct}) duplicate vertices.")
        if not check_vertices:
            return
        ends = (
            self._edges.select(F.col(SRC).alias(ID)).union(self._edges.select(F.col(DST).alias(ID))).distinct()
        ).persist(intermediate_storage_level)
        try:
            n_ends = ends.count()
            if n_ends > distinct:
                raise ValueError(
                    f"Graph is inconsistent: edges has {n_ends} vertices, but vertices has {distinct} vertices."
                )
            missing = ends.join(self._vertices.select(ID), ID, "left_anti").count()
            if missing:
                raise ValueError(
                    "Vertices DataFrame does not contain all edges src/dst. "
                    f"Found {missing} edges src/dst that are not in the vertices DataFrame."
                )
        finally:
            ends.unpersist()

    # ---------------------------------------------------------------------------- messages

    def aggregateMessages(
        self,
        aggCol: list[Column | str] | Column | str,
        sendToSrc: list[Column | str] | Column | str | None = None,
        sendToDst: list[Column | str] | Column | str | None = None,
        intermediate_storage_level: StorageLevel = DEFAULT_STORAGE,
    ) -> DataFrame:
        """Send messages along edges and aggregate them per receiving vertex.

        Messages reference ``AM.src[...]``, ``AM.dst[...]``, ``AM.edge[...]`` (or SQL text such as
        ``"src.age"``); several messages to one side are packed into one struct ``MSG`` per edge.
        Aggregates reference ``AM.msg`` (``"sum(MSG) AS s"`` as text). Returns ``id`` plus one column
        per aggregate, named by its alias; vertices that receive nothing are absent; null messages
        reach the aggregate (sum/min ignore them), as in GraphFrames. The result is persisted at
        ``intermediate_storage_level`` and materialised, so the caller should ``unpersist`` it.
        Lists are the 0.12 API; a single value still works with a DeprecationWarning.
        """
        aggs = _as_list(aggCol, "aggCol")
        to_src = _as_list(sendToSrc, "sendToSrc")
        to_dst = _as_list(sendToDst, "sendToDst")
        if not aggs:
            raise TypeError("At least one aggregation column should be provided!")
        if not to_src and not to_dst:
            raise ValueError("Either `sendToSrc`, `sendToDst`, or both have to be provided")
        msg_src, msg_dst = _messages(to_src), _messages(to_dst)
        agg_cols = [to_column(a) for a in aggs]
        texts = [expr_text(x) for x in to_src + to_dst]

        start = time.perf_counter()
        v_cols, e_cols = self._vertices.columns, self._edges.columns
        dst_use = struct_use(texts, DST, v_cols)
        join_dst = not dst_use.needs_only({ID})
        e, ef = prefixed(self._edges, "__e")
        s, sf = prefixed(self._vertices, "__s")
        e_src, e_dst = ef[e_cols.index(SRC)], ef[e_cols.index(DST)]
        # the src side is always joined (GraphFrames' triplets are inner joins); Catalyst keeps only
        # the src columns the messages read
        t = e.join(s, F.col(e_src) == F.col(sf[v_cols.index(ID)]))
        cols = [F.col(e_src).alias("__to_src"), F.col(e_dst).alias("__to_dst"), struct_of(v_cols, sf).alias(SRC),
                struct_of(e_cols, ef).alias(EDGE)]
        if join_dst:
            d, dfl = prefixed(self._vertices, "__d")
            t = t.join(d, F.col(e_dst) == F.col(dfl[v_cols.index(ID)]))
            cols.append(struct_of(v_cols, dfl).alias(DST))
        else:
            cols.append(F.struct(F.col(e_dst).alias(ID)).alias(DST))
        t = t.select(*cols)
        targets: list[tuple[str, str]] = []
        msg_cols = []
        if msg_src is not None:
            msg_cols.append(msg_src.alias("__m_src"))
            targets.append(("__to_src", "__m_src"))
        if msg_dst is not None:
            msg_cols.append(msg_dst.alias("__m_dst"))
            targets.append(("__to_dst", "__m_dst"))
        # messages are evaluated in their own projection so Catalyst collapses struct(...).field
        t = t.select("__to_src", "__to_dst", *msg_cols)
        msgs = explode_messages(t, targets, ID, MSG)
        if msg_dst is not None and not join_dst:
            # receivers must be vertices (GraphFrames joins messages with the vertices)
            msgs = msgs.join(self._vertices.select(F.col(ID).alias("__vid")), F.col(ID) == F.col("__vid"), "left_semi")
        result = msgs.groupBy(ID).agg(*agg_cols).persist(intermediate_storage_level)
        n = result.count()
        log.info(
            "aggregateMessages: %d vertices received messages (dst side %s) in %.2fs",
            n, "joined" if join_dst else "not joined", time.perf_counter() - start,
        )
        return result

    @property
    def pregel(self) -> Pregel:
        """A new :class:`~lepton_spark.graph.pregel.Pregel` builder over this graph."""
        from lepton_spark.graph.pregel import Pregel

        return Pregel(self)

    # ------------------------------------------------------------------------------ algorithms

    def _engine_name(self) -> str:
        return _engine.resolve_engine(self._vertices.sparkSession, self._engine)

    def pageRank(
        self,
        resetProbability: float = 0.15,
        sourceId: Any | None = None,
        maxIter: int | None = None,
        tol: float | None = None,
        *,
        checkpointInterval: int = 2,
        use_local_checkpoints: bool = False,
        storage_level: StorageLevel = DEFAULT_STORAGE,
    ) -> GraphFrame:
        """PageRank: vertices + ``pagerank`` (sum N; personalised: sum 1), edges + ``weight`` (1/outDegree).

        Exactly one of ``maxIter`` / ``tol``. See :func:`lepton_spark.analytics.pagerank.page_rank`
        for the semantics (equal to networkx at convergence, dangling mass included). The keyword-only
        arguments are lepton extensions for the builtin engine.
        """
        if self._engine_name() == _engine.GRAPHFRAMES:
            res = _engine.to_graphframes(self).pageRank(
                resetProbability=resetProbability, sourceId=sourceId, maxIter=maxIter, tol=tol
            )
            return self._derive(res.vertices, res.edges)
        from lepton_spark.analytics.pagerank import page_rank

        return page_rank(
            self, resetProbability=resetProbability, sourceId=sourceId, maxIter=maxIter, tol=tol,
            checkpointInterval=checkpointInterval, use_local_checkpoints=use_local_checkpoints,
            storage_level=storage_level,
        )

    def connectedComponents(
        self,
        algorithm: str = "graphframes",
        checkpointInterval: int = 2,
        broadcastThreshold: int = 1000000,
        useLabelsAsComponents: bool = False,
        use_local_checkpoints: bool = False,
        max_iter: int = 2**31 - 2,
        storage_level: StorageLevel = DEFAULT_STORAGE,
    ) -> DataFrame:
        """Weakly connected components: vertices + ``component`` (long, the smallest id of the component).

        See :func:`lepton_spark.analytics.components.connected_components`.
        """
        if self._engine_name() == _engine.GRAPHFRAMES:
            return _engine.to_graphframes(self).connectedComponents(
                algorithm=algorithm, checkpointInterval=checkpointInterval, broadcastThreshold=broadcastThreshold,
                useLabelsAsComponents=useLabelsAsComponents, use_local_checkpoints=use_local_checkpoints,
                max_iter=max_iter, storage_level=storage_level,
            )
        from lepton_spark.analytics.components import connected_components

        return connected_components(
            self, algorithm=algorithm, checkpointInterval=checkpointInterval, broadcastThreshold=broadcastThreshold,
            useLabelsAsComponents=useLabelsAsComponents, use_local_checkpoints=use_local_checkpoints,
            max_iter=max_iter, storage_level=storage_level,
        )

    def labelPropagation(
        self,
        maxIter: int,
        algorithm: str = "graphx",
        use_local_checkpoints: bool = False,
        checkpoint_interval: int = 2,
        storage_level: StorageLevel = DEFAULT_STORAGE,
    ) -> DataFrame:
        """Static label propagation (communities): vertices + ``label``.

        See :func:`lepton_spark.analytics.communities.label_propagation`.
        """
        if self._engine_name() == _engine.GRAPHFRAMES:
            return _engine.to_graphframes(self).labelPropagation(
                maxIter=maxIter, algorithm=algorithm, use_local_checkpoints=use_local_checkpoints,
                checkpoint_interval=checkpoint_interval, storage_level=storage_level,
            )
        from lepton_spark.analytics.communities import label_propagation

        return label_propagation(
            self, maxIter, algorithm=algorithm, use_local_checkpoints=use_local_checkpoints,
            checkpoint_interval=checkpoint_interval, storage_level=storage_level,
        )

    def shortestPaths(
        self,
        landmarks: list[Any],
        algorithm: str = "graphx",
        use_local_checkpoints: bool = False,
        checkpoint_interval: int = 2,
        storage_level: StorageLevel = DEFAULT_STORAGE,
        is_directed: bool = True,
    ) -> DataFrame:
        """Hop distances to landmarks: vertices + ``distances`` (map landmark -> hops, unreachable absent).

        See :func:`lepton_spark.analytics.paths.shortest_paths`.
        """
        if self._engine_name() == _engine.GRAPHFRAMES:
            return _engine.to_graphframes(self).shortestPaths(
                landmarks=landmarks, algorithm=algorithm, use_local_checkpoints=use_local_checkpoints,
                checkpoint_interval=checkpoint_interval, storage_level=storage_level, is_directed=is_directed,
            )
        from lepton_spark.analytics.paths import shortest_paths

        return shortest_paths(
            self, landmarks, algorithm=algorithm, use_local_checkpoints=use_local_checkpoints,
            checkpoint_interval=checkpoint_interval, storage_level=storage_level, is_directed=is_directed,
        )
