"""Vertex programs on the partitioned block engine: the state never sits in one process.

The vertices are hashed into ``B`` blocks (one per task slot by default), labelled so that Spark's
hash partitioning gives every block a partition of its own (the labels of the partitioned
propagation plan). Each block's out-edges are packed once into a CSR block (rows = destinations,
ordered by their block; columns = the block's own vertices) with the out-degree of every vertex,
stored as a few rows of whole CSR rows (pieces: the JVM hands them to Python every round, and moves
many values of a few MB much faster than one of tens of MB), and cached, partitioned and sorted by
block. On a symmetric graph the blocks a partitioned propagation of the same run packed are used
instead (:meth:`PartitionedOperator.borrow`): same labels, numbering and pieces.

A round is one cogroup of the rows addressed to a block with its cached edge block. The rows are
the block's own state (one binary row) and the partial messages the other blocks sent it. The block
reduces the partials (sum: add; min: minimum; mode: add the counts of every (vertex, label) and
take the most frequent label), updates its state with the program, and sends the next messages:
one partial per destination block, already reduced per destination vertex (for ``mode``: label
counts, since a mode does not combine). On symmetric edges a mode program pulls instead: each
block sends its vertices' values to the blocks its edges reach and counts, per own vertex, the values
of the rows of its CSR column (its neighbours): one value per vertex and destination block rather
than one count per edge while the labels are still distinct. Lineage is cut every round; the blocks' ``delta`` values
are summed for the convergence test. The program functions are the same as on the broadcast
operator (:mod:`lepton_spark.graph.programs`), so both plans give the same results.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark.config import GraphConfig
from lepton_spark.graph import arrow, kernels, resident, worker_blocks
from lepton_spark.graph.arrow import cell
from lepton_spark.graph.propagation.partitioned_plan import (
    ROUND_CONF,
    block_keys,
    block_label,
    cache_blocks,
    cogroup,
    endpoint_lookups,
    head_and_pieces,
    number_in_blocks,
    row_keys,
    row_pieces,
)
from lepton_spark.graph.propagation.rounds import LineagePolicy
from lepton_spark.session import sql_conf, task_slots

if TYPE_CHECKING:
    from lepton_spark.graph.programs import VertexProgram

log = logging.getLogger(__name__)

# part 0 holds the block's vertices (ids, outdeg); every part a piece of whole CSR rows (tgt .. data)
_EBLOCK = T.StructType([
    T.StructField("pid", T.IntegerType()), T.StructField("part", T.IntegerType()),
    T.StructField("n", T.LongType()), T.StructField("ids", T.BinaryType()),
    T.StructField("outdeg", T.BinaryType()), T.StructField("tgt", T.BinaryType()),
    T.StructField("tgt_local", T.BinaryType()), T.StructField("indptr", T.BinaryType()),
    T.StructField("indices", T.BinaryType()), T.StructField("data", T.BinaryType()),
])
# kind 0: a block's own state (ids, values, delta); kind 1: a partial message (local, values, counts);
# kind 2 (pull): the sender ``src``'s values of its vertices ``local`` that have an edge into block ``pid``.
# ``prog``: which of the programs run side by side (:meth:`PartitionedOperator.run_many`) the row is for
_MSG = T.StructType([
    T.StructField("pid", T.IntegerType()), T.StructField("kind", T.IntegerType()), T.StructField("src", T.IntegerType()),
    T.StructField("prog", T.IntegerType()),
    T.StructField("local", T.BinaryType()), T.StructField("values", T.BinaryType()),
    T.StructField("counts", T.BinaryType()), T.StructField("delta", T.DoubleType()),
])
_EBLOCK_PA = pa.schema([(f.name, {"pid": pa.int32(), "part": pa.int32(), "n": pa.int64()}.get(f.name, pa.binary()))
                        for f in _EBLOCK])
_MSG_PA = pa.schema([(f.name, {"pid": pa.int32(), "kind": pa.int32(), "src": pa.int32(), "prog": pa.int32(),
                                "delta": pa.float64()}.get(f.name, pa.binary())) for f in _MSG])
_CHUNK_ROWS = 1 << 16  # entries per partial value
#: CSR entries per EBLOCK row. Every round the JVM hands each block's rows to Python again, and it
#: moves many values of a few MB much faster than one of tens of MB: a cogroup reading 4 blocks of
#: 32 MB as one value each took 2.4 s on 2 cores, as 16 pieces each 0.67 s (the same bytes)
_PIECE_ENTRIES = 1 << 19


def _cells(col: pa.ChunkedArray, dtype: type) -> list[np.ndarray]:
    return [np.frombuffer(b, dtype=dtype) for b in arrow.binary_cells(col)]


def _pack_edges(vertices: DataFrame, edges: DataFrame, blocks: int, keys: list[int],
                broadcast_ids: bool = False) -> DataFrame:
    """Cached edge blocks, one row per block (schema ``_EBLOCK``), partitioned and sorted by block.

    ``broadcast_ids``: every edge looks up its source's and target's (block, index) in a broadcast
    copy of the vertices' block labels (16 bytes a vertex) instead of two shuffle joins of the edges,
    as the partitioned propagation plan does.
    """
    policy = LineagePolicy.for_session(vertices.sparkSession, what="blocks[partitioned]", logger=log)
    vl = number_in_blocks(vertices.select("id").withColumn("pid", block_label(keys)), policy)
    s, d = endpoint_lookups(vl, broadcast_ids)
    w = F.coalesce(F.col("weight").cast("float"), F.lit(1.0).cast("float")) if "weight" in edges.columns \
        else F.lit(1.0).cast("float")
    e = edges.select("src", "dst", w.alias("weight")).join(s, "src").join(d, "dst", "left").select(
        F.col("spid").alias("pid"), "slocal", "dpid", "dlocal", "weight")

    def pack(vt: pa.Table, et: pa.Table) -> pa.Table:
        if vt.num_rows == 0:
            return pa.Table.from_pylist([], schema=_EBLOCK_PA)
        order = np.argsort(vt.column("local").to_numpy(), kind="stable")
        ids = vt.column("id").to_numpy()[order].astype(np.int64)
        n = len(ids)
        outdeg = np.zeros(n, dtype=np.float64)
        tgt = tgt_local = indices = np.zeros(0, np.int32)
        indptr, data = np.zeros(1, np.int64), np.zeros(0, np.float32)
        if et.num_rows:
            slocal = et.column("slocal").to_numpy().astype(np.int64)
            outdeg = np.bincount(slocal, minlength=n).astype(np.float64)  # edges to non-vertices count too
            dpid = et.column("dpid").to_numpy(zero_copy_only=False)
            ok = ~np.isnan(dpid.astype(np.float64))
            key, stride = row_keys(dpid[ok].astype(np.int64),
                                   et.column("dlocal").to_numpy(zero_copy_only=False)[ok].astype(np.int64))
            rows, indptr, indices, data = kernels.csr_from_pairs(
                key, slocal[ok].astype(np.int32), et.column("weight").to_numpy()[ok])
            tgt, tgt_local = (rows // stride).astype(np.int32), (rows % stride).astype(np.int32)
        pid = int(vt.column("pid")[0].as_py())
        indices, data = indices.astype(np.int32, copy=False), data.astype(np.float32, copy=False)
        rows = []
        for part, (a, b) in enumerate(row_pieces(indptr, _PIECE_ENTRIES)):
            lo, hi = int(indptr[a]), int(indptr[b])
            rows.append({"pid": pid, "part": part, "n": n, "ids": ids.tobytes() if part == 0 else b"",
                         "outdeg": outdeg.tobytes() if part == 0 else b"", "tgt": tgt[a:b].tobytes(),
                         "tgt_local": tgt_local[a:b].tobytes(), "indptr": (indptr[a:b + 1] - lo).tobytes(),
                         "indices": indices[lo:hi].tobytes(), "data": data[lo:hi].tobytes()})
        return pa.Table.from_pylist(rows, schema=_EBLOCK_PA)

    packed = cogroup(vl.select("pid", "id", "local"), e, pack, _EBLOCK)
    return cache_blocks(packed, blocks)


def _assemble(eb: pa.Table, weighted: bool) -> tuple[pa.Table, tuple[np.ndarray, ...]]:
    """A block's ``part`` 0 row and its whole CSR ``(tgt, tgt_local, indptr, indices, data)``, joined
    from its pieces (whole rows each, in part order); ``data`` is empty unless ``weighted``."""
    head, rows = head_and_pieces(eb)
    tgt = np.concatenate([cell(r, "tgt", np.int32) for r in rows])
    tgt_local = np.concatenate([cell(r, "tgt_local", np.int32) for r in rows])
    ptrs = [cell(r, "indptr", np.int64) for r in rows]
    offsets = np.cumsum([0] + [int(p[-1]) for p in ptrs])
    indptr = np.concatenate([ptrs[0][:1], *[p[1:] + o for p, o in zip(ptrs, offsets[:-1])]])
    indices = np.concatenate([cell(r, "indices", np.int32) for r in rows])
    data = np.concatenate([cell(r, "data", np.float32) for r in rows]) if weighted else np.zeros(0, np.float32)
    return head, (tgt, tgt_local, indptr, indices, data)


def _segments(pid: np.ndarray, local: np.ndarray, values: np.ndarray, counts: np.ndarray | None,
              kind: int, src: int, prog: int = 0) -> pa.Table:
    """Messages as ``_MSG`` rows: the entries of each destination ``pid`` (runs of equal ``pid``) cut
    into binary values of at most ``_CHUNK_ROWS`` entries."""
    bounds = arrow.run_bounds(pid, _CHUNK_ROWS)
    k = len(bounds) - 1
    return pa.table({
        "pid": pa.array(pid[bounds[:-1]], pa.int32()), "kind": pa.array(np.full(k, kind, np.int32)),
        "src": pa.array(np.full(k, src, np.int32)), "prog": pa.array(np.full(k, prog, np.int32)),
        "local": arrow.binary_segments(np.ascontiguousarray(local), bounds),
        "values": arrow.binary_segments(np.ascontiguousarray(values), bounds),
        "counts": arrow.binary_segments(counts, bounds) if counts is not None
        else pa.chunked_array([pa.array([b""] * k, pa.binary())]),
        "delta": pa.array(np.zeros(k))}).cast(_MSG_PA)


def _pull_sends(msg: np.ndarray, tgt: np.ndarray, indptr: np.ndarray, indices: np.ndarray, n: int,
                src: int, prog: int = 0) -> pa.Table:
    """Pull mode: for every block ``b`` that this block's edges reach, the values ``msg`` of the own
    vertices with an edge into ``b`` (kind 2). A block's CSR rows are ordered by target block, so each
    ``b``'s rows are one range and its senders one mask over the row range's entries."""
    starts = np.flatnonzero(np.r_[True, tgt[1:] != tgt[:-1]]) if len(tgt) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(tgt)]
    pids, locs = [], []
    for a, z in zip(starts, ends):
        mask = np.zeros(n, dtype=bool)
        mask[indices[indptr[a]:indptr[z]]] = True
        need = np.flatnonzero(mask).astype(np.int32)
        pids.append(np.full(len(need), tgt[a], np.int32))
        locs.append(need)
    if not pids:
        return pa.Table.from_pylist([], schema=_MSG_PA)
    local = np.concatenate(locs)
    return _segments(np.concatenate(pids), local, np.asarray(msg)[local], None, kind=2, src=src, prog=prog)


def _pull_mode(msgs: pa.Table, dtype: Any, tgt: np.ndarray, tgt_local: np.ndarray, indptr: np.ndarray,
               indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pull mode: the most frequent value over each own vertex's neighbours, ``(reduced, received)``.

    On a symmetric graph a vertex's in-neighbours are its out-neighbours, the rows of its CSR column:
    each row's value is looked up among what the row's block sent (kind 2), then counted per column.
    """
    row_val = np.zeros(len(tgt), dtype=np.int64)
    found = np.zeros(len(tgt), dtype=bool)
    senders = msgs.column("src").to_numpy()
    locs, vals = _cells(msgs.column("local"), np.int32), _cells(msgs.column("values"), dtype)
    for c in np.unique(senders):
        pick = np.flatnonzero(senders == c)
        loc = np.concatenate([locs[i] for i in pick])
        val = np.concatenate([vals[i] for i in pick])
        order = np.argsort(loc, kind="stable")
        loc, val = loc[order], val[order]
        rows = np.flatnonzero(tgt == c)
        pos = np.minimum(np.searchsorted(loc, tgt_local[rows]), max(len(loc) - 1, 0))
        hit = (loc[pos] == tgt_local[rows]) if len(loc) else np.zeros(len(rows), bool)
        row_val[rows[hit]], found[rows[hit]] = val[pos[hit]], True
    if not found.all():
        raise RuntimeError(f"pull mode: {int((~found).sum())} rows got no value (is the graph symmetric?)")
    lab = row_val[np.repeat(np.arange(len(tgt), dtype=np.int64), np.diff(indptr))]
    return kernels.mode_of_counts(n, indices.astype(np.int64), lab, None), np.bincount(indices, minlength=n) > 0


