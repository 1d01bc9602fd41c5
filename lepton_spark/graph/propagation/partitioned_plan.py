"""The partitioned plan of :func:`~lepton_spark.graph.propagation.propagate` (docs/architecture.md §2.1).

The features never sit in one process. Vertices are hashed into ``B`` blocks, one per task slot (more
only when a block would exceed ``graph.block_max_bytes``), because every extra block adds shuffle
volume and no parallelism. Each block gets a label that Spark's hash partitioning sends to a
partition of its own (:func:`block_keys`), so every task holds exactly one block. Each block's
out-edges are packed once into a CSR block (rows = destinations, ordered by their block; cols = local
source index), stored as a few rows of whole CSR rows (pieces of about 2M entries: one row of
hundreds of MB per block ran the JVM out of heap), and cached, partitioned and sorted by block. A round is one cogroup of the incoming
partials with the cached edge blocks; the edges are neither reshuffled nor re-sorted. Each block
combines its partials into its features (numpy add, or max), multiplies its CSR block once, and emits
one partial per destination block, so partial sums are combined before the shuffle. The partials
leave Python as views of the product matrix, cut into binary values of about 64 KiB: the JVM moves
many small values much faster than a few values of hundreds of MB. With ``native_aggregate`` the
partials are rows instead of blobs and Spark sums them with ``vector_sum`` (Spark >= 4.3), which costs
one more shuffle per round.

The vertex programs' partitioned engine (:mod:`lepton_spark.graph.partitioned`) uses the same block
labels, numbering and cogroup (:func:`block_keys`, :func:`block_label`, :func:`number_in_blocks`,
:func:`cogroup`). With an operator cache the packed blocks outlive the call
(:class:`PartitionedBlocks`): the next layer over the same edges, and on a symmetric graph the
vertex programs of the same run (PageRank, components, LPA), use them instead of packing again.

``normalize="sym"`` (GCN's ``D^-1/2 (A + I) D^-1/2``) never builds a normalised edge table: the blocks
hold the graph's raw weights and each vertex's ``d^-1/2`` (its weighted in-degree plus one, summed in
the same aggregation as the in-degrees). A block scales its features by ``d^-1/2`` before it
multiplies, adds each vertex's scaled features to the partial it sends its own vertices (the unit
loop of ``A + I``, added in the round rather than stored as CSR entries, so the blocks stay the
graph's own), and finishes the sums it receives with its own ``d^-1/2``, as the broadcast plan does
on the driver. Normalising the edge table first (the former ``sym_edges``: two
semi-joins, an aggregation and two joins) cost four more shuffles of every edge: at 1M vertices /
19M edges on 2 cores, most of a 109 s preparation.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark import storage, task_writes
from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import arrow, kernels, resident, worker_blocks
from lepton_spark.graph.arrow import cell, list_to_matrix, matrix_to_list
from lepton_spark.graph.blocks import EdgeFiles, fault_sleep
from lepton_spark.graph.propagation.inputs import Inputs, check_features
from lepton_spark.graph.propagation.rounds import LineagePolicy, Rounds, RoundStore
from lepton_spark.graph.propagation.schemas import (
    EBLOCK,
    EBLOCK_PA,
    PARTIAL_BLOB,
    PARTIAL_BLOB_PA,
    PARTIAL_ROWS,
    PARTIAL_ROWS_PA,
    RESULT,
)
from lepton_spark.session import sql_conf

log = logging.getLogger(__name__)

#: SQL settings of the rounds' jobs. A round's shuffles have a fixed partition count (one block per
#: partition), so adaptive execution has nothing to re-plan; it only runs each shuffle's map stage as
#: a job of its own and plans again after it. A cogroup job over 2 cached blocks took 0.45 s without it
#: against 0.7 s with it (2 cores), and a partitioned PageRank runs 20 of them
ROUND_CONF = {"spark.sql.adaptive.enabled": "false"}
_PARTIAL_VALUE_BYTES = 64 << 10  # target size of one binary partial value
_RESULT_VALUE_BYTES = 4 << 20  # target size of one packed result value (features of many rows)
#: CSR entries per EBLOCK row. A block's CSR is cut into pieces of whole rows: one 136 MB row per block
#: (3M vertices / 63M entries in 6 blocks) ran a 4 GiB driver out of heap while the JVM copied it into
#: the cogroup's Arrow input (its row buffer grows by doubling), and the JVM moves several values of
#: tens of MB faster than one of hundreds
_PIECE_ENTRIES = 1 << 21


def _to_table(obj: Any) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    return pa.Table.from_pandas(obj, preserve_index=False)  # pyspark 3.5 cogroup hands pandas frames


def cogroup(left: DataFrame, right: DataFrame, fn: Callable[[pa.Table, pa.Table], pa.Table],
            schema: T.StructType) -> DataFrame:
    """``fn(left rows, right rows)`` per ``pid`` as Arrow tables (``applyInArrow``; pandas on pyspark 3.5)."""
    grouped = left.groupBy("pid").cogroup(right.groupBy("pid"))
    if hasattr(grouped, "applyInArrow"):
        return grouped.applyInArrow(fn, schema)

    def pandas_fn(lp: Any, rp: Any) -> Any:  # pyspark 3.5
        return fn(_to_table(lp), _to_table(rp)).to_pandas()

    return grouped.applyInPandas(pandas_fn, schema)


def block_keys(spark: SparkSession, blocks: int) -> list[int]:
    """One ``pid`` value per block such that ``hashpartitioning(pid, blocks)`` puts each in its own partition.

    The blocks are co-partitioned by Spark's hash partitioning (murmur3 of the value). Plain ids
    0..B-1 collide: with 8 blocks in 4 partitions one task got 4 blocks and another none, and 2
    blocks in 2 partitions shared one task. So block b is labelled with the smallest integer whose
    partition is b; Spark itself computes the partitions (``pmod(hash(k), B)``), so the labels match
    whatever hash it uses.
    """
    rows = spark.range(0, 64 * blocks + 64).select(
        F.col("id").cast("int").alias("k"),
        F.pmod(F.hash(F.col("id").cast("int")), F.lit(blocks)).alias("p"),
    ).collect()
    first: dict[int, int] = {}
    for r in rows:
        first[int(r["p"])] = min(first.get(int(r["p"]), int(r["k"])), int(r["k"]))
    if len(first) < blocks:  # a partition no small integer hashes to: plain ids still work, unevenly
        log.warning("propagate[partitioned]: no balanced block labels for %d blocks", blocks)
        return list(range(blocks))
    return [first[b] for b in range(blocks)]


def num_partitioned_blocks(size: int, slots: int, max_block_bytes: int) -> int:
    """Blocks for the partitioned plan: one per task slot, more only when a block would exceed the limit.

    Every block beyond that costs shuffle volume and buys no parallelism: a vertex receives one partial
    from every block that holds an in-neighbour of it. On the 1M-vertex/10M-edge benchmark graph the
    partials are 1.6 feature matrices per round with 2 blocks, 2.5 with 4 and 3.4 with 8.
    """
    return max(1, slots, math.ceil(size / max(1, max_block_bytes)))


# ----------------------------------------------------------------------------------- the edge blocks


def block_label(keys: list[int], col: str = "id", dense: bool = False) -> Column:
    """Each vertex's block label ``pid``: a hash of its ``id`` picks block ``b``, labelled ``keys[b]``
    (:func:`block_keys`). Both partitioned engines (propagation and vertex programs) place vertices by it.

    ``dense`` (ids known to be exactly 0..n-1, :func:`dense_layout`): block ``id mod B`` instead of a hash.
    """
    pick = F.col(col) if dense else F.xxhash64(col)
    block = (F.pmod(pick, F.lit(len(keys))) + 1).cast("int")
    return F.element_at(F.array(*[F.lit(k) for k in keys]), block).cast("int")


def dense_place(keys: list[int], col: str = "id") -> tuple[Column, Column]:
    """``(block label, local index)`` of the id in ``col`` when the ids are exactly 0..n-1: block
    ``id mod B``, index ``id div B`` (ascending ids within a block, as :func:`number_in_blocks` numbers them)."""
    return block_label(keys, col, dense=True), (F.col(col) / F.lit(len(keys))).cast("int")


def dense_layout(spark: SparkSession, n: int, keys: list[int]) -> DataFrame:
    """``(id, pid, local)`` of vertices whose ids are exactly 0..n-1 (:func:`dense_place`). Pure
    arithmetic: no window over the vertices, and the edges find their blocks without a lookup."""
    pid, local = dense_place(keys)
    return spark.range(n).select(F.col("id"), pid.alias("pid"), local.alias("local"))


def number_in_blocks(v: DataFrame, policy: LineagePolicy) -> DataFrame:
    """The vertices ``v`` (``id``, ``pid``) as ``(id, pid, local)``, ``local`` numbering a block's vertices
    0.. in id order, cut. The window reads the ids alone (never the features)."""
    return policy.cut(v.select("id", "pid").withColumn(
        "local", (F.row_number().over(Window.partitionBy("pid").orderBy("id")) - 1).cast("int")))


def _assign_blocks(x0: DataFrame, keys: list[int], policy: LineagePolicy) -> tuple[DataFrame, DataFrame]:
    """``(vfull, vl)``: ``x0`` with each vertex's block label ``pid``, cut; and the vertices'
    ``(id, pid, local)`` (:func:`number_in_blocks`).

    Numbering the feature rows themselves shuffled and sorted the whole feature table (1M x 64: about
    10 s of the preparation) only to attach an index that a block recovers from the ids it holds
    (:meth:`_BlockStep._features`, round 0).
    """
    vfull = _label_features(x0, keys, policy)
    return vfull, number_in_blocks(vfull, policy)


def _label_features(x0: DataFrame, keys: list[int], policy: LineagePolicy, dense: bool = False) -> DataFrame:
    """``x0`` with each vertex's block label ``pid``, cut."""
    return policy.cut(x0.withColumn("pid", block_label(keys, dense=dense)))


