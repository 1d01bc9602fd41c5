"""Graph analytics as vertex programs on the block engine (PageRank, components, LPA, shortest paths).

A :class:`VertexProgram` says what a vertex holds (``init``), what it sends along its edges
(``message``), how a destination reduces what it receives (``reduce``: sum | min | mode, the
kernels of :mod:`lepton_spark.graph.kernels`) and how it updates (``update``). The engine runs the
rounds: on the broadcast operator (:class:`~lepton_spark.graph.blocks.BroadcastOperator`, the state
vector in one process, a block job per round) or on the partitioned engine
(:mod:`lepton_spark.graph.partitioned`, the state spread over the blocks, never in one process).
Both run the same program functions, so their results are the same.

Why not DataFrame Pregel: a Pregel iteration joins the vertex state to the edges and aggregates
with Spark SQL, about 7 s per PageRank iteration at 1M vertices / 20M edges on 2 cores. A
block round is a sparse product over cached CSR blocks, well under a second (``bench/analytics.py``).
The DataFrame :class:`~lepton_spark.graph.pregel.Pregel` stays for user-written programs.

Semantics are GraphFrames'/GraphX's, see each program's docstring. Ids: integral ids are used as
they are (labels and components are vertex ids); other id types are numbered by their sort order
first and mapped back at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark import storage
from lepton_spark.config import GraphConfig
from lepton_spark.graph.arrow import state_table
from lepton_spark.graph.blocks import BroadcastOperator, EdgeFiles
from lepton_spark.graph.broadcast_limit import broadcast_max_bytes
from lepton_spark.session import is_connect

log = logging.getLogger(__name__)

DIRECTIONS = ("in", "reverse", "undirected")
INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
UNREACHED = np.iinfo(np.int32).max


@dataclass(frozen=True)
class VertexProgram:
    """One algorithm as synchronous rounds; every function works on numpy arrays of a set of vertices.

    ``init(ids)`` -> state; ``message(state, outdeg)`` -> what each vertex sends (``outdeg``: edges
    leaving it, only when ``needs_outdeg``); ``update(state, reduced, received, ids)`` -> new state
    (``received`` marks vertices that got at least one message); ``delta(old, new)`` -> a float that
    the blocks add up; the run stops early when ``converged(total delta)``.
    ``direction``: ``in`` (u -> v sends to v), ``reverse`` (to u) or ``undirected`` (both).
    """

    name: str
    reduce: str
    direction: str
    dtype: Any
    init: Callable[[np.ndarray], np.ndarray]
    message: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    update: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    delta: Callable[[np.ndarray, np.ndarray], float]
    converged: Callable[[float], bool] = field(default=lambda d: False)
    needs_outdeg: bool = False
    weighted: bool = False


def _changed(old: np.ndarray, new: np.ndarray) -> float:
    return float(np.count_nonzero(old != new))


def pagerank_program(reset: float, source: int | None = None, tol: float | None = None) -> VertexProgram:
    """GraphX/GraphFrames PageRank: ``PR[v] = r_v + (1 - r) * sum_{u->v} PR[u] / outDeg(u)``, from 1.0.

    ``r_v = r`` (personalised: ``r`` at ``source``, 0 elsewhere; the start is then 1.0 at the source
    only). ``outDeg`` counts every edge leaving u. With ``tol`` the run stops once the L1 change of
    the rank vector is below ``tol``. The ranks are unnormalised here (see ``analytics.pagerank``).
    """
    r = float(reset)

    def init(ids: np.ndarray) -> np.ndarray:
        return np.ones(len(ids)) if source is None else (ids == source).astype(np.float64)

    def message(x: np.ndarray, outdeg: np.ndarray | None) -> np.ndarray:
        assert outdeg is not None
        return np.divide(x, outdeg, out=np.zeros_like(x), where=outdeg > 0)

    def update(x: np.ndarray, s: np.ndarray, received: np.ndarray, ids: np.ndarray) -> np.ndarray:
        base = np.full(len(ids), r) if source is None else np.where(ids == source, r, 0.0)
        return base + (1.0 - r) * s

    return VertexProgram("pagerank", "sum", "in", np.float64, init, message, update,
                         delta=lambda a, b: float(np.abs(b - a).sum()),
                         converged=(lambda d: d < tol) if tol is not None else (lambda d: False),
                         needs_outdeg=True)


def components_program() -> VertexProgram:
    """Weakly connected components: every vertex takes the smallest id it hears of, until nothing changes."""
    return VertexProgram(
        "components", "min", "undirected", np.int64,
        init=lambda ids: ids.astype(np.int64),
        message=lambda x, _o: x,
        update=lambda x, m, rec, _ids: np.where(rec, np.minimum(x, m), x),
        delta=_changed, converged=lambda d: d == 0,
    )


def label_propagation_program() -> VertexProgram:
    """GraphX LPA: each edge sends each endpoint's label to the other (multi-edges with multiplicity, a
    self-loop twice); a vertex takes the most frequent label it receives, ties to the smallest; one
    that receives nothing keeps its label. Stops early at a fixed point."""
    return VertexProgram(
        "labelPropagation", "mode", "undirected", np.int64,
        init=lambda ids: ids.astype(np.int64),
        message=lambda x, _o: x,
        update=lambda x, m, rec, _ids: np.where(rec, m, x),
        delta=_changed, converged=lambda d: d == 0,
    )


def shortest_paths_program(landmarks: np.ndarray, directed: bool = True) -> VertexProgram:
    """GraphX ShortestPaths: hops from every vertex *to* each landmark (messages travel dst -> src).

    State: one int32 column per landmark, :data:`UNREACHED` where no path is known yet.
    """
    marks = np.asarray(landmarks, dtype=np.int64)

    def init(ids: np.ndarray) -> np.ndarray:
        d = np.full((len(ids), len(marks)), UNREACHED, dtype=np.int32)
        d[ids[:, None] == marks[None, :]] = 0
        return d

    def message(x: np.ndarray, _o: np.ndarray | None) -> np.ndarray:
        return np.where(x < UNREACHED, x + 1, UNREACHED).astype(np.int32)

    return VertexProgram(
        "shortestPaths", "min", "reverse" if directed else "undirected", np.int32, init, message,
        update=lambda x, m, rec, _ids: np.where(rec[:, None], np.minimum(x, m), x),
        delta=_changed, converged=lambda d: d == 0,
    )


# ------------------------------------------------------------------------------------------ running


@dataclass
class IndexedGraph:
    """A graph with long vertex ids: integral ids as they are, others numbered by their sort order."""

    vertices: DataFrame  # id long
    edges: DataFrame  # src long, dst long
    mapping: DataFrame | None  # (id original, _pos long) when the ids were renumbered

    def to_original(self, result: DataFrame, value_cols: list[str], relabel: list[str]) -> DataFrame:
        """Map ``id`` (and the columns in ``relabel``, which hold vertex ids) back to the original ids."""
        if self.mapping is None:
            return result
        m = self.mapping
        out = result.join(m, result["id"] == m["_pos"]).select(
            m["id"].alias("id"), *[result[c] for c in value_cols])
        for c in relabel:
            mm = m.select(F.col("id").alias(f"__{c}"), F.col("_pos").alias(f"__{c}_pos"))
            out = out.join(mm, out[c] == mm[f"__{c}_pos"]).drop(c, f"__{c}_pos").withColumnRenamed(f"__{c}", c)
        return out


def indexed_graph(vertices: DataFrame, edges: DataFrame) -> IndexedGraph:
    """Vertices and edges with long ids (see :class:`IndexedGraph`)."""
    if isinstance(vertices.schema["id"].dataType, INTEGRAL):
        return IndexedGraph(vertices.select(F.col("id").cast("long").alias("id")),
                            edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"),
                                         *([F.col("weight")] if "weight" in edges.columns else [])),
                            None)
    mapping = vertices.select("id").distinct().withColumn(
        "_pos", (F.row_number().over(Window.orderBy("id")) - 1).cast("long")).persist()
    s = mapping.select(F.col("id").alias("src"), F.col("_pos").alias("_s"))
    d = mapping.select(F.col("id").alias("dst"), F.col("_pos").alias("_d"))
    e = edges.join(s, "src", "left").join(d, "dst", "left").select(
        F.coalesce(F.col("_s"), F.lit(-1).cast("long")).alias("src"),  # -1: not a vertex (still counts as out-edge)
        F.coalesce(F.col("_d"), F.lit(-1).cast("long")).alias("dst"),
        *([F.col("weight")] if "weight" in edges.columns else []))
    return IndexedGraph(mapping.select(F.col("_pos").alias("id")), e, mapping)


def choose_plan(spark: Any, n_bytes_state: int, cfg: GraphConfig, plan: str | None = None) -> str:
    """``broadcast`` when the state fits ``graph.broadcast_max_bytes`` (and not on Connect), else ``partitioned``."""
    plan = plan or cfg.plan
    if plan != "auto":
        return plan
    if is_connect(spark):
        return "partitioned"
    return "broadcast" if n_bytes_state <= broadcast_max_bytes(spark, cfg) else "partitioned"


def _orient(edges: DataFrame, direction: str) -> tuple[DataFrame, bool]:
    if direction == "reverse":
        return edges.select(F.col("dst").alias("src"), F.col("src").alias("dst"),
                            *[c for c in edges.columns if c not in ("src", "dst")]), False
    return edges, direction == "undirected"


def run_broadcast(op: BroadcastOperator, prog: VertexProgram, ids: np.ndarray, max_iter: int) -> tuple[np.ndarray, int]:
    """Run ``prog`` for at most ``max_iter`` rounds on ``op``; returns (state in ``ids`` order, rounds run)."""
    x = prog.init(ids)
    outdeg = op.out_degrees() if prog.needs_outdeg else None
    it = 0
    for it in range(1, max_iter + 1):
        t0 = time.perf_counter()
        reduced, received = op.apply(prog.message(x, outdeg), prog.reduce, weighted=prog.weighted)
        new = prog.update(x, reduced, received, ids)
        d = prog.delta(x, new)
        x = new
        log.info("%s[broadcast] round %d: %d vertices, delta %.6g, %.2fs", prog.name, it, len(ids), d,
                 time.perf_counter() - t0)
        if prog.converged(d):
            break
    return x, it


def run_broadcast_many(op: BroadcastOperator, programs: Sequence[tuple[VertexProgram, int]],
                       ids: np.ndarray, one_job: bool = True) -> list[tuple[np.ndarray, int]]:
    """:func:`run_broadcast` of every ``(program, max_iter)`` on ``op``, side by side: each round is one
    job (:meth:`~lepton_spark.graph.blocks.BroadcastOperator.apply_many`) for the programs still running,
    and a program leaves when it converges or reaches its ``max_iter``. The same states as running them
    in turn; returns ``(state in ids order, rounds run)`` per program.

    ``one_job`` (``graph.one_job_rounds``): when ``op``'s blocks are local files, every round runs in
    one job instead (:func:`~lepton_spark.graph.supersteps.run_supersteps`; the same states)."""
    from lepton_spark.graph import supersteps

    name = "+".join(prog.name for prog, _ in programs)
    if one_job and supersteps.can_run(op):
        try:
            done = supersteps.run_supersteps(op, programs, ids)
        except Exception as exc:  # noqa: BLE001 - e.g. a retried attempt (see supersteps); the rounds are redone
            log.warning("%s[broadcast]: the rounds in one job failed (%s); running them one job a round", name,
                        supersteps.failure_reason(exc))
        else:
            for k, (_, _, rounds) in enumerate(done):
                for it, (d, seconds) in enumerate(rounds, 1):
                    log.info("%s[broadcast] round %d: %d vertices, delta %.6g, %.2fs (%s)", programs[k][0].name, it,
                             len(ids), d, seconds, f"rounds shared with {name}, in one job" if len(programs) > 1
                             else "in one job")
            return [(state, runs) for state, runs, _ in done]
    if len(programs) == 1:
        return [run_broadcast(op, programs[0][0], ids, programs[0][1])]
    states = [prog.init(ids) for prog, _ in programs]
    outdeg = op.out_degrees() if any(prog.needs_outdeg for prog, _ in programs) else None
    runs = [0] * len(programs)
    live = [i for i, (_, max_iter) in enumerate(programs) if max_iter > 0]
    it = 0
    while live:
        it += 1
        t0 = time.perf_counter()
        reduced = op.apply_many([(programs[i][0].message(states[i], outdeg if programs[i][0].needs_outdeg else None),
                                  programs[i][0].reduce, programs[i][0].weighted) for i in live])
        seconds = time.perf_counter() - t0
        still = []
        for i, (values, received) in zip(live, reduced, strict=True):
            prog, max_iter = programs[i]
            new = prog.update(states[i], values, received, ids)
            d = prog.delta(states[i], new)
            states[i], runs[i] = new, it
            log.info("%s[broadcast] round %d: %d vertices, delta %.6g, %.2fs (rounds shared with %s)", prog.name, it,
                     len(ids), d, seconds, name)
            if not prog.converged(d) and it < max_iter:
                still.append(i)
        live = still
    return list(zip(states, runs, strict=True))


class BlockEngine:
    """One graph prepared for vertex programs: the plan is chosen once, edge blocks are packed once per
    direction and reused by every program run on it (PageRank, components and LPA of one nightly
    share them). Use as a context manager, or call :meth:`close`."""

    def __init__(self, ig: IndexedGraph, *, config: GraphConfig | None = None, plan: str | None = None,
                 num_blocks: int | None = None, symmetric: bool = False, operators: Any = None,
                 operator_key: Any = None, edge_files: str | None = None) -> None:
        self.ig = ig
        self.symmetric = symmetric
        # the local Parquet directory ig's edges were read from (ids not renumbered): the broadcast
        # plan's in-edge blocks are packed from its files (graph.blocks.EdgeFiles, unweighted)
        self.edge_files = edge_files if ig.mapping is None else None
        # a propagation's prepared blocks of the same graph (OperatorCache + the key naming its edges):
        # the directed operator is taken from there when the ids match, never put there (ours may lack
        # the edge weights that propagation needs)
        self.shared = (operators, operator_key) if operators is not None and operator_key is not None else None
        self._borrowed: set[str] = set()
        self.cfg = config or GraphConfig()
        self.spark = ig.vertices.sparkSession
        self.num_blocks = num_blocks
        self.n = ig.vertices.count()
        self.plan = choose_plan(self.spark, self.n * 8, self.cfg, plan)
        self._ids: np.ndarray | None = None
        self._ops: dict[tuple[str, bool], Any] = {}
        log.info("block engine: %s plan, %d vertices", self.plan, self.n)

    def _operator(self, prog: VertexProgram) -> Any:
        direction = prog.direction
        if direction == "undirected" and self.symmetric and prog.reduce in ("min", "mode"):
            # a symmetric graph's undirected operator sends every message twice: the same minimum, the
            # same most frequent label (every count doubles), so its in-edge blocks serve as they are
            direction = "in"
        if direction == "in" and direction not in self._ops and self.shared and self.plan == "broadcast":
            op = self.shared[0].get(None, self.ids(), self.shared[1])
            if op is not None:
                log.info("block engine: reusing the propagation's edge blocks")
                self._ops[direction] = op
                self._borrowed.add(direction)
        if direction == "in" and direction not in self._ops and self.shared and self.plan == "partitioned" \
                and self.symmetric:
            # the partitioned propagation's blocks hold in-edges' degrees: out-degrees on a symmetric graph only
            packed = self.shared[0].find_blocks(self.shared[1])
            if packed is not None and packed.n == self.n:
                from lepton_spark.graph.partitioned import PartitionedOperator

                log.info("block engine: reusing the propagation's partitioned edge blocks (%d blocks)", packed.blocks)
                self._ops[direction] = PartitionedOperator.borrow(packed)
                self._ops[direction].worker_files = self.cfg.worker_block_files
        if direction not in self._ops:
            e, undirected = _orient(self.ig.edges, direction)
            if self.plan == "partitioned":
                from lepton_spark.graph.partitioned import PartitionedOperator

                self._ops[direction] = PartitionedOperator(self.ig.vertices, e, undirected=undirected,
                                                           config=self.cfg, num_blocks=self.num_blocks,
                                                           num_vertices=self.n)
            else:
                parts = self.cfg.num_partitions or None  # None: the operator's default for where it lives
                files = EdgeFiles(self.edge_files, weight=None) if self.edge_files and direction == "in" else None
                self._ops[direction] = BroadcastOperator.prepare(
                    self.spark, self.ids(), e, parts, undirected=undirected, local_exchange=self.cfg.local_exchange,
                    files=files)
        return self._ops[direction]

    def ids(self) -> np.ndarray:
        """The sorted vertex ids (broadcast plan only: they sit on the driver beside the state)."""
        if self._ids is None:
            self._ids = np.sort(storage.collect_arrow(self.ig.vertices).column("id").to_numpy().astype(np.int64))
        return self._ids

    def run(self, prog: VertexProgram, max_iter: int) -> DataFrame:
        """Run ``prog`` for at most ``max_iter`` rounds: DataFrame(id long, value), ids in the indexed space.

        ``value`` is double (float64 states), long (int64) or array<int> (2-d int32 states).
        """
        if self.plan == "partitioned":  # symmetric edges: the graph's, or an undirected operator's (E + E^T)
            return self._operator(prog).run(prog, max_iter,
                                            symmetric=self.symmetric or prog.direction == "undirected")
        return self.to_df(*self.run_local(prog, max_iter))

    def run_many(self, programs: Sequence[tuple[VertexProgram, int]]) -> list[DataFrame]:
        """:meth:`run` of every ``(program, max_iter)``, one result each. The programs that run on the
        same edge blocks share their rounds: on the partitioned plan
        (:meth:`~lepton_spark.graph.partitioned.PartitionedOperator.run_many`) each round ships the
        blocks to Python once for all of them, which is most of a round's cost there; on the broadcast
        plan (:meth:`run_many_local`) each round is one job for all of them."""
        if self.plan != "partitioned":
            return [self.to_df(ids, state) for ids, state in self.run_many_local(programs)]
        ops = [self._operator(prog) for prog, _ in programs]
        results: dict[int, DataFrame] = {}
        for op in {id(op): op for op in ops}.values():  # one shared run per set of blocks
            idx = [i for i, o in enumerate(ops) if o is op]
            outs = op.run_many([programs[i] for i in idx],
                               symmetric=[self.symmetric or programs[i][0].direction == "undirected" for i in idx])
            results.update(zip(idx, outs, strict=True))
        return [results[i] for i in range(len(programs))]

    def run_local(self, prog: VertexProgram, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """Broadcast plan only: :meth:`run`'s result as driver arrays ``(ids, state)``, for a caller
        that finishes the state on the driver (PageRank's rescaling) before it becomes a DataFrame."""
        if self.plan != "broadcast":
            raise ValueError("run_local: the partitioned plan's state is not on the driver (use run)")
        return self.run_many_local([(prog, max_iter)])[0]

    def run_many_local(self, programs: Sequence[tuple[VertexProgram, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Broadcast plan only: :meth:`run_local` of every ``(program, max_iter)``; the programs on the
        same edge blocks share their rounds (:func:`run_broadcast_many`: one job a round for all of
        them; PageRank, components and LPA of a symmetric graph at 100k vertices: 30 jobs -> 20)."""
        if self.plan != "broadcast":
            raise ValueError("run_many_local: the partitioned plan's state is not on the driver (use run_many)")
        ops = [self._operator(prog) for prog, _ in programs]
        ids = self.ids()
        results: dict[int, np.ndarray] = {}
        for op in {id(op): op for op in ops}.values():
            idx = [i for i, o in enumerate(ops) if o is op]
            t0 = time.perf_counter()
            runs = run_broadcast_many(op, [programs[i] for i in idx], ids, one_job=self.cfg.one_job_rounds)
            log.info("%s[broadcast]: %d rounds in %.2fs", "+".join(programs[i][0].name for i in idx),
                     max(r for _, r in runs), time.perf_counter() - t0)
            results.update((i, state) for i, (state, _) in zip(idx, runs, strict=True))
        return [(ids, results[i]) for i in range(len(programs))]

    def to_df(self, ids: np.ndarray, state: np.ndarray) -> DataFrame:
        """``DataFrame(id long, value)`` of driver arrays, as :meth:`run` returns it."""
        return storage.create_df(self.spark, state_table(ids, state))

    def close(self) -> None:
        for direction, op in self._ops.items():
            if direction not in self._borrowed:
                op.close()
        self._ops.clear()

    def __enter__(self) -> BlockEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_program(ig: IndexedGraph, prog: VertexProgram, max_iter: int, *, config: GraphConfig | None = None,
                plan: str | None = None, num_blocks: int | None = None, symmetric: bool = False) -> DataFrame:
    """Run one program on a graph of its own (:class:`BlockEngine` prepared and closed around it).

    ``plan``: auto | broadcast | partitioned (default ``config.plan``); ``num_blocks``: blocks of the
    partitioned plan (default one per task slot). The result is materialised before the blocks go.
    """
    with BlockEngine(ig, config=config, plan=plan, num_blocks=num_blocks, symmetric=symmetric) as engine:
        return engine.run(prog, max_iter)  # local rows (broadcast) or cut from the blocks (partitioned)