def _reduce_partials(prog: VertexProgram, n: int, width: int, locs: list[np.ndarray], vals: list[np.ndarray],
                     counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Combine the partial messages a block received: ``(reduced, received)``."""
    dtype = np.dtype(prog.dtype)
    shape = (n, width) if width else (n,)
    received = np.zeros(n, dtype=bool)
    if prog.reduce == "mode":
        if not locs:
            return np.zeros(n, dtype=np.int64), received
        rows = np.concatenate(locs).astype(np.int64)
        received[rows] = True
        return kernels.mode_of_counts(n, rows, np.concatenate(vals), np.concatenate(counts)), received
    if prog.reduce == "min":
        out = np.full(shape, np.iinfo(dtype).max if dtype.kind in "iu" else np.inf, dtype=dtype)
        for idx, v in zip(locs, vals):
            np.minimum.at(out, idx, v.reshape((-1, *shape[1:])))
            received[idx] = True
        return out, received
    out = np.zeros(shape, dtype=np.float64)  # sum: partials hold one row per destination
    for idx, v in zip(locs, vals):
        out[idx] += v.reshape((-1, *shape[1:]))
        received[idx] = True
    return out, received


class PartitionedOperator:
    """Edge blocks of one graph and direction, packed and cached once; :meth:`run` runs a program on them.

    :meth:`borrow` wraps the blocks the partitioned propagation plan packed from the same graph
    instead (:class:`~lepton_spark.graph.propagation.partitioned_plan.PartitionedBlocks`: the same
    block labels, local numbering and CSR pieces; their ``indeg`` serves as the out-degrees, which
    only a symmetric graph allows, and their weights are read by weighted programs only).
    """

    degrees, degrees_dtype = "outdeg", np.float64

    def __init__(self, vertices: DataFrame, edges: DataFrame, *, undirected: bool = False,
                 config: GraphConfig | None = None, num_blocks: int | None = None,
                 num_vertices: int | None = None) -> None:
        cfg = config or GraphConfig()
        t0 = time.perf_counter()
        self.spark = vertices.sparkSession
        e = edges.select("src", "dst", *(["weight"] if "weight" in edges.columns else []))
        if undirected:
            e = e.unionByName(e.select(F.col("dst").alias("src"), F.col("src").alias("dst"),
                                       *[c for c in e.columns if c not in ("src", "dst")]))
        # a block's edges are one cogroup group (held whole by one task): one block per task slot, more
        # when a block's edges would pass graph.block_max_bytes (~24 bytes per edge on the JVM side);
        # measured: 20M edges per group ran a 4 GiB driver out of heap
        edge_blocks = math.ceil(e.count() * 24 / max(1, cfg.block_max_bytes)) if not num_blocks else 0
        self.blocks = num_blocks or max(cfg.num_partitions or task_slots(self.spark), edge_blocks)
        if num_vertices is None:  # counted only when the count decides the id lookup
            num_vertices = vertices.count() if cfg.broadcast_ids_max > 0 else 0
        self.worker_files = cfg.worker_block_files
        self.eblocks = _pack_edges(vertices, e, self.blocks, block_keys(self.spark, self.blocks),
                                   broadcast_ids=0 < num_vertices <= cfg.broadcast_ids_max)
        nb = self.eblocks.filter(F.col("part") == 0).count()
        self.seconds_prepared = time.perf_counter() - t0
        log.info("blocks[partitioned]: %d %s blocks prepared in %.2fs", nb,
                 "undirected" if undirected else "directed", self.seconds_prepared)

    @classmethod
    def borrow(cls, packed: Any) -> PartitionedOperator:
        """The operator over a symmetric graph's propagation blocks (``PartitionedBlocks``); ``close``
        leaves them to their owner."""
        op = cls.__new__(cls)
        op.spark, op.eblocks, op.blocks = packed.eblocks.sparkSession, packed.eblocks, packed.blocks
        op.degrees, op.degrees_dtype, op.seconds_prepared, op.borrowed = "indeg", np.int32, 0.0, True
        return op

    borrowed = False
    #: the rounds after the first read the blocks from files on their executor (:mod:`.worker_blocks`),
    #: under ``cache_root`` (None: the executor's ``SparkFiles`` root)
    worker_files = True
    cache_root: str | None = None

    def close(self) -> None:
        if not self.borrowed:
            self.eblocks.unpersist()

    def run(self, prog: VertexProgram, max_iter: int, symmetric: bool = False) -> DataFrame:
        """Run ``prog`` for at most ``max_iter`` rounds; DataFrame(id long, value).

        ``symmetric``: the blocks' edges are symmetric (every (u, v) has its (v, u), as often). A
        ``mode`` program then pulls: each block sends its vertices' values (one per vertex and
        destination block) instead of pre-counted (vertex, value, count) partials (one per edge
        while the values are still distinct), and counts its own vertices' neighbours' values.
        """
        return self.run_many([(prog, max_iter)], symmetric=symmetric)[0]

    def run_many(self, programs: Sequence[tuple[VertexProgram, int]],
                 symmetric: bool | Sequence[bool] = False) -> list[DataFrame]:
        """Run programs ``(program, max_iter)`` side by side on these blocks: one result each, equal to
        :meth:`run` of each in turn.

        A round hands every block's edges to Python once for all of them (shipping the blocks is most
        of a round here: at 1M vertices / 19M edges on 2 cores, about 0.3 of a PageRank round's 0.5 s),
        and each program stops at its own ``max_iter`` or convergence; from then on its last state is
        set aside and the rounds neither read nor carry it. The results are rows unpacked from a cut
        table of packed states (registered, :func:`~lepton_spark.graph.resident.remember_packed_rows`).
        ``symmetric``: as for :meth:`run`, one for all or one per program.
        """
        sym = [symmetric] * len(programs) if isinstance(symmetric, bool) else list(symmetric)
        specs = [_Spec(prog, int(max_iter), s and prog.reduce == "mode") for (prog, max_iter), s in zip(programs, sym)]
        with sql_conf(self.spark, ROUND_CONF):  # the rounds and the result tables
            return _run(self.spark, self.eblocks, self.blocks, specs, (self.degrees, self.degrees_dtype),
                        use_cache=self.worker_files, cache_root=self.cache_root)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One program of a partitioned run: at most ``max_iter`` rounds; ``pull``: its mode is pulled."""

    prog: VertexProgram
    max_iter: int
    pull: bool = False