def _pack_block(vt: pa.Table, et: pa.Table, *, piece_entries: int = _PIECE_ENTRIES, scaled: bool = False,
                degrees_from_out: bool = False) -> pa.Table:
    """One block's vertices ``(pid, id, local[, indeg, deg])`` and out-edges as ``EBLOCK`` rows: part 0
    holds the vertices, and each part a piece of about ``piece_entries`` CSR entries (whole rows).

    ``scaled`` (``normalize="sym"``): ``deg`` (weighted in-degree plus the unit loop of A + I) becomes
    the block's ``dinv``. The loops themselves are not in the CSR: a round adds each vertex's own
    scaled features to the block's partial for its own vertices (:meth:`_BlockStep.apply`), so the
    blocks hold the graph's edges only and the vertex programs can run on them too
    (:class:`PartitionedBlocks`).
    ``degrees_from_out``: the edges are symmetric (every (u, v) has its (v, u), same weight, once),
    so a vertex's in-degree is its out-degree, counted here from the block's own out-edges instead
    of arriving as ``indeg`` / ``deg`` columns (an aggregation of every edge by its target).

    The CSR rows are the edges' targets ordered by (target block, local index), the columns the
    block's local source indices. Weights that are null (NaN here), NaN or infinite are counted in
    ``bad_weights``, for the driver to reject the graph.
    """
    if vt.num_rows == 0:
        return pa.Table.from_pylist([], schema=EBLOCK_PA)
    pid = int(vt.column("pid")[0].as_py())
    order = np.argsort(vt.column("local").to_numpy(), kind="stable")
    ids = vt.column("id").to_numpy()[order]
    if et.num_rows:
        tgt_pid = et.column("dpid").to_numpy().astype(np.int64)
        tgt_loc = et.column("dlocal").to_numpy().astype(np.int64)
        src_loc = et.column("slocal").to_numpy().astype(np.int32)
        wt = et.column("weight").to_numpy(zero_copy_only=False)  # a null weight arrives as NaN
    else:
        tgt_pid = tgt_loc = np.zeros(0, np.int64)
        src_loc, wt = np.zeros(0, np.int32), np.zeros(0, np.float32)
    key, stride = row_keys(tgt_pid, tgt_loc)
    if degrees_from_out:
        indeg = wdeg = None
    else:
        indeg = vt.column("indeg").to_numpy().astype(np.int32)[order]
        wdeg = vt.column("wdeg").to_numpy(zero_copy_only=False)[order] if scaled else None
    return _pack_arrays(pid, ids, src_loc, key, stride, wt, indeg=indeg, wdeg=wdeg, piece_entries=piece_entries,
                        scaled=scaled)


def row_keys(tgt_pid: np.ndarray, tgt_loc: np.ndarray) -> tuple[np.ndarray, int]:
    """``(key, stride)``: each edge's CSR row key ``target block label * stride + target's local index``
    (int64), which orders the rows by (target block, local index); ``stride`` is the smallest that
    keeps the keys distinct, so they stay below 2**32 (a radix sort, :func:`kernels.stable_argsort`)
    whenever they can, else 2**32. A row's target is ``(key // stride, key % stride)``. Both
    partitioned engines' packers key their rows so."""
    stride = int(tgt_loc.max()) + 1 if len(tgt_loc) else 1
    if len(tgt_pid) and (int(tgt_pid.max()) + 1) * stride >= 1 << 32:
        stride = 1 << 32
    return tgt_pid.astype(np.int64) * stride + tgt_loc.astype(np.int64), stride


def _dense_block_ids(b: int, nb: int, n: int) -> np.ndarray:
    """The ids of block ``b`` of ``nb`` when the ids are exactly 0..n-1 (:func:`dense_place`): ``b, b + nb,
    ...`` below ``n``, in local order."""
    return np.arange(b, n, nb, dtype=np.int64)


