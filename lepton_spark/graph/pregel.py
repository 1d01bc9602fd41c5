"""Pregel on DataFrames: GraphFrames 0.12's ``Pregel`` builder and semantics, with a leaner plan.

Semantics (GraphFrames ``org.graphframes.lib.Pregel``): the vertices get an active flag
(``_pregel_is_active``) and the columns declared with :meth:`Pregel.withVertexColumn`. Each iteration
builds (src, edge, dst) triplets, evaluates every ``sendMsgToSrc`` / ``sendMsgToDst`` expression,
drops null messages, aggregates the rest per target id with ``aggMsgs`` (column ``_pregel_msg_``),
left-joins that back (null for vertices that received nothing) and evaluates all update expressions
*synchronously* (they read the previous values). Messages to ids that are not vertices vanish. The
result is the vertex DataFrame (original columns, ``_pregel_is_active``, the extra columns),
persisted at the intermediate storage level; ``unpersist`` it when done.

Plan (why it is fast):

* Edges are projected to ``(src, dst[, the edge columns messages read])``, repartitioned by ``src``
  and persisted **once**. The vertex state is kept hash-partitioned by ``id`` with the same number of
  partitions, so the state-to-edges join and the join of the aggregated messages back onto the state
  need no shuffle: one shuffle per iteration, the messages' (with partial aggregation). Both joins
  are hinted ``shuffle_hash`` (hash the small side per partition): no sort of the edges every
  iteration and no broadcast of the state.
* Vertex columns no message reads are pruned by Catalyst (the triplet structs are built above the
  joins; see :mod:`lepton_spark.graph.messages`). The ``dst`` side is joined only when a message reads
  a ``dst`` field other than ``dst.id``. With ``setSkipMessagesFromNonActiveVertices`` and no ``dst``
  join, inactive vertices are filtered out before the join.
* All messages of an iteration come from one pass: ``explode(array(struct(id, msg), ...))``.
* One Spark job per iteration computes and stores the new state and returns the counts for the log
  line (receivers, messages, active vertices, optional convergence metric). Early stopping (no
  message) and vote-to-halt use those counts; as in GraphFrames, an iteration without messages is
  not applied.
* Every iteration's state is a non-eager ``localCheckpoint`` at the intermediate storage level
  (stored by the executors when that job runs): the query plan never grows with the iterations.
  (A persisted state would not do: the state is read twice per iteration, so its plan would double
  every iteration until the next checkpoint.) Executors free old states when the driver drops them.
* For fault tolerance a reliable ``checkpoint`` into the session's checkpoint directory
  (``spark.checkpoint.dir``, which Spark 4 honours) is added every ``checkpointInterval``
  iterations, unless ``setUseLocalCheckpoints(True)`` (then the per-iteration local checkpoints are
  the only cut) or the interval is 0. If the reliable checkpoint fails (no directory, e.g. Spark 3.5
  without ``setCheckpointDir``) the run logs it once and stays local. These cuts follow the lineage
  policy the propagation rounds use (:class:`~lepton_spark.graph.propagation.rounds.LineagePolicy`,
  here lazy and at the intermediate storage level). No SparkContext is used (Spark Connect works).
  The result is persisted at the intermediate storage level.

Edge columns (decision): GraphFrames 0.12 puts no ``edge`` struct into the triplets unless
:meth:`Pregel.required_edge_columns` lists the columns, so ``Pregel.edge("w")`` fails without it. Here
the ``edge`` struct holds every edge column the message expressions reference (found from their
text, conservatively) **plus** the required ones: GraphFrames code runs unchanged, and code that
forgot ``required_edge_columns`` works too. ``required_src_columns`` / ``required_dst_columns`` are
accepted and validated; pruning of vertex columns is automatic, so they never restrict what a
message may read.

Lepton extension: :meth:`Pregel.setConvergence` stops when an aggregate over the updated vertices
(e.g. the L1 change of a rank) falls below a tolerance, evaluated in the same action.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

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
)
from lepton_spark.graph.propagation.rounds import LineagePolicy
from lepton_spark.session import shuffle_partitions

if TYPE_CHECKING:
    from lepton_spark.graph.frame import GraphFrame

log = logging.getLogger(__name__)

_E_SRC = "__esrc"
_E_DST = "__edst"
_N_MSGS = "__pregel_n_msgs"


class Pregel:
    """Builder for a Pregel run over a :class:`~lepton_spark.graph.frame.GraphFrame` (``g.pregel``).

    Every setter returns the builder. Defaults follow GraphFrames 0.12: maxIter 10, checkpoint
    interval 2, no early stopping, all vertices initially active, active flag kept ``True``.
    Declare the state with :meth:`withVertexColumn`, the messages with :meth:`sendMsgToSrc` /
    :meth:`sendMsgToDst` (reading :meth:`src`, :meth:`dst`, :meth:`edge`), their aggregation with
    :meth:`aggMsgs` (over :meth:`msg`), then :meth:`run`. Null messages are dropped; updates read
    the previous iteration's values.

    Parameters
    ----------
    graph : GraphFrame
        The graph to run on (``g.pregel`` passes ``g``).

    Returns
    -------
    DataFrame
        From :meth:`run`: the vertices (their columns, ``_pregel_is_active`` and the declared
        columns), persisted; ``unpersist`` it when done.

    Examples
    --------
    Hops from vertex 1 along the edges of a path; vertex 5 is isolated and never reached:

    >>> from pyspark.sql import functions as F
    >>> from lepton_spark.graph import GraphFrame, Pregel
    >>> v = spark.createDataFrame([(1,), (2,), (3,), (4,), (5,)], "id long")
    >>> e = spark.createDataFrame([(1, 2), (2, 3), (3, 4)], "src long, dst long")
    >>> start = F.when(F.col("id") == 1, F.lit(0))
    >>> hops = (GraphFrame(v, e).pregel.setMaxIter(3)
    ...         .withVertexColumn("hops", start, F.least(F.col("hops"), Pregel.msg()))
    ...         .sendMsgToDst(Pregel.src("hops") + 1)
    ...         .aggMsgs(F.min(Pregel.msg()))
    ...         .run())
    >>> sorted((r["id"], r["hops"]) for r in hops.collect())
    [(1, 0), (2, 1), (3, 2), (4, 3), (5, None)]
    """

    MSG_COL_NAME = "_pregel_msg_"
    ACTIVE_FLAG_COL = "_pregel_is_active"

    def __init__(self, graph: GraphFrame) -> None:
        self.graph = graph
        self._max_iter = 10
        self._checkpoint_interval = 2
        self._early_stopping = False
        self._columns: list[tuple[str, Column, Column]] = []
        self._messages: list[tuple[str, Column]] = []
        self._agg: Column | None = None
        self._stop_if_all_inactive = False
        self._initial_active: Column | None = None
        self._update_active: Column | None = None
        self._skip_inactive = False
        self._local_checkpoints = False
        self._storage_level = StorageLevel.MEMORY_AND_DISK_DESER
        self._required_src: list[str] = []
        self._required_dst: list[str] = []
        self._required_edge: list[str] = []
        self._convergence: tuple[Column, float] | None = None

    # ----------------------------------------------------------------------------- builder

    def setMaxIter(self, value: int) -> Pregel:
        """Maximum number of iterations (default 10, must be >= 1)."""
        self._max_iter = int(value)
        return self

    def setCheckpointInterval(self, value: int) -> Pregel:
        """Cut lineage every ``value`` iterations (default 2; 0 disables checkpoints)."""
        self._checkpoint_interval = int(value)
        return self

    def setEarlyStopping(self, value: bool) -> Pregel:
        """Stop as soon as an iteration produces no (non-null) message; that iteration is not applied."""
        self._early_stopping = bool(value)
        return self

    def withVertexColumn(self, colName: str, initialExpr: Column, updateAfterAggMsgsExpr: Column) -> Pregel:
        """Add vertex column ``colName``: ``initialExpr`` over the original vertex columns, then
        ``updateAfterAggMsgsExpr`` after every aggregation (may read all vertex columns, the extra
        columns' previous values and :meth:`msg`, which is null when the vertex received nothing)."""
        if colName in (ID, self.MSG_COL_NAME):
            raise ValueError(f"Vertex column name {colName!r} is reserved (id and {self.MSG_COL_NAME} are).")
        self._columns.append((colName, initialExpr, updateAfterAggMsgsExpr))
        return self

    def sendMsgToSrc(self, msgExpr: Column) -> Pregel:
        """Send ``msgExpr`` (over ``src``, ``edge``, ``dst``) to the source of every edge; may repeat."""
        self._messages.append((SRC, msgExpr))
        return self

    def sendMsgToDst(self, msgExpr: Column) -> Pregel:
        """Send ``msgExpr`` (over ``src``, ``edge``, ``dst``) to the destination of every edge; may repeat."""
        self._messages.append((DST, msgExpr))
        return self

    def aggMsgs(self, aggExpr: Column) -> Pregel:
        """How messages are aggregated per target id (e.g. ``F.sum(Pregel.msg())``); required."""
        self._agg = aggExpr
        return self

    def setStopIfAllNonActiveVertices(self, value: bool) -> Pregel:
        """Stop (after applying the update) when no vertex is active any more (vote to halt)."""
        self._stop_if_all_inactive = bool(value)
        return self

    def setInitialActiveVertexExpression(self, value: Column) -> Pregel:
        """Initial ``_pregel_is_active`` over the original vertex columns (default ``lit(True)``)."""
        self._initial_active = value
        return self

    def setUpdateActiveVertexExpression(self, value: Column) -> Pregel:
        """``_pregel_is_active`` after each update; reads the same columns as the update expressions."""
        self._update_active = value
        return self

    def setSkipMessagesFromNonActiveVertices(self, value: bool) -> Pregel:
        """Send no message from an edge whose source (and destination, when read) is inactive."""
        self._skip_inactive = bool(value)
        return self

    def setUseLocalCheckpoints(self, value: bool) -> Pregel:
        """Use ``localCheckpoint`` (executor storage, no checkpoint directory needed)."""
        self._local_checkpoints = bool(value)
        return self

    def setIntermediateStorageLevel(self, storage_level: StorageLevel) -> Pregel:
        """Storage level of the persisted edges, per-iteration state and result."""
        self._storage_level = storage_level
        return self

    def required_src_columns(self, col_name: str, *col_names: str) -> Pregel:
        """Accepted for GraphFrames compatibility; vertex columns are pruned automatically (see module doc)."""
        self._required_src = [col_name, *col_names]
        return self

    def required_dst_columns(self, col_name: str, *col_names: str) -> Pregel:
        """Accepted for GraphFrames compatibility; vertex columns are pruned automatically (see module doc)."""
        self._required_dst = [col_name, *col_names]
        return self

    def required_edge_columns(self, col_name: str, *col_names: str) -> Pregel:
        """Edge columns to put into the ``edge`` struct, in addition to those the messages reference."""
        self._required_edge = [col_name, *col_names]
        return self

    def setConvergence(self, metric: Column, tol: float) -> Pregel:
        """Lepton extension: stop after the iteration where ``metric`` < ``tol``.

        ``metric`` is an aggregate over the updated vertex DataFrame (for instance
        ``F.sum("delta")`` where ``delta`` is a vertex column holding the change of a value). It is
        evaluated in the action that materialises each iteration, so it costs no extra job.
        """
        self._convergence = (metric, float(tol))
        return self

    # --------------------------------------------------------------------------- references

    @staticmethod
    def msg() -> Column:
        """The aggregated message column, for ``aggMsgs`` and the update expressions."""
        return F.col(Pregel.MSG_COL_NAME)

    @staticmethod
    def src(colName: str) -> Column:
        """A source vertex column in a message expression."""
        return F.col(SRC + "." + colName)

    @staticmethod
    def dst(colName: str) -> Column:
        """A destination vertex column in a message expression."""
        return F.col(DST + "." + colName)

    @staticmethod
    def edge(colName: str) -> Column:
        """An edge column in a message expression."""
        return F.col(EDGE + "." + colName)

    # ---------------------------------------------------------------------------------- run

    def _check(self, v_cols: list[str], e_cols: list[str]) -> None:
        if self._max_iter < 1:
            raise ValueError(f"maxIter must be >= 1, got {self._max_iter}")
        if self._checkpoint_interval < 0:
            raise ValueError(f"checkpointInterval must be >= 0, got {self._checkpoint_interval}")
        if not self._messages:
            raise ValueError("Pregel: define at least one message with sendMsgToSrc or sendMsgToDst")
        if self._agg is None:
            raise ValueError("Pregel: define the message aggregation with aggMsgs")
        if not self._columns:
            raise ValueError("Pregel: define at least one vertex column with withVertexColumn")
        names = [c for c, _, _ in self._columns]
        clash = sorted({n for n in names if names.count(n) > 1 or n in v_cols or n == self.ACTIVE_FLAG_COL})
        if clash:
            raise ValueError(f"Pregel: vertex column(s) {clash} defined twice or already in the vertices")
        state = {c.lower() for c in [*v_cols, self.ACTIVE_FLAG_COL, *names]}
        for what, req, known in (
            ("src", self._required_src, state),
            ("dst", self._required_dst, state),
            ("edge", self._required_edge, {c.lower() for c in e_cols}),
        ):
            unknown = [c for c in req if c.lower() not in known]
            if unknown:
                raise ValueError(f"Pregel: required {what} column(s) {unknown} do not exist")

    def run(self) -> DataFrame:
        """Run the iterations; returns the persisted vertex DataFrame of the last applied iteration."""
        g = self.graph
        v_cols, e_cols = g.vertices.columns, g.edges.columns
        self._check(v_cols, e_cols)
        assert self._agg is not None
        spark = g.vertices.sparkSession
        parts = shuffle_partitions(spark)
        level = self._storage_level
        active = self.ACTIVE_FLAG_COL
        extra = [c for c, _, _ in self._columns]
        state_cols = [*v_cols, active, *extra]
        id_pos = v_cols.index(ID)

        texts = [expr_text(m) for _, m in self._messages]
        needs_dst = not struct_use(texts, DST, state_cols).needs_only({ID})
        edge_use = struct_use(texts, EDGE, e_cols)
        wanted = {c.lower() for c in self._required_edge} | set(edge_use.fields)
        edge_cols = list(e_cols) if edge_use.whole else [c for c in e_cols if c.lower() in wanted]
        pre_filter = self._skip_inactive and not needs_dst
        log.info(
            "pregel: maxIter=%d, %d message(s), dst side %s, edge columns %s, checkpoint every %d (%s)",
            self._max_iter, len(self._messages), "joined" if needs_dst else "not joined",
            edge_cols or "none", self._checkpoint_interval, "local" if self._local_checkpoints else "reliable",
        )

        edges = (
            g.edges.select(
                F.col(SRC).alias(_E_SRC), F.col(DST).alias(_E_DST),
                *[F.col(quote(c)).alias(f"__e{i}") for i, c in enumerate(edge_cols)],
            )
            .repartition(parts, F.col(_E_SRC))
            .persist(level)
        )
        edge_flat = [f"__e{i}" for i in range(len(edge_cols))]
        init_active = self._initial_active if self._initial_active is not None else F.lit(True)
        update_active = self._update_active if self._update_active is not None else F.lit(True)
        # every state is a (non-eager) local checkpoint: the query plan never grows with the
        # iterations (the state is read twice per iteration, so a plan of persisted states would
        # double each time), and the iteration's single action materialises it. On top, every
        # checkpointInterval-th state is a reliable checkpoint, unless local checkpoints were asked for
        # (then the per-iteration ones are the only cut: no iteration is due)
        policy = LineagePolicy(interval=0 if self._local_checkpoints else self._checkpoint_interval,
                               reliable=True, eager=False, level=level, what="pregel", logger=log)
        cur = policy.local(
            g.vertices.select(
                *[F.col(quote(c)) for c in v_cols],
                init_active.alias(active),
                *[init.alias(name) for name, init, _ in self._columns],
            ).repartition(parts, F.col(ID))
        )
        done = 0
        try:
            for it in range(1, self._max_iter + 1):
                t0 = time.perf_counter()
                base = cur.select(*[quote(c) for c in state_cols])
                senders = base.filter(F.col(active)) if pre_filter else base
                s, sf = prefixed(senders, "__s")
                t = edges.join(s.hint("shuffle_hash"), F.col(_E_SRC) == F.col(sf[id_pos]))
                cols = [F.col(_E_SRC), F.col(_E_DST), struct_of(state_cols, sf).alias(SRC)]
                if edge_cols:
                    cols.append(struct_of(edge_cols, edge_flat).alias(EDGE))
                if needs_dst:
                    d, dfl = prefixed(base, "__d")
                    t = t.join(d, F.col(_E_DST) == F.col(dfl[id_pos]))
                    cols.append(struct_of(state_cols, dfl).alias(DST))
                else:
                    cols.append(F.struct(F.col(_E_DST).alias(ID)).alias(DST))
                t = t.select(*cols)
                if self._skip_inactive and needs_dst:
                    t = t.filter(
                        F.coalesce(F.col(SRC)[active], F.lit(False)) | F.coalesce(F.col(DST)[active], F.lit(False))
                    )
                t = t.select(_E_SRC, _E_DST, *[m.alias(f"__m{i}") for i, (_, m) in enumerate(self._messages)])
                targets = [(_E_SRC if side == SRC else _E_DST, f"__m{i}") for i, (side, _) in enumerate(self._messages)]
                msgs = explode_messages(t, targets, ID, self.MSG_COL_NAME).filter(F.col(self.MSG_COL_NAME).isNotNull())
                agg = msgs.groupBy(ID).agg(self._agg.alias(self.MSG_COL_NAME), F.count(F.lit(1)).alias(_N_MSGS))
                joined = base.join(agg.hint("shuffle_hash"), ID, "left")
                new = policy.local(
                    joined.select(
                        *[F.col(quote(c)) for c in v_cols],
                        update_active.alias(active),
                        *[upd.alias(name) for name, _, upd in self._columns],
                        F.col(_N_MSGS),
                    )
                )
                stats = [
                    F.count(F.col(_N_MSGS)).alias("receivers"),
                    F.sum(F.col(_N_MSGS)).alias("messages"),
                    F.count(F.when(F.col(active), 1)).alias("active"),
                ]
                if self._convergence is not None:
                    stats.append(self._convergence[0].alias("metric"))
                row = new.agg(*stats).first()  # the iteration's one job: computes and stores `new`
                assert row is not None
                receivers, n_msgs, n_active = int(row["receivers"]), int(row["messages"] or 0), int(row["active"])
                metric = row["metric"] if self._convergence is not None else None
                if self._early_stopping and receivers == 0:
                    log.info("pregel iteration %d/%d: no messages, stopping early (%.2fs)",
                             it, self._max_iter, time.perf_counter() - t0)
                    break
                cut = policy.due(it)
                cur = policy.cut(new) if cut else new
                done = it
                log.info(
                    "pregel iteration %d/%d: %d vertices received %d messages, %d active%s%s, %.2fs",
                    it, self._max_iter, receivers, n_msgs, n_active,
                    f", metric {metric:.6g}" if metric is not None else "",
                    " (checkpoint)" if cut else "", time.perf_counter() - t0,
                )
                if self._stop_if_all_inactive and n_active == 0:
                    log.info("pregel: all vertices inactive after iteration %d, stopping", it)
                    break
                if self._convergence is not None and metric is not None and metric < self._convergence[1]:
                    log.info("pregel: converged after iteration %d (metric %.6g < %g)", it, metric,
                             self._convergence[1])
                    break
            result = cur.select(*[quote(c) for c in state_cols]).persist(level)
            result.count()
        finally:
            edges.unpersist()
        log.info("pregel: finished after %d applied iteration(s)", done)
        return result