def _own_row(pid: int, p: int, state: np.ndarray, delta: float, kind: int = 0) -> pa.Table:
    """A block's state of program ``p`` as one ``_MSG`` row (kind 0). Its ``local`` is empty: the
    block's ids are in its cached head row, read every round anyway (:func:`_finish` pairs them
    with the last state), so the round state does not carry them again, once per program."""
    return pa.table({"pid": pa.array([pid], pa.int32()), "kind": pa.array([kind], pa.int32()),
                     "src": pa.array([pid], pa.int32()), "prog": pa.array([p], pa.int32()),
                     "local": pa.array([b""], pa.binary()), "values": pa.array([state.tobytes()], pa.binary()),
                     "counts": pa.array([b""], pa.binary()), "delta": pa.array([delta], pa.float64())})


def _run(spark: Any, eblocks: DataFrame, blocks: int, specs: Sequence[_Spec],
         degrees: tuple[str, Any] = ("outdeg", np.float64), *, use_cache: bool = True,
         cache_root: str | None = None) -> list[DataFrame]:
    """The rounds of the ``specs``' programs over the cached ``eblocks``: one DataFrame(id, value) each.

    ``use_cache``: the rounds after the first read the blocks from files their executor wrote in the
    first (:mod:`~lepton_spark.graph.worker_blocks`), under ``cache_root`` (None: the executor's
    ``SparkFiles`` root)."""
    t0 = time.perf_counter()
    name = "+".join(sp.prog.name for sp in specs)
    policy = LineagePolicy.for_session(spark, what=name, logger=log)  # every round is cut
    # a local round state is cut lazily: the round's delta job stores it (one job a round, not two);
    # a reliable (cluster) checkpoint stays eager, since a lazy one recomputes the round to write it
    rounds = policy if policy.reliable else dataclasses.replace(policy, eager=False)
    dtypes = [np.dtype(sp.prog.dtype) for sp in specs]
    widths = [_width(sp.prog) for sp in specs]
    weighted = any(sp.prog.weighted for sp in specs)
    # the cached blocks are columnar: a round reads only the columns its programs use (PageRank,
    # components and LPA are unweighted, so the block's weights never leave the cache)
    deg_col, deg_dtype = degrees
    eblocks = eblocks.select("pid", "part", "n", "ids",
                             *([deg_col] if any(sp.prog.needs_outdeg for sp in specs) else []), "tgt",
                             "tgt_local", "indptr", "indices", *(["data"] if weighted else []))

    def program_step(p: int, incoming: pa.Table | None, pid: int, ids: np.ndarray, deg: np.ndarray | None,
                     csr: tuple[np.ndarray, ...], last: bool) -> list[pa.Table]:
        """Program ``p``'s rows from block ``pid`` (vertices ``ids``, degrees ``deg`` when a program reads
        them, edges ``csr``): its state and, unless ``last``, its messages.

        ``incoming`` None: round 0 (the initial state). Only active programs step: a stopped one
        (converged, or past its rounds) has its last state set aside by the driver (``kept``)."""
        prog, dtype, width = specs[p].prog, dtypes[p], widths[p]
        n = len(ids)
        if incoming is None:
            state, delta = prog.init(ids), 0.0
        else:
            kinds, mine = incoming.column("kind").to_numpy(), incoming.column("prog").to_numpy() == p
            own = incoming.filter(pa.array(mine & (kinds == 0)))
            old = np.frombuffer(arrow.binary_cells(own.column("values"))[0], dtype=dtype)
            old = old.reshape((n, width) if width else (n,))
            msgs = incoming.filter(pa.array(mine & (kinds != 0)))
            if specs[p].pull:
                reduced, received = _pull_mode(msgs, dtype, *csr[:4], n)
            else:
                reduced, received = _reduce_partials(
                    prog, n, width, _cells(msgs.column("local"), np.int32), _cells(msgs.column("values"), dtype)
                    if prog.reduce != "sum" else _cells(msgs.column("values"), np.float64),
                    _cells(msgs.column("counts"), np.int64))
            state = prog.update(old, reduced, received, ids).astype(dtype, copy=False)
            delta = prog.delta(old, state)
        state = np.ascontiguousarray(state)
        out = [_own_row(pid, p, state, delta)]
        tgt, tgt_local, indptr, indices, data = csr
        if last or not len(tgt):
            return out
        outdeg = np.asarray(deg, np.float64) if prog.needs_outdeg else None
        msg = prog.message(state, outdeg)
        if specs[p].pull:
            return [*out, _pull_sends(msg, tgt, indptr, indices, n, pid, prog=p)]
        if prog.reduce == "mode":
            row_of = np.repeat(np.arange(len(tgt), dtype=np.int64), np.diff(indptr))
            r, lab, cnt = kernels.value_counts(row_of, np.asarray(msg)[indices], None)
            seg_t, seg_l, seg_v, seg_c = tgt[r], tgt_local[r], lab, cnt
        else:
            data = data if prog.weighted else np.ones(len(indices), np.float32)
            red = kernels.reduce_rows(indptr, indices, data,
                                      msg if prog.reduce != "sum" else np.asarray(msg, np.float64), prog.reduce)
            seg_t, seg_l, seg_v, seg_c = tgt, tgt_local, np.ascontiguousarray(red), None
        return [*out, _segments(seg_t, seg_l, seg_v, seg_c, kind=1, src=pid, prog=p)]

    needs_deg = any(sp.prog.needs_outdeg for sp in specs)
    names = ("ids", *(("deg",) if needs_deg else ()), "tgt", "tgt_local", "indptr", "indices",
             *(("data",) if weighted else ()))

    def step_fn(first: bool, active: tuple[bool, ...], last: tuple[bool, ...], cached: bool):
        """The round's cogroup function. ``cached``: ``eb`` is the block's ``pid`` only and the block's
        arrays are read from the executor's files (:mod:`~lepton_spark.graph.worker_blocks`), a miss
        row (kind 3) when they are not there; otherwise ``eb`` is the block's rows, which it stores."""
        def step(incoming: pa.Table, eb: pa.Table) -> pa.Table:
            if eb.num_rows == 0:
                return pa.Table.from_pylist([], schema=_MSG_PA)
            pid = int(eb.column("pid")[0].as_py())
            root = (cache_root or worker_blocks.worker_root()) if use_cache else None
            if cached:
                got = worker_blocks.load(root, token, pid, names)
                if got is None:
                    return _miss_row(pid)
                ids, deg = got["ids"], got.get("deg")
                csr = (got["tgt"], got["tgt_local"], got["indptr"], got["indices"],
                       got["data"] if weighted else np.zeros(0, np.float32))
            else:
                head, csr = _assemble(eb, weighted)
                ids = cell(head, "ids", np.int64)
                deg = cell(head, deg_col, deg_dtype) if needs_deg else None
                if first:  # the later rounds read these (a round shipped after a miss has no use for them)
                    arrays = {"ids": ids, "deg": deg, "tgt": csr[0], "tgt_local": csr[1], "indptr": csr[2],
                              "indices": csr[3], "data": csr[4]}
                    worker_blocks.store(root, token, pid, {k: arrays[k] for k in names})
            out = [t for p in range(len(specs)) if active[p]
                   for t in program_step(p, None if first else incoming, pid, ids, deg, csr, last[p])]
            return pa.concat_tables([t.cast(_MSG_PA) for t in out])

        return step

    token = uuid.uuid4().hex  # names this run's block files on the executors
    heads = eblocks.filter(F.col("part") == 0).select("pid")
    cached = use_cache  # False after a round missed: the blocks are shipped for the rest of the run

    def round_of(prev: DataFrame, active: tuple[bool, ...], last: tuple[bool, ...]) -> tuple[DataFrame, list[float]]:
        """One round from ``prev``: its cut state and the blocks' deltas per program (a few rows: no
        aggregation), redone with the blocks shipped when any block missed its files."""
        nonlocal cached
        for hit in ((True, False) if cached else (False,)):
            nxt = rounds.cut(cogroup(prev.repartition(blocks, "pid"), heads if hit else eblocks,
                                     step_fn(False, active, last, hit), _MSG))
            rows = nxt.filter(F.col("kind").isin(0, 3)).select("kind", "prog", "delta").collect()
            missed = sum(1 for r in rows if r["kind"] == 3)
            if not missed:
                deltas = [0.0] * len(specs)
                for r in rows:
                    deltas[int(r["prog"])] += float(r["delta"] or 0.0)
                return nxt, deltas
            log.info("%s[partitioned]: %d blocks found no files of theirs on their executor: the round is redone "
                     "with the blocks shipped, and so are the rounds after it", name, missed)
            nxt.unpersist()
            cached = False
        raise AssertionError("unreachable: a round with the blocks shipped cannot miss")

    iters = [sp.max_iter for sp in specs]
    done = [m <= 0 for m in iters]
    shared = f" (rounds shared with {name})" if len(specs) > 1 else ""
    empty = spark.createDataFrame([], _MSG)
    state = rounds.cut(cogroup(empty, eblocks, step_fn(True, (True,) * len(specs), tuple(done), False), _MSG))
    # a stopped program's last state, set aside: the rounds after it neither read nor carry it
    # (at 1M vertices on 2 cores a round moving 33 MB a block took 0.8 s, moving 8 MB 0.3 s)
    kept: list[DataFrame | None] = [None] * len(specs)
    holding: list[DataFrame] = []  # the cut states that kept states read (released at the end)
    for p in range(len(specs)):
        if done[p]:
            kept[p] = _own_state(state, p)
            holding.append(state)
    try:
        it = 0
        while not all(done):
            it += 1
            tk = time.perf_counter()
            active = tuple(not d for d in done)
            last = tuple(a and it >= m for a, m in zip(active, iters))
            state, deltas = round_of(state, active, last)
            secs = time.perf_counter() - tk
            for p, sp in enumerate(specs):
                if active[p]:
                    log.info("%s[partitioned] round %d: delta %.6g, %.2fs%s", sp.prog.name, it, deltas[p], secs, shared)
                    done[p] = last[p] or sp.prog.converged(deltas[p])
                    if done[p]:
                        kept[p] = _own_state(state, p)
                        holding.append(state)
        packed = policy.cut(_finish(kept, eblocks, blocks, (cache_root, token) if use_cache else None))
        results = []
        for p in range(len(specs)):
            # rows unpacked from the cut packed table whenever they are read (no copy of them is cut),
            # registered as such: a writer on this machine unpacks them in its own tasks
            mine, explode = packed.filter(F.col("prog") == p).select("local", "values"), _exploder(dtypes[p], widths[p])
            results.append(resident.remember_packed_rows(
                mine.mapInArrow(explode, _value_schema(dtypes[p], widths[p])), mine, explode))
    finally:
        for c in (state, *holding):
            c.unpersist()
    log.info("%s[partitioned]: done in %.2fs", name, time.perf_counter() - t0)
    return results