def _pack_arrays(pid: int, ids: np.ndarray, src_loc: np.ndarray, key: np.ndarray, stride: int, wt: np.ndarray, *,
                 indeg: np.ndarray | None = None, wdeg: np.ndarray | None = None,
                 piece_entries: int = _PIECE_ENTRIES, scaled: bool = False) -> pa.Table:
    """:func:`_pack_block` on arrays: the block's vertex ``ids`` (in local order) and, per out-edge, its
    source's local index, its target's row ``key`` (target block label * ``stride`` + target's local
    index) and weight. ``indeg`` (and ``wdeg`` when ``scaled``) None: counted from the out-edges (the
    edges are symmetric)."""
    n = len(ids)
    bad_weights = int(np.count_nonzero(~np.isfinite(wt)))
    if indeg is None:
        indeg = np.bincount(src_loc, minlength=n).astype(np.int32)
        wdeg = np.bincount(src_loc, weights=wt.astype(np.float64), minlength=n) if scaled else None
    dinv = (1.0 / np.sqrt(wdeg + 1.0)).astype(np.float32) if scaled else np.zeros(0, np.float32)
    if len(wt):
        rows, indptr, indices, data = kernels.csr_from_pairs(key, src_loc, wt)
        tgt, tgt_local = (rows // stride).astype(np.int32), (rows % stride).astype(np.int32)
    else:
        tgt = tgt_local = indices = np.zeros(0, np.int32)
        indptr, data = np.zeros(1, np.int64), np.zeros(0, np.float32)
    indices, data = indices.astype(np.int32, copy=False), data.astype(np.float32, copy=False)
    rows_out = []
    for part, (a, b) in enumerate(row_pieces(indptr, piece_entries)):
        lo, hi = int(indptr[a]), int(indptr[b])
        head = part == 0
        rows_out.append({
            "pid": pid, "part": part, "n": n, "ids": ids.astype(np.int64).tobytes() if head else b"",
            "indeg": indeg.tobytes() if head else b"", "dinv": dinv.tobytes() if head else b"",
            "tgt": tgt[a:b].tobytes(), "tgt_local": tgt_local[a:b].tobytes(),
            "indptr": (indptr[a:b + 1] - lo).tobytes(), "indices": indices[lo:hi].tobytes(),
            "data": data[lo:hi].tobytes(), "bad_weights": bad_weights if head else 0})
    return pa.Table.from_pylist(rows_out, schema=EBLOCK_PA)


def row_pieces(indptr: np.ndarray, max_entries: int = _PIECE_ENTRIES) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of a CSR cut into pieces of whole rows of about ``max_entries`` entries
    (a row with more entries is a piece of its own); at least one piece, empty when there are no rows."""
    nrows, m = len(indptr) - 1, int(indptr[-1])
    cuts = np.searchsorted(indptr, np.arange(max_entries, m, max_entries), side="left")
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, nrows), [nrows]])).astype(np.int64)
    return [(0, 0)] if nrows == 0 else [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def head_and_pieces(eb: pa.Table) -> tuple[pa.Table, list[pa.Table]]:
    """A block's ``part`` 0 row (its vertices) and all its rows in part order (its CSR pieces)."""
    order = np.argsort(eb.column("part").to_numpy(), kind="stable")
    pieces = [eb.slice(int(i), 1) for i in order]
    return pieces[0], pieces


def _pack_edge_blocks(vl: DataFrame, edges: DataFrame, parts: int, sym: bool = False,
                      broadcast_ids: bool = False, symmetric: bool = False, dense_n: int | None = None,
                      dense_keys: list[int] | None = None, files: EdgeFiles | None = None) -> DataFrame:
    """The edge blocks (``EBLOCK`` rows) of the vertices ``vl`` (id, pid, local), persisted.

    ``broadcast_ids``: the two lookups of every edge's (block, index) by src and dst read a broadcast
    copy of ``vl`` (16 bytes a vertex) instead of shuffling the edges twice (at 1M vertices / 19M edges
    on 2 cores those two shuffles were about half the preparation).

    ``sym``: the blocks also carry every vertex's ``d^-1/2`` (``d``: weighted in-degree + 1), for GCN's
    operator (its unit loops are added by the rounds, see the module docstring).

    ``symmetric``: the edges are symmetric, and each block counts its vertices' in-degrees as their
    out-degrees (:func:`_pack_block`); otherwise one aggregation of every edge by its target counts
    them (at 1M vertices / 19M edges on 2 cores: about 10 s of a 35 s packing job, plus a join). With
    ``dense_n`` too, the blocks are packed from the streamed edges alone (:func:`_stream_pack`), or,
    given the Parquet ``files`` the edges were read from, from those files (:func:`_file_pack`).

    Edges whose src or dst is not a vertex are dropped by the joins. Cached partitioned and sorted by
    pid: each round's cogroup reads it with no exchange and no sort. The partials are repartitioned
    explicitly into the same partitions, so that co-partitioning never rests on how a Spark version
    picks the partition count of the cogroup's shuffle.
    """
    if dense_n is not None:  # ids 0..n-1: an edge's blocks and indices are arithmetic on its ids
        (spid, slocal), (dpid, dlocal) = dense_place(dense_keys, "src"), dense_place(dense_keys, "dst")
        e = edges.filter(F.col("src").between(0, dense_n - 1) & F.col("dst").between(0, dense_n - 1)).select(
            spid.alias("spid"), slocal.alias("slocal"), dpid.alias("dpid"), dlocal.alias("dlocal"), "weight")
    else:
        s, d = endpoint_lookups(vl, broadcast_ids)
        e = edges.join(s, "src").join(d, "dst").select("spid", "slocal", "dpid", "dlocal", "weight")
    if dense_n is not None and symmetric:
        if files is not None and files.usable():
            return _file_pack(vl.sparkSession, files, parts, dense_n, dense_keys, sym)
        return _stream_pack(e, parts, dense_n, dense_keys, sym)
    vside = vl.select("pid", "id", "local")
    if not symmetric:
        aggs = [F.count(F.lit(1)).cast("int").alias("indeg")]
        if sym:
            aggs.append(F.sum(F.col("weight").cast("double")).alias("wdeg"))
        indeg = e.groupBy(F.col("dpid").alias("pid"), F.col("dlocal").alias("local")).agg(*aggs)
        vside = vside.join(indeg, ["pid", "local"], "left").select(
            "pid", "id", "local", F.coalesce("indeg", F.lit(0)).alias("indeg"),
            *([F.coalesce("wdeg", F.lit(0.0)).alias("wdeg")] if sym else []))
    # the piece size is read here, on the driver, and travels with the function
    pack = functools.partial(_pack_block, piece_entries=_PIECE_ENTRIES, scaled=sym, degrees_from_out=symmetric)
    eblocks = cogroup(vside, e.withColumnRenamed("spid", "pid"), pack, EBLOCK)
    return cache_blocks(eblocks, parts)


def _stream_pack(e: DataFrame, parts: int, n: int, keys: list[int], sym: bool) -> DataFrame:
    """The edge blocks of a symmetric graph whose ids are exactly 0..n-1, packed without a cogroup.

    Such a block needs nothing but its own out-edges: its vertices are arithmetic (block ``b`` holds
    ids ``b, b + B, ...``) and its in-degrees are its out-degrees. So the edges are only repartitioned
    by block and each partition packs what it streams (``mapInArrow``); a cogroup with the vertices
    would sort every edge by its block label first -- at 1M vertices / 19M edges on 2 cores that sort
    spilled 0.5 GB a task and was most of the packing job. One marker row per block (``slocal`` -1) rides
    along, so that a block without out-edges still gets its vertices' row.
    """
    types = dict(e.dtypes)
    marks = e.sparkSession.range(len(keys)).select(  # block b's marker: id b is in block b
        block_label(keys, dense=True).cast(types["spid"]).alias("spid"),
        *[F.lit(-1).cast(types[c]).alias(c) for c in ("slocal", "dpid", "dlocal")],
        F.lit(None).cast(types["weight"]).alias("weight"))
    pack = functools.partial(_pack_streamed, n=n, keys=tuple(keys), piece_entries=_PIECE_ENTRIES, scaled=sym)
    rows = e.unionByName(marks).withColumnRenamed("spid", "pid").repartition(parts, "pid")
    return cache_blocks(rows.mapInArrow(pack, EBLOCK), parts)


#: the pieces of edges a file-reading task sends each block (:func:`_file_pack`): this many edges read at a time
_FILE_BATCH_EDGES = 1 << 20
_FILE_PIECES = T.StructType([
    T.StructField("pid", T.IntegerType()), T.StructField("slocal", T.BinaryType()),
    T.StructField("key", T.BinaryType()), T.StructField("weight", T.BinaryType()),
])
_FILE_PIECES_PA = pa.schema([(f.name, pa.int32() if f.name == "pid" else pa.binary()) for f in _FILE_PIECES])


def _file_pack(spark: SparkSession, files: EdgeFiles, parts: int, n: int, keys: list[int], sym: bool) -> DataFrame:
    """The edge blocks of a symmetric graph whose ids are exactly 0..n-1, packed from the Parquet
    ``files`` its edges were read from (:class:`~lepton_spark.graph.blocks.EdgeFiles`).

    The same blocks as :func:`_stream_pack`, without a row of an edge ever passing through the JVM:
    one task per file reads it with pyarrow and sends each block its out-edges as a few binary values
    (about a million edges each: source's local index, target's row key, weight), and each block
    concatenates what it receives and packs it. Converting the edge rows to Arrow and shuffling them
    row by row was most of the packing: at 1M vertices / 19M edges on 2 cores, a scan feeding 19M rows
    of three columns to a ``mapInArrow`` alone took about 4 s and the row shuffle about 2 s more (the
    packing job went 13.6 -> 8.9 s). Every edge is read once, by the task of its file, so this scales
    with the files as the DataFrame path does with partitions. One empty piece per block rides along,
    so that a block without edges still gets its vertices' row.
    """
    paths = files.file_paths()
    log.info("propagate[partitioned]: packing the edge blocks from %d Parquet files of %s", len(paths), files.path)
    stride = -(-n // len(keys))  # local indices are below ceil(n / B)
    wide = (max(keys) + 1) * stride >= 1 << 31  # row keys as int64 (else int32)
    read = functools.partial(_read_pieces, files=files, paths=tuple(paths), n=n, keys=tuple(keys), stride=stride,
                             wide=wide)
    pieces = spark.range(0, len(paths), 1, max(1, len(paths))).mapInArrow(read, _FILE_PIECES)
    marks = spark.range(len(keys)).select(block_label(keys, dense=True).alias("pid"),
                                          *[F.lit(bytearray()).alias(c) for c in ("slocal", "key", "weight")])
    pack = functools.partial(_pack_pieces, n=n, keys=tuple(keys), stride=stride, wide=wide,
                             piece_entries=_PIECE_ENTRIES, scaled=sym)
    rows = pieces.unionByName(marks).repartition(parts, "pid")
    return cache_blocks(rows.mapInArrow(pack, EBLOCK), parts)


def _read_pieces(batches: Any, *, files: EdgeFiles, paths: tuple[str, ...], n: int, keys: tuple[int, ...],
                 stride: int, wide: bool) -> Any:
    """:func:`_file_pack`'s reading task: its input rows are file numbers; it reads those files in
    batches and yields, per batch and block, that block's out-edges (``src mod B`` is the block) as
    binary arrays: int32 source local index (``src div B``), the target's row key (its block label
    * ``stride`` + ``dst div B``; int64 when ``wide``, else int32), float32 weight (NaN for a null).
    Edges with an endpoint outside 0..n-1 are left out, as the DataFrame path's filter does."""
    nb, labels = len(keys), np.asarray(keys, dtype=np.int64)
    key_t = np.int64 if wide else np.int32
    for batch in batches:
        for i in batch.column("id").to_numpy():
            for src, dst, wt in files.read_file(paths[int(i)], _FILE_BATCH_EDGES):
                ok = (src >= 0) & (src < n) & (dst >= 0) & (dst < n)
                if not ok.all():
                    src, dst, wt = src[ok], dst[ok], wt[ok]
                block = src % nb
                order = kernels.stable_argsort(block)
                bounds = np.searchsorted(block[order], np.arange(nb + 1))
                slocal = (src // nb).astype(np.int32)[order]
                key = (labels[dst % nb] * stride + dst // nb).astype(key_t)[order]
                wt = wt[order]
                rows = [{"pid": keys[b], "slocal": slocal[lo:hi].tobytes(), "key": key[lo:hi].tobytes(),
                         "weight": wt[lo:hi].tobytes()}
                        for b, (lo, hi) in enumerate(itertools.pairwise(bounds)) if hi > lo]
                if rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=_FILE_PIECES_PA)


def _pack_pieces(batches: Any, *, n: int, keys: tuple[int, ...], stride: int, wide: bool, piece_entries: int,
                 scaled: bool) -> Any:
    """:func:`_file_pack`'s packing task: every block in the partition (one, by the block labels)
    packed by :func:`_pack_arrays` from the edge pieces it received and its arithmetic vertices."""
    by_pid: dict[int, list[tuple[Any, Any, Any]]] = {}
    for batch in batches:
        for pid, *cells in zip(batch.column("pid").to_pylist(), *(arrow.binary_cells(batch.column(c))
                                                                   for c in ("slocal", "key", "weight")),
                               strict=True):
            by_pid.setdefault(int(pid), []).append(tuple(cells))
    nb, key_t = len(keys), np.int64 if wide else np.int32
    for pid, pieces in by_pid.items():
        slocal, key, wt = (np.concatenate([np.frombuffer(p[j], t) for p in pieces])
                           for j, t in enumerate((np.int32, key_t, np.float32)))
        yield from _pack_arrays(pid, _dense_block_ids(keys.index(pid), nb, n), slocal, key, stride, wt, piece_entries=piece_entries,
                                scaled=scaled).to_batches()


def cache_blocks(eblocks: DataFrame, parts: int) -> DataFrame:
    """Packed block rows as the rounds read them: hash-partitioned by ``pid`` into ``parts`` partitions
    (one block each, :func:`block_keys`), sorted by ``(pid, part)``, persisted; a round's cogroup then
    reads them with no exchange and no sort. Both partitioned engines cache their blocks so."""
    return eblocks.repartition(parts, "pid").sortWithinPartitions("pid", "part").persist()


def _pack_streamed(batches: Any, *, n: int, keys: tuple[int, ...], piece_entries: int,
                   scaled: bool) -> Any:
    """:func:`_stream_pack`'s ``mapInArrow`` function: every block in the partition (one, by the block
    labels) packed by :func:`_pack_block` from its edges and its arithmetic vertices."""
    batches = list(batches)
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    pids = table.column("pid").to_numpy()
    blocks = np.unique(pids)
    for pid in blocks:
        mine = table if len(blocks) == 1 else table.filter(pa.array(pids == pid))
        edges = mine.filter(pc.greater_equal(mine.column("slocal"), 0))
        ids = _dense_block_ids(keys.index(int(pid)), len(keys), n)
        vt = pa.table({"pid": np.full(len(ids), pid, np.int32), "id": ids,
                       "local": np.arange(len(ids), dtype=np.int32)})
        yield from _pack_block(vt, edges, piece_entries=piece_entries, scaled=scaled,
                               degrees_from_out=True).to_batches()


def endpoint_lookups(vl: DataFrame, broadcast_ids: bool) -> tuple[DataFrame, DataFrame]:
    """The vertices' ``(id, pid, local)`` as the edges' source and target lookups, ``(src, spid, slocal)``
    and ``(dst, dpid, dlocal)``; broadcast when ``broadcast_ids`` (16 bytes a vertex on every task,
    no shuffle of the edges). Both partitioned engines (propagation and vertex programs) join by them."""
    s = vl.select(F.col("id").alias("src"), F.col("pid").alias("spid"), F.col("local").alias("slocal"))
    d = vl.select(F.col("id").alias("dst"), F.col("pid").alias("dpid"), F.col("local").alias("dlocal"))
    return (F.broadcast(s), F.broadcast(d)) if broadcast_ids else (s, d)


def _count_blocks(eblocks: DataFrame) -> int:
    """The number of edge blocks (the job that caches them); bad weights unpersist them and raise."""
    stats = eblocks.agg(F.sum(F.when(F.col("part") == 0, 1).otherwise(0)).alias("nb"),
                        F.sum("bad_weights").alias("bad")).first()
    if stats["bad"]:
        eblocks.unpersist()
        raise InvalidGraphError(f"propagate: {int(stats['bad'])} edges have a null, NaN or infinite weight")
    return int(stats["nb"])


# ----------------------------------------------------------------------------------------- a round


@dataclass(frozen=True)
class _State:
    """The partials addressed to the blocks after a round, and how a block must read them."""

    df: DataFrame  # pid + (local, features) rows, or (local, values) binary partials
    rows: bool  # one row per vertex (the features at round 0, natively summed partials)
    mean_pending: bool  # the block still divides by its in-degrees (agg mean)
    sym_pending: bool = False  # the block still scales the sums by its d^-1/2 (normalize="sym")
    by_id: bool = False  # rows carry ``id`` instead of ``local`` (the features at round 0)
    # the round's cogroup not yet run: (its partials input, its block function); a save may run it in
    # tasks that write their own output (_save_in_tasks)
    planned: tuple[DataFrame, Callable[[pa.Table, pa.Table], pa.Table]] | None = None
    round_no: int = 0  # the round that made it (0: the features); its blocks' own partials may be files


@dataclass(frozen=True)
class _BlockStep:
    """What one block does in a round (:meth:`apply` is the function of the round's cogroup).

    It combines the partials addressed to it into its features (a row per vertex, or numpy add / max
    of binary partials), divides by the in-degrees when a mean is pending (scales by ``d^-1/2`` when
    a ``sym`` round is pending), and then either returns its features (``final``) or multiplies its
    CSR block (``sym``: after scaling by ``d^-1/2``) and emits one partial per destination block.
    """

    dim: int
    agg: str
    native: bool
    final: bool
    rows: bool
    mean_pending: bool
    delay: float  # fault-injection sleep per task (tests only)
    step_rows: int  # rows per binary partial value
    result_rows: int  # rows per packed result value (final)
    sym: bool = False
    sym_pending: bool = False
    by_id: bool = False
    pre: Callable[[np.ndarray], np.ndarray] | None = None  # applied to the feature rows a block receives (by_id)
    # where the partial for the block's own vertices is kept instead of sent through the shuffle, as
    # (root or None for the executor's SparkFiles root, token): read from ``own_in`` (the previous
    # round's), written to ``own_out`` (this round's); None: none kept (:func:`run`, ``own_files``)
    own_in: tuple[str | None, str] | None = None
    own_out: tuple[str | None, str] | None = None
    round_no: int = 0  # the round this step computes (final: the round after the last)

    def function(self) -> Callable[[pa.Table, pa.Table], pa.Table]:
        """:meth:`apply` as a function of two parameters, for ``cogroup``.

        PySpark counts a cogroup function's parameters with ``inspect.getfullargspec``, which counts
        the ``self`` of a bound method or callable object: with three it would pass the group key too.
        """
        return functools.partial(_BlockStep.apply, self)

    def apply(self, incoming: pa.Table, eb: pa.Table) -> pa.Table:
        """The block's output for one round: its partials for the other blocks, or (final) its features."""
        if self.delay and not self.final:
            time.sleep(self.delay)
        if eb.num_rows == 0:
            return pa.Table.from_pylist([], schema=PARTIAL_BLOB_PA if self.final else self._partial_schema)
        head, pieces = head_and_pieces(eb)
        pid = int(head.column("pid")[0].as_py())
        own_in = None
        if self.own_in is not None:  # the partial the block's previous round kept for its own vertices
            root, token = self.own_in[0] or worker_blocks.worker_root(), self.own_in[1]
            own_in = worker_blocks.load(root, token, _own_key(self.round_no - 1, pid), ("local", "values"))
            if own_in is None:
                return _missed(pid)
            if token != _STORE_TOKEN:  # executor files: the one before is read by no retry of this task
                worker_blocks.drop(root, token, _own_key(self.round_no - 2, pid))
                if self.final:
                    worker_blocks.drop(root, token, _own_key(self.round_no - 1, pid))
        x = self._features(incoming, head, own_in)
        if self.final:  # packed: (ids, features) of _RESULT_VALUE_BYTES values (finish unpacks them)
            ids = cell(head, "ids", np.int64)
            bounds = np.unique(np.r_[np.arange(0, len(ids), self.result_rows), len(ids)]).astype(np.int64)
            return pa.table({"pid": pa.array(np.full(len(bounds) - 1, int(head.column("pid")[0].as_py()), np.int32)),
                             "local": arrow.binary_segments(ids, bounds),
                             "values": arrow.binary_segments(np.ascontiguousarray(x, np.float32), bounds)})
        out = []
        own: np.ndarray | None = None
        kept: list[tuple[np.ndarray, np.ndarray]] = []  # own partials kept in the block's file (own_out)
        if self.sym:  # D^-1/2 (A + I) D^-1/2: the unit loop sends each vertex's scaled features to itself
            x = x * cell(head, "dinv", np.float32)[:, None]
            own = x.copy()  # the block's partial for its own vertices: its loops plus its in-block edges
        for piece in pieces:  # each piece's rows are whole target rows: their partials never overlap
            y = kernels.block_apply(cell(piece, "indptr", np.int64), cell(piece, "indices", np.int32),
                                    cell(piece, "data", np.float32), x, "max" if self.agg == "max" else "sum")
            tgt, tgt_local = cell(piece, "tgt", np.int32), cell(piece, "tgt_local", np.int32)
            if own is None:
                if self.own_out is None:
                    out.append(self._partials(y, tgt, tgt_local))
                    continue
                a, b = int(np.searchsorted(tgt, pid, "left")), int(np.searchsorted(tgt, pid, "right"))
                kept.append((tgt_local[a:b], y[a:b]))
                out.extend(self._partials(y[lo:hi], tgt[lo:hi], tgt_local[lo:hi])
                           for lo, hi in ((0, a), (b, len(tgt))) if hi > lo)
                continue
            # rows are ordered by target block: the own block's rows are one range, added to the
            # loops' partial (one partial row per own vertex, as when the loops were CSR entries)
            a, b = int(np.searchsorted(tgt, pid, "left")), int(np.searchsorted(tgt, pid, "right"))
            own[tgt_local[a:b]] += y[a:b]
            out.extend(self._partials(y[lo:hi], tgt[lo:hi], tgt_local[lo:hi])
                       for lo, hi in ((0, a), (b, len(tgt))) if hi > lo)
        if own is not None and self.own_out is not None:
            kept.append((np.arange(len(own), dtype=np.int32), own))
        elif own is not None:
            out.append(self._partials(own, np.full(len(own), pid, np.int32), np.arange(len(own), dtype=np.int32)))
        if self.own_out is not None:
            local = np.concatenate([k[0] for k in kept]) if kept else np.zeros(0, np.int32)
            vals = np.concatenate([k[1] for k in kept]) if kept else np.zeros((0, self.dim), np.float32)
            root = self.own_out[0] or worker_blocks.worker_root()
            if not worker_blocks.store(root, self.own_out[1], _own_key(self.round_no, pid),
                                       {"local": local.astype(np.int32, copy=False),
                                        "values": np.ascontiguousarray(vals, np.float32)}):
                return _missed(pid)  # nowhere to keep it: the driver ships them all (a restart)
        if not out:
            return pa.Table.from_pylist([], schema=self._partial_schema)
        return out[0] if len(out) == 1 else pa.concat_tables([t.cast(self._partial_schema) for t in out])

    @property
    def _partial_schema(self) -> pa.Schema:
        return PARTIAL_ROWS_PA if self.native else PARTIAL_BLOB_PA

    def _features(self, incoming: pa.Table, eb: pa.Table,
                  own: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The block's features: its incoming rows or partials (and ``own``, the partial it kept for its own
        vertices) combined, divided when a mean is pending."""
        n, dim = int(eb.column("n")[0].as_py()), self.dim
        if self.rows:
            x = np.zeros((n, dim), dtype=np.float32)
            if incoming.num_rows:
                if self.by_id:  # the block's ids are sorted (local = rank by id): an id's index is its rank
                    ids, got = cell(eb, "ids", np.int64), incoming.column("id").to_numpy()
                    local = np.searchsorted(ids, got)
                    if np.any(local >= n) or not np.array_equal(ids[np.minimum(local, n - 1)], got):
                        raise InvalidGraphError("propagate[partitioned]: a vertex id is not in the block it was "
                                                "placed in (were the ids promised dense, 0..n-1, and are not?)")
                else:
                    local = incoming.column("local").to_numpy()
                rows = list_to_matrix(incoming.column("features"), dim)
                x[local] = rows if self.pre is None else self.pre(rows)
        else:
            locs = arrow.binary_cells(incoming.column("local"))
            vals = arrow.binary_cells(incoming.column("values"))
            partials = [(np.frombuffer(lb, np.int32), np.frombuffer(vb, np.float32).reshape(-1, dim))
                        for lb, vb in zip(locs, vals)]
            if own is not None and len(own["local"]):
                partials.append((np.asarray(own["local"]), np.asarray(own["values"]).reshape(-1, dim)))
            x = kernels.combine(n, dim, partials, self.agg)
        if self.mean_pending:
            x = x / np.maximum(cell(eb, "indeg", np.int32), 1).astype(np.float32)[:, None]
        if self.sym_pending:
            x *= cell(eb, "dinv", np.float32)[:, None]
        return x

    def _partials(self, y: np.ndarray, tgt: np.ndarray, tgt_local: np.ndarray) -> pa.Table:
        """The product rows ``y`` as partials for their target blocks (rows, or binary values)."""
        if self.native:
            return pa.table({"pid": pa.array(tgt), "local": pa.array(tgt_local), "features": matrix_to_list(y)})
        if not len(tgt):
            return pa.Table.from_pylist([], schema=self._partial_schema)
        # partials per target block, as views of y, cut into values of about 64 KiB: the JVM copies
        # many small binary values much faster than a few of hundreds of MB (measured 3.2 against
        # 5-7 s per round at 1M vertices x 64 dims)
        bounds = arrow.run_bounds(tgt, self.step_rows)
        return pa.table({
            "pid": pa.array(tgt[bounds[:-1]], pa.int32()),
            "local": arrow.binary_segments(tgt_local, bounds),
            "values": arrow.binary_segments(y, bounds),
        })


_WRITTEN = T.StructType([T.StructField("rows", T.LongType()), T.StructField("missed", T.LongType())])


def _write_block_output(incoming: pa.Table, eb: pa.Table, *, step: Callable[[pa.Table, pa.Table], pa.Table],
                        directory: str) -> pa.Table:
    """A cogroup function: ``step``'s output for the block, written as the task's file in ``directory``
    (uncompressed, as the round store's Spark writes); returns its row count and its miss rows
    (:func:`_missed`)."""
    out = step(incoming, eb)
    if out.num_rows:
        task_writes.write_task_file(out, directory, compression="none")
    missed = int(np.count_nonzero(out.column("pid").to_numpy() < 0)) if out.num_rows else 0
    return pa.table({"rows": pa.array([out.num_rows], pa.int64()), "missed": pa.array([missed], pa.int64())})


_STORE_TOKEN = "store"  # the own partials of a round in the round store (kept with its state, never dropped)


def _own_key(round_no: int, pid: int) -> str:
    """The name of block ``pid``'s own partial of round ``round_no`` in its executor's files."""
    return f"r{int(round_no)}-{int(pid)}"


def _missed(pid: int) -> pa.Table:
    """Block ``pid`` found no file of its previous round's own partial (or could not write one): one
    row with a negative ``pid`` (no block's label), which :func:`_check_files` counts."""
    return pa.table({"pid": pa.array([-1 - int(pid)], pa.int32()), "local": pa.array([b""], pa.binary()),
                     "values": pa.array([b""], pa.binary())})


class _OwnFilesMissed(RuntimeError):
    """A block of a round found no own-partial file of its previous round on its executor."""


def _check_files(cut: DataFrame) -> None:
    """Raise :class:`_OwnFilesMissed` when a block of the cut round answered with a miss row (one small
    job over the stored round, or the job that runs and stores a lazy local cut)."""
    _raise_if_missed(cut.filter(F.col("pid") < 0).count())


def _raise_if_missed(missed: int) -> None:
    if missed:
        raise _OwnFilesMissed(f"{missed} blocks found no partial of their own from the round before")


class _PartitionedRounds:
    """The partitioned plan's rounds (a :class:`~.rounds.RoundPlan`): the state is the partials in flight.

    Lazy: a round only plans its cogroup; it runs in the job of the next lineage cut or save.
    """

    name = "partitioned"
    lazy = True
    own_root: str | None = None  # where the blocks keep their own partials; None: their executor's SparkFiles root

    def __init__(self, inp: Inputs, eblocks: DataFrame, parts: int, agg: str, native: bool,
                 policy: LineagePolicy, sym: bool = False,
                 pre: Callable[[np.ndarray], np.ndarray] | None = None, own_files: bool = False,
                 own_store: RoundStore | None = None) -> None:
        self.spark, self.eblocks, self.parts, self.policy, self.sym = inp.spark, eblocks, parts, policy, sym
        # the blocks keep their own partials (:func:`run`): every round is cut, or saved, and checked for
        # miss rows before the next reads them (_OwnFilesMissed); in ``own_store``'s rounds when given
        self.own, self.own_store, self.token = own_files and not native, own_store, uuid.uuid4().hex
        self.pre = pre  # the by-id feature rows' width-keeping function (round 0's input)
        self.dim, self.agg, self.native = inp.dim, agg, native
        self.rows = inp.n  # vertices updated (as in the broadcast plan); counting partials would cost a job
        self.delay = fault_sleep()
        self.step_rows = max(1, _PARTIAL_VALUE_BYTES // (4 * inp.dim))
        self.result_rows = max(1, _RESULT_VALUE_BYTES // (4 * inp.dim))

    def _block_step(self, state: _State, final: bool) -> Callable[[pa.Table, pa.Table], pa.Table]:
        k = state.round_no + 1
        return _BlockStep(self.dim, self.agg, self.native, final, state.rows, state.mean_pending, self.delay,
                          self.step_rows, self.result_rows, self.sym, state.sym_pending, state.by_id,
                          self.pre if state.by_id else None, self._own(k - 1), None if final else self._own(k),
                          k).function()

    def _own(self, k: int) -> tuple[str | None, str] | None:
        """Where round ``k``'s own partials are kept (None: round 0, the features, or none kept)."""
        if not self.own or k < 1:
            return None
        if self.own_store is not None:
            return str(storage.local_dir(self.own_store.path(k, "own"))), _STORE_TOKEN
        return self.own_root, self.token

    def step(self, state: _State) -> _State:
        if self.own and self.own_store is not None:  # a resumed round's files of an earlier attempt
            storage.local_dir(self.own_store.path(state.round_no + 1, "own"), empty=True)
        left, fn = state.df.repartition(self.parts, "pid"), self._block_step(state, False)
        out = cogroup(left, self.eblocks, fn, PARTIAL_ROWS if self.native else PARTIAL_BLOB)
        if self.native:
            out = out.groupBy("pid", "local").agg(F.vector_sum("features").alias("features"))
        return _State(out, rows=self.native, mean_pending=self.agg == "mean", sym_pending=self.sym,
                      planned=None if self.native else (left, fn), round_no=state.round_no + 1)

    def save(self, store: RoundStore, k: int, state: _State) -> _State:
        path = store.path(k, "state")
        if state.planned is not None and task_writes.tasks_share_disk(self.spark, path):
            _raise_if_missed(self._save_in_tasks(state.planned, path))
            return replace(state, df=self.spark.read.parquet(path), planned=None)
        state.df.write.mode("overwrite").option("compression", "none").parquet(path)
        saved = replace(state, df=self.spark.read.parquet(path), planned=None)
        if self.own:
            _check_files(saved.df)
        return saved

    def _save_in_tasks(self, planned: tuple[DataFrame, Callable[[pa.Table, pa.Table], pa.Table]], path: str) -> int:
        """Run a planned round whose blocks write their own partials to ``path`` with pyarrow (the tasks
        share the driver's disk, :func:`~lepton_spark.task_writes.tasks_share_disk`): the same files
        ``df.write.parquet`` would hold, without the partials (1.6 feature matrices a round at 1M x 64)
        going back to the JVM and through its Parquet writer. Returns the blocks' miss rows."""
        left, fn = planned
        local = storage.local_dir(path, empty=True)
        write = functools.partial(_write_block_output, step=fn, directory=str(local))
        written = cogroup(left, self.eblocks, write, _WRITTEN).collect()
        if not any(local.glob("part-*.parquet")):  # no block sent anything: a readable empty state
            task_writes.write_task_file(PARTIAL_BLOB_PA.empty_table(), str(local), compression="none")
        return sum(int(r["missed"]) for r in written)

    def load(self, store: RoundStore, k: int) -> _State:
        df = self.spark.read.parquet(store.path(k, "state"))
        return _State(df if self.native else df.select("pid", "local", "values"), rows=self.native,
                      mean_pending=self.agg == "mean", sym_pending=self.sym, round_no=k)

    def cut(self, state: _State) -> _State:
        if not self.own:
            return replace(state, df=self.policy.cut(state.df), planned=None)  # the cut ran (or will run) the round
        # a local cut is lazy here: the count of the round's miss rows is the job that runs and stores it
        policy = self.policy if self.policy.reliable else replace(self.policy, eager=False)
        cut = replace(state, df=policy.cut(state.df), planned=None)
        _check_files(cut.df)
        return cut

    def finish(self, state: _State) -> DataFrame:
        """Every block's features after the last round: DataFrame(id, features), unpacked from a cut table
        of packed blocks (binary ids and features of many rows each: cheap to store, and a per-row step
        on the result reads them directly, :func:`~lepton_spark.graph.resident.lookup_packed`)."""
        # the last step multiplies nothing: each block's vertex row (part 0) is all it reads of the cache
        heads = self.eblocks.filter(F.col("part") == 0)
        packed = self.policy.cut(cogroup(state.df.repartition(self.parts, "pid"), heads,
                                         self._block_step(state, True), PARTIAL_BLOB))
        if self.own:
            _check_files(packed)
        packed = packed.select("local", "values")
        dim = self.dim

        def unpack(batches: Any) -> Any:
            for ids, x in arrow.packed_rows(batches, np.float32, dim):
                yield pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), matrix_to_list(x)],
                                                 names=["id", "features"])

        return resident.remember_packed(packed.mapInArrow(unpack, RESULT), packed, dim)


@dataclass
class PartitionedBlocks:
    """A graph's cached edge blocks (``EBLOCK`` rows) in ``blocks`` blocks over ``n`` vertices.

    ``scaled``: the blocks carry GCN's ``dinv``. ``indeg`` counts each vertex's in-edges (on a
    symmetric graph also its out-edges, which the vertex programs' engine reads it as).
    """

    eblocks: DataFrame
    blocks: int
    n: int
    scaled: bool

    def close(self) -> None:
        self.eblocks.unpersist()


def run(inp: Inputs, rounds: Rounds, *, agg: str, blocks: int, native: bool,
        normalize: str | None = None, broadcast_ids_max: int = 0, symmetric: bool = False,
        cache: Any = None, operator_key: Any = None, dense_ids: bool = False,
        checked_features: bool = False, edge_files: EdgeFiles | None = None, own_files: bool = True) -> DataFrame:
    """The partitioned plan: ``rounds`` over the vertices hashed into ``blocks`` blocks; DataFrame(id, features).

    ``native``: Spark sums the partials (``vector_sum``). ``normalize="sym"``: GCN's operator, scaled
    inside the blocks (module docstring). Up to ``broadcast_ids_max`` vertices the edges look up their
    blocks in a broadcast id map. ``symmetric`` (the caller's promise that every edge has its reverse,
    same weight, once): each block counts its in-degrees from its out-edges. Features the caller
    counted but nobody checked yet (``inp.checked`` False) are checked once they sit in the blocks'
    cut table: one scan of that table instead of computing them twice. The result is cut (its lineage
    does not reach the rounds). ``dense_ids`` (the caller's promise that the vertex ids are exactly
    0..n-1, as ``build`` writes them): vertex ``id`` goes to block ``id mod B`` at local index ``id div B``
    (:func:`dense_layout`), so neither the vertices are numbered by a window nor the edges joined
    with a lookup of their endpoints (1M vertices / 19M edges on 2 cores: preparation 20.8 -> 17.0 s).
    With ``checked_features`` too (the caller's promise that the features are checked), the first round
    reads the features where they are made: no check, no cut copy; and when they are a width-keeping
    ``map_features`` of other features (``inp.source``), it reads those and each block applies the
    map to the rows it receives (one Python pass over the rows fewer).

    ``edge_files``: the Parquet files ``inp.edges`` was read from; a symmetric graph with dense ids
    packs its blocks from them (:func:`_file_pack`).

    ``own_files`` (``graph.worker_block_files``): when every round is cut or saved and numpy aggregates,
    each block keeps the partial it computes for its own vertices in a file and reads it back in the
    next round, instead of sending it through the shuffle to itself (with 2 blocks, half of every
    round's partials): on its executor (:mod:`~lepton_spark.graph.worker_blocks`), or, with a round
    store its tasks write, beside the round's state in the store (so a resumed run finds them; the
    store's signature says so). A block that finds no such file (another executor ran the round
    before, or it was lost) answers with a miss row; the driver counts them as it cuts or saves each
    round and then starts the rounds again with every partial shipped (and a fresh store). The result
    never depends on where the partials travelled.

    ``cache`` (an :class:`~.broadcast_plan.OperatorCache`): the edge blocks are taken from it when a
    propagation over the same edges (``inp.source_edges``, or ``operator_key``) packed them in the same
    layout, and left in it otherwise (its owner unpersists them): every layer of a forward pass, and
    the analytics of the same graph, run on one packing. Without it they are unpersisted at the end.
    """
    sym = normalize == "sym"
    t0 = time.perf_counter()
    parts = blocks  # one block per partition: every task holds one block
    keys = block_keys(inp.spark, blocks)
    cacheable = cache is not None and inp.source_edges is not None
    dense = dense_ids and inp.n > 0
    layout = ("partitioned", blocks, sym, dense)  # the vertices' placement is part of the blocks' layout
    packed = cache.get_blocks(inp.source_edges, layout, operator_key) if cacheable else None
    if packed is not None and packed.n != inp.n:
        packed = None  # other vertices than the blocks were packed for: pack again (and replace them)
    trusted = inp.checked or checked_features
    pre = None
    if dense and trusted:  # read once, by the first round: no cut copy, and nothing left to check
        # features made by a width-keeping map (a standardisation): the blocks apply it to the rows
        # they receive, instead of the rows going through a Python worker and back first
        base, pre = inp.source if inp.source is not None else (inp.x0, None)
        vfull = base.withColumn("pid", block_label(keys, dense=True))
        if pre is not None:
            log.info("propagate[partitioned]: the blocks apply %s to the feature rows they receive", pre)
    elif dense or packed is not None:
        vfull = _label_features(inp.x0, keys, rounds.policy, dense)
    else:
        vfull, vl = _assign_blocks(inp.x0, keys, rounds.policy)
    if dense and packed is None:
        vl = dense_layout(inp.spark, inp.n, keys)
    if not trusted:
        inp.n, inp.dim = check_features(vfull, "features")
        inp.checked = True
    reused = packed is not None
    if packed is None:
        eblocks = _pack_edge_blocks(vl, inp.edges, parts, sym=sym, broadcast_ids=0 < inp.n <= broadcast_ids_max,
                                    dense_n=inp.n if dense else None, dense_keys=keys,
                                    symmetric=symmetric, files=edge_files)
        _count_blocks(eblocks)
        packed = PartitionedBlocks(eblocks, blocks, inp.n, sym)
        if cacheable:
            cache.put_blocks(inp.source_edges, layout, packed, operator_key)
    log.info("propagate[partitioned]: %d vertices x %d dims in %d blocks, %s aggregation%s; %s in %.2fs",
             inp.n, inp.dim, blocks, "native vector_sum" if native else "numpy",
             ", GCN scaling in the blocks" if sym else "", "edge blocks reused" if reused else "prepared",
             time.perf_counter() - t0)
    eblocks = packed.eblocks
    # each block keeps the partial for its own vertices (a round ships the others' only: half of them
    # with 2 blocks) when every round is cut or saved: in a file on its executor, or beside the state in
    # a round store its tasks write (which records it in the store's signature: resumed only so)
    store, signature = rounds.store.root, rounds.store.signature
    in_store = bool(store) and task_writes.tasks_share_disk(inp.spark, store)
    own = own_files and not native and rounds.policy.interval == 1 and (not store or in_store)
    try:
        with sql_conf(inp.spark, ROUND_CONF):
            while True:
                if own and store:
                    rounds = replace(rounds, store=RoundStore(store, {**signature, "own_partials": "in the store"}))
                plan = _PartitionedRounds(inp, eblocks, parts, agg, native, rounds.policy, sym=sym, pre=pre,
                                          own_files=own, own_store=rounds.store if own and store else None)
                try:
                    state = rounds.run(plan, _State(vfull.select("pid", "id", "features"), rows=True,
                                                    mean_pending=False, by_id=True))
                    return plan.finish(state)
                except _OwnFilesMissed as exc:
                    if not own:
                        raise
                    log.info("propagate[partitioned]: %s (another executor ran them, or it lost them): the "
                             "rounds start again with every partial shipped", exc)
                    own = False
                    rounds = replace(rounds, store=RoundStore(store, signature))  # its rounds are not resumed
    finally:
        if not cacheable:
            packed.close()