def _miss_row(pid: int) -> pa.Table:
    """Block ``pid`` found no files of its own on this executor (kind 3): the driver redoes the round."""
    return _own_row(pid, 0, np.zeros(0, np.uint8), 0.0, kind=3)


def _own_state(state: DataFrame, p: int) -> DataFrame:
    """Program ``p``'s own-state rows (``pid``, ``prog``, ``values``) of a round's cut ``state``."""
    return state.filter((F.col("kind") == 0) & (F.col("prog") == p)).select("pid", "prog", "values")


_PACKED = T.StructType([T.StructField("prog", T.IntegerType()), T.StructField("local", T.BinaryType()),
                        T.StructField("values", T.BinaryType())])
_PACKED_PA = pa.schema([("prog", pa.int32()), ("local", pa.binary()), ("values", pa.binary())])


def _finish(kept: Sequence[DataFrame | None], eblocks: DataFrame, blocks: int,
            files: tuple[str | None, str] | None = None) -> DataFrame:
    """Every program's last state beside its block's ids: ``(prog, local, values)`` rows, ``local`` the
    block's int64 ids and ``values`` their states (:func:`_exploder` unpacks them). One cogroup of
    the kept states with the blocks' head rows (ids only: no CSR piece leaves the cache). ``files``:
    ``(root, token)`` of the rounds' block files, which each block's task removes."""
    states = functools.reduce(DataFrame.unionByName, [k for k in kept if k is not None])
    heads = eblocks.filter(F.col("part") == 0).select("pid", "ids")

    def pair(st: pa.Table, hd: pa.Table) -> pa.Table:
        if files is not None and hd.num_rows:
            worker_blocks.drop(files[0] or worker_blocks.worker_root(), files[1], int(hd.column("pid")[0].as_py()))
        if st.num_rows == 0 or hd.num_rows == 0:
            return _PACKED_PA.empty_table()
        ids = hd.column("ids")[0].as_py()
        return pa.table({"prog": st.column("prog").cast(pa.int32()),
                         "local": pa.array([ids] * st.num_rows, pa.binary()),
                         "values": st.column("values").cast(pa.binary())})

    return cogroup(states.repartition(blocks, "pid"), heads, pair, _PACKED)


def _width(prog: VertexProgram) -> int:
    """Columns of ``prog``'s state (0: one value per vertex)."""
    probe = prog.init(np.zeros(1, np.int64))
    return probe.shape[1] if probe.ndim == 2 else 0


def _value_schema(dtype: np.dtype, width: int) -> T.StructType:
    """The result schema (id, value) of a program's state of ``dtype`` and ``width`` columns."""
    value_t = T.ArrayType(T.IntegerType()) if width else (T.DoubleType() if dtype.kind == "f" else T.LongType())
    return T.StructType([T.StructField("id", T.LongType()), T.StructField("value", value_t)])


def _exploder(dtype: np.dtype, width: int) -> Any:
    """The ``mapInArrow`` function turning own-state rows (ids, values as binary) into (id, value) rows."""
    from lepton_spark.graph.arrow import state_table

    def explode(batches: Any) -> Any:
        for ids, vals in arrow.packed_rows(batches, dtype, width):
            yield from state_table(ids, vals).to_batches()

    return explode
