"""Prepared graph operators: edges packed once into cached CSR blocks, then any number of rounds.

A *round* reduces, for every vertex v, a per-vertex message over v's in-edges ``u -> v``: the weighted
``sum``/``mean``/``max`` of the messages (vector propagation, PageRank), their ``min`` (connected
components) or their ``mode`` (label propagation: the most frequent message, ties to the smallest).
The edges are packed into CSR blocks **once** per operator (rows = destinations, columns = source
positions) and cached; every round of every algorithm that uses the operator reuses them, so a
round costs one Spark job over cached binary rows and one numpy kernel per block, never a join.

This module holds the *broadcast* operator (the message vector sits in one process and every block
task reads it; in local mode through a memory-mapped file in /dev/shm). It is the engine behind the
broadcast propagation plan and the analytics algorithms (:mod:`lepton_spark.graph.programs`).
Algorithms whose state is too large for one process run the same vertex programs on the
partitioned engine (:mod:`lepton_spark.graph.partitioned`).

Ids: the operator indexes vertices by their position in the sorted id array (``ids=None`` = the
ids are already ``0..n-1``). Edges whose src or dst is not a vertex send nothing; they still count
in :meth:`BroadcastOperator.out_degrees` (GraphFrames' PageRank divides by every edge leaving u).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark import storage
from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import arrow, kernels
from lepton_spark.session import is_local_master, shuffle_partitions, task_slots

log = logging.getLogger(__name__)

FAULT_SLEEP_ENV = "LEPTON_FAULT_TASK_SLEEP"

_BLOCK_SCHEMA = T.StructType(
    [
        T.StructField("rows", T.BinaryType()),
        T.StructField("indptr", T.BinaryType()),
        T.StructField("indices", T.BinaryType()),
        T.StructField("data", T.BinaryType()),
        T.StructField("nnz", T.LongType()),
        T.StructField("out_rows", T.BinaryType()),
        T.StructField("out_counts", T.BinaryType()),
        T.StructField("bad_weights", T.LongType()),
    ]
)
_BLOCK_PA = pa.schema([(f.name, pa.int64() if f.name in ("nnz", "bad_weights") else pa.binary())
                       for f in _BLOCK_SCHEMA.fields])
_OUT_SCHEMA = T.StructType([T.StructField("rows", T.BinaryType()), T.StructField("values", T.BinaryType())])
_OUT_MANY_SCHEMA = T.StructType([*_OUT_SCHEMA.fields, T.StructField("k", T.IntegerType())])
_PATH_SCHEMA = T.StructType([T.StructField("path", T.StringType())])
_PATH_PA = pa.schema([("path", pa.string())])


def fault_sleep() -> float:
    """Seconds every round task sleeps before working (fault-injection tests only; env, default 0).

    Read on the driver and shipped with the round's closure, so the tasks of every round run long
    enough for a test to kill an executor (or the driver) while a round is in flight.
    """
    try:
        return max(0.0, float(os.environ.get(FAULT_SLEEP_ENV, "0") or 0))
    except ValueError:
        return 0.0


def local_exchange_dir(spark: SparkSession, nbytes: int, extra: int = 0) -> str | None:
    """A shared-memory (or temp) directory when driver and executors share this machine (local mode).

    Shipping the message matrix through the JVM twice per round (closure broadcast in, collect out)
    costs far more than the sparse product itself; on one machine a file in /dev/shm that every task
    memory-maps costs one memcpy. On a cluster this is never used (executors cannot see the driver's
    files): there the matrix travels with the task closure, which PySpark broadcasts.
    """
    if not is_local_master(spark):
        return None
    for base in ("/dev/shm", tempfile.gettempdir()):
        try:
            remove_stale_exchanges(base)
            if os.path.isdir(base) and shutil.disk_usage(base).free > 3 * nbytes + extra + (64 << 20):
                return tempfile.mkdtemp(prefix=f"{EXCHANGE_PREFIX}{os.getpid()}-", dir=base)
        except OSError:
            continue
    return None


EXCHANGE_PREFIX = "lepton-blocks-"


def remove_stale_exchanges(base: str) -> list[str]:
    """Remove exchange directories under ``base`` whose driver process is gone; returns their paths.

    A driver that is killed (a crashed or cancelled nightly) cannot remove its exchange, and in
    /dev/shm that is memory: the next run on the machine removes it. The directory name carries the
    driver's pid (``lepton-blocks-<pid>-...``); names without one are left alone.
    """
    return storage.remove_stale_dirs(base, EXCHANGE_PREFIX)


def _buf(value: pa.Scalar) -> pa.Buffer:
    return value.as_buffer() if hasattr(value, "as_buffer") else pa.py_buffer(value.as_py())


_FILES_SCHEMA = T.StructType(
    [T.StructField("path", T.StringType()), T.StructField("nnz", T.LongType()),
     T.StructField("out_rows", T.BinaryType()), T.StructField("out_counts", T.BinaryType()),
     T.StructField("bad_weights", T.LongType())]
)
_FILES_PA = pa.schema([("path", pa.string()), ("nnz", pa.int64()), ("out_rows", pa.binary()),
                       ("out_counts", pa.binary()), ("bad_weights", pa.int64())])
_ARRAYS = ("rows", "indptr", "indices", "data")


def _save_block(directory: str, arrays: dict[str, np.ndarray]) -> str:
    """Write one block's arrays as .npy files under a fresh folder (memory-mapped by the round tasks)."""
    path = os.path.join(directory, f"block-{uuid.uuid4().hex}")
    os.makedirs(path)
    for name, arr in arrays.items():
        np.save(os.path.join(path, f"{name}.npy"), arr, allow_pickle=False)
    return path


def _load_block(path: str) -> dict[str, np.ndarray]:
    return {name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r") for name in _ARRAYS}


def _reduce_block(arrays: dict[str, np.ndarray], x: np.ndarray, reduce: str, weighted: bool) -> np.ndarray:
    """One block's rows of a round: ``reduce`` of ``x[u]`` over each row's edges (weight 1 unless ``weighted``)."""
    data = arrays["data"] if weighted else np.ones(len(arrays["data"]), dtype=np.float32)
    return np.ascontiguousarray(kernels.reduce_rows(arrays["indptr"], arrays["indices"], data, x, reduce))


def edge_block(dst: np.ndarray, parts: int) -> np.ndarray:
    """The block of every edge of a broadcast-plan packing: its ``dst`` modulo ``parts`` (ids < 0, not
    a vertex, land in a block too, which drops them)."""
    return np.bitwise_and(dst, parts - 1) if parts & (parts - 1) == 0 else np.mod(dst, parts)


_SPLIT_SCHEMA = T.StructType([T.StructField("pid", T.IntegerType()), T.StructField("wide", T.BooleanType()),
                              T.StructField("src", T.BinaryType()), T.StructField("dst", T.BinaryType()),
                              T.StructField("weight", T.BinaryType())])
_SPLIT_PA = pa.schema([("pid", pa.int32()), ("wide", pa.bool_()), ("src", pa.binary()), ("dst", pa.binary()),
                       ("weight", pa.binary())])
#: edges a splitting task gathers before it cuts them into per-block rows (~20 bytes each in memory)
_SPLIT_EDGES = 1 << 22


def _edge_splitter(keys: Sequence[int], undirected: bool) -> Any:
    """``mapInArrow`` function: an edge partition's (src long, dst long[, weight float]) rows as one row
    per block (``pid`` = the block's label in ``keys``, a block holds the edges of its number,
    :func:`edge_block`) with the arrays as raw bytes, in pieces of at most
    :data:`_SPLIT_EDGES` edges; ``undirected``: every edge also as (dst, src). A piece's ids travel as
    int32 when they all fit (``wide`` false), else as int64.

    The blocks then move through Spark's shuffle as a few large binary rows: shuffling the edges as
    rows and converting them to Arrow in the JVM cost about 9 s at 19M edges on 2 cores, twice that
    for an undirected operator's 2E.
    """
    labels = np.asarray(list(keys), dtype=np.int32)
    parts = len(labels)

    def split(src: np.ndarray, dst: np.ndarray, wt: np.ndarray) -> pa.RecordBatch:
        if undirected:
            src, dst, wt = np.concatenate([src, dst]), np.concatenate([dst, src]), np.concatenate([wt, wt])
        block = edge_block(dst, parts)
        order = kernels.stable_argsort(block)
        counts = np.bincount(block, minlength=parts)
        nz = np.flatnonzero(counts)
        bounds = np.concatenate([[0], np.cumsum(counts[nz])]).astype(np.int64)
        i32 = np.iinfo(np.int32)
        wide = bool(len(src)) and bool(min(src.min(), dst.min()) < i32.min or max(src.max(), dst.max()) > i32.max)
        ids_t = np.int64 if wide else np.int32
        cols = [arrow.binary_segments(a[order].astype(t, copy=False), bounds)
                for a, t in ((src, ids_t), (dst, ids_t), (wt, np.float32))]
        # one chunk each: a piece's arrays are at most 2 * _SPLIT_EDGES * 8 bytes, far below 1 GiB
        return pa.RecordBatch.from_arrays([pa.array(labels[nz], pa.int32()), pa.array(np.full(len(nz), wide)),
                                           *[c.chunk(0) for c in cols]], schema=_SPLIT_PA)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        src_l: list[np.ndarray] = []
        dst_l: list[np.ndarray] = []
        w_l: list[np.ndarray] = []
        held = 0
        for b in batches:
            src_l.append(b.column("src").to_numpy())
            dst_l.append(b.column("dst").to_numpy())
            w_l.append(b.column("weight").to_numpy(zero_copy_only=False)  # null -> NaN
                       if "weight" in b.schema.names else np.ones(b.num_rows, np.float32))  # unweighted: 1.0
            held += b.num_rows
            if held >= _SPLIT_EDGES:
                yield split(np.concatenate(src_l), np.concatenate(dst_l), np.concatenate(w_l))
                src_l, dst_l, w_l, held = [], [], [], 0
        if held:
            yield split(np.concatenate(src_l), np.concatenate(dst_l), np.concatenate(w_l))

    return run


def _split_arrays(batches: Iterator[pa.RecordBatch]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The (src, dst, weight) arrays of a block's :func:`_edge_splitter` rows, as views of their bytes
    (ids int32 or int64, as they travelled)."""
    src_l: list[np.ndarray] = []
    dst_l: list[np.ndarray] = []
    w_l: list[np.ndarray] = []
    for b in batches:
        ids_t = [np.int64 if w else np.int32 for w in b.column("wide").to_pylist()]
        for out, name in ((src_l, "src"), (dst_l, "dst")):
            out.extend(np.frombuffer(buf, dtype=t) for buf, t in zip(arrow.binary_cells(b.column(name)), ids_t))
        w_l.extend(np.frombuffer(buf, dtype=np.float32) for buf in arrow.binary_cells(b.column("weight")))
    return src_l, dst_l, w_l


def _pack_edges(src: np.ndarray, dst: np.ndarray, wt: np.ndarray, lookup: np.ndarray | None, n: int,
                idx_t: type, exchange: str | None) -> dict[str, Any]:
    """One block from its edges (``src``, ``dst`` ids, ``wt`` weights, NaN for null): its row of
    ``_FILES_PA`` (the arrays saved in ``exchange``) or of ``_BLOCK_PA`` (the arrays as bytes).

    Edges whose src or dst is not a vertex send nothing; they still count in the out-degrees.
    """
    sp_, sv = kernels.positions(lookup, src)
    dp_, dv = kernels.positions(lookup, dst)
    sv &= (sp_ >= 0) & (sp_ < n)
    dv &= (dp_ >= 0) & (dp_ < n)
    every = sv.all()
    out_counts = np.bincount(sp_ if every else sp_[sv])  # every edge leaving a vertex
    out_rows = np.flatnonzero(out_counts)
    out_counts = out_counts[out_rows]
    bad_weights = int(np.count_nonzero(~np.isfinite(wt)))
    ok = sv & dv
    if not ok.all():
        dp_, sp_, wt = dp_[ok], sp_[ok], wt[ok]
    rows, indptr, indices, data = kernels.csr_from_pairs(dp_, sp_.astype(idx_t), wt)
    row = {"nnz": len(data), "out_rows": out_rows.astype(np.int64).tobytes(),
           "out_counts": out_counts.astype(np.int64).tobytes(), "bad_weights": bad_weights}
    if exchange:
        arrays = {"rows": rows.astype(np.int64), "indptr": indptr, "indices": indices, "data": data}
        return {"path": _save_block(exchange, arrays), **row}
    return {"rows": rows.astype(np.int64).tobytes(), "indptr": indptr.tobytes(), "indices": indices.tobytes(),
            "data": data.tobytes(), **row}


@dataclass(frozen=True)
class EdgeFiles:
    """The Parquet files on this machine an edge DataFrame was read from, column for column: ``src``
    and ``dst`` (integers) and ``weight`` (the weight column, or None for weight 1.0).

    In local mode :meth:`BroadcastOperator.prepare` packs the blocks from these files: one task per
    task slot reads them with pyarrow and packs its share of the blocks (a block holds the edges whose
    ``dst`` modulo the block count is its number). Packing the DataFrame instead shuffles every edge by
    ``dst`` and converts every shuffled row to Arrow in the JVM: at 1M vertices / 19M edges on 2 cores
    the packing took about 9 s that way. The partitioned propagation plan reads them too, one task per
    file (:meth:`file_paths`, :meth:`read_file`; ``partitioned_plan._file_pack``). The caller promises
    that the files hold exactly the DataFrame's edges (the nightly passes its validated graph's edge
    directory); files that are not local, or whose columns have other types, are not used (the
    DataFrame is packed).
    """

    path: str
    weight: str | None = "weight"

    def columns(self) -> list[str]:
        return ["src", "dst", *([self.weight] if self.weight else [])]

    def usable(self) -> bool:
        """Whether the files are local Parquet files with integer ``src``/``dst`` and a numeric weight."""
        import pyarrow.dataset as ds

        if not storage.is_local_path(self.path):
            return False
        try:
            fs, path = storage.filesystem(self.path)
            schema = ds.dataset(path, filesystem=fs, format="parquet").schema
            types = [schema.field(c).type for c in self.columns()]
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
            log.info("edge files %s not usable (%s); reading the edge DataFrame instead", self.path,
                     storage.first_line(exc))
            return False
        ok = all(pa.types.is_integer(t) for t in types[:2]) and all(
            pa.types.is_integer(t) or pa.types.is_floating(t) for t in types[2:])
        if not ok:
            log.info("edge files %s have columns of other types (%s); reading the edge DataFrame instead",
                     self.path, ", ".join(f"{c} {t}" for c, t in zip(self.columns(), types)))
        return ok

    def file_paths(self) -> list[str]:
        """The Parquet files under :attr:`path`, as paths inside its file system (:meth:`read_file` reads one)."""
        import pyarrow.dataset as ds

        fs, path = storage.filesystem(self.path)
        return list(ds.dataset(path, filesystem=fs, format="parquet").files)

    def read_file(self, file: str, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(src, dst, weight)`` of one of :meth:`file_paths`, ``batch_rows`` edges at a time: int64,
        int64, float32 (a null weight: NaN). Rows with a null ``src`` or ``dst`` are left out."""
        import pyarrow.dataset as ds

        fs, _ = storage.filesystem(self.path)
        for batch in ds.dataset([file], filesystem=fs, format="parquet").to_batches(columns=self.columns(),
                                                                                    batch_size=batch_rows):
            yield self._arrays(batch)

    def _arrays(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if batch.column("src").null_count or batch.column("dst").null_count:
            batch = batch.filter(pc.and_(pc.is_valid(batch.column("src")), pc.is_valid(batch.column("dst"))))
        src = batch.column("src").cast(pa.int64()).to_numpy()
        dst = batch.column("dst").cast(pa.int64()).to_numpy()
        wt = (np.asarray(batch.column(self.weight).to_numpy(zero_copy_only=False), dtype=np.float64)
              .astype(np.float32) if self.weight else np.ones(len(src), dtype=np.float32))
        return src, dst, wt

    def read_blocks(self, parts: int, blocks: list[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(block, src, dst, weight)`` for each of ``blocks`` that has edges (an edge's block: its
        ``dst`` modulo ``parts``): int64, int64, float32 (a null weight: NaN). The files are read in
        batches and only these blocks' edges are kept, so a task holds its share of the edges, not
        all of them. Rows with a null ``src`` or ``dst`` (a validated graph has none) are left out."""
        import pyarrow.dataset as ds

        fs, path = storage.filesystem(self.path)
        kept: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {p: [] for p in blocks}
        for batch in ds.dataset(path, filesystem=fs, format="parquet").to_batches(columns=self.columns(),
                                                                                  batch_size=1 << 20):
            src, dst, wt = self._arrays(batch)
            block = edge_block(dst, parts)
            for p, pieces in kept.items():
                m = block == p
                pieces.append((src[m], dst[m], wt[m]))
        for p, pieces in kept.items():
            if sum(len(piece[0]) for piece in pieces):
                src, dst, wt = (np.concatenate([piece[i] for piece in pieces]) for i in range(3))
                yield p, src, dst, wt
            pieces.clear()


def _file_packer(files: EdgeFiles, parts: int, lookup: np.ndarray | None, n: int, idx_t: type,
                 exchange: str) -> Any:
    """The task function of a packing from ``files``: its input rows are block numbers (0..parts-1);
    it reads the files once and yields one ``_FILES_PA`` row per block that has edges."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        mine = [int(p) for b in batches for p in b.column("id").to_numpy()]
        if not mine:
            return
        for _p, src, dst, wt in files.read_blocks(parts, mine):
            yield pa.RecordBatch.from_pylist([_pack_edges(src, dst, wt, lookup, n, idx_t, exchange)],
                                             schema=_FILES_PA)

    return run


@dataclass
class BroadcastOperator:
    """Edges ``u -> v`` packed once into CSR blocks by destination; see the module docstring.

    Build it with :meth:`prepare`; call :meth:`apply` once per round; :meth:`close` when done (it
    releases the blocks and removes the exchange directory). On a cluster the blocks are cached
    binary rows that every round's tasks read. In local mode (driver and executors on one machine)
    they are written once as .npy files into the exchange directory and every round's task
    memory-maps its block: a scalar PageRank round then moves 8 MB instead of every block's arrays
    through the JVM (measured 0.6 s against about 0.2 s per round at 1M vertices / 19M edges).
    """

    spark: SparkSession
    ids: np.ndarray | None  # sorted vertex ids, or None when the ids are 0..n-1
    n: int
    nnz: int
    blocks: DataFrame | None  # cached binary blocks (cluster), or None when the blocks are files
    idx_t: type
    exchange: str | None
    seconds_prepared: float
    block_paths: list[str] | None = None  # local mode: one folder of .npy arrays per block
    _out_degrees: np.ndarray | None = None
    _in_degrees: np.ndarray | None = None
    _received: np.ndarray | None = None
    _round_jobs: dict[tuple[tuple[str, bool], ...], DataFrame] = field(default_factory=dict)

    @classmethod
    def prepare(cls, spark: SparkSession, ids: np.ndarray, edges: DataFrame, parts: int | None, *,
                weight: str | None = "weight", undirected: bool = False, local_exchange: bool = True,
                message_bytes: int = 0, files: EdgeFiles | None = None) -> BroadcastOperator:
        """Pack ``edges`` (src, dst[, weight]) over the vertex ``ids`` into ``parts`` CSR blocks.

        ``parts`` None means ``spark.sql.shuffle.partitions``.

        ``ids``: the vertex ids (long), any order; duplicates raise ValueError. ``undirected``: every
        edge also sends from dst to src (a self-loop then sends twice, as in GraphX's label
        propagation). ``weight`` None or absent means 1.0; a null, NaN or infinite weight raises
        :class:`~lepton_spark.errors.InvalidGraphError`. ``message_bytes``: the size of one round's
        message matrix, to size the local exchange. ``files``: the Parquet files ``edges`` was read from
        (:class:`EdgeFiles`); in local mode the blocks are packed from them, with the same result.
        """
        t0 = time.perf_counter()
        ids = np.sort(np.asarray(ids, dtype=np.int64), kind="stable")
        if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
            raise InvalidGraphError(f"graph: {int(np.sum(ids[1:] == ids[:-1]))} duplicate vertex ids")
        n = len(ids)
        dense = n == 0 or (ids[0] == 0 and ids[-1] == n - 1)
        lookup = None if dense else ids
        idx_t = np.int32 if n < 2**31 else np.int64
        weighted = bool(weight and weight in edges.columns)
        e = edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"),
                         *([F.col(weight).cast("float").alias("weight")] if weighted else []))
        # room for the messages (in and out) and the blocks (~12 bytes per edge; 1 GiB covers 80M edges)
        exchange = local_exchange_dir(spark, max(message_bytes, n * 8), extra=1 << 30) if local_exchange else None
        if parts is None:
            parts = shuffle_partitions(spark)

        def pack(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            src_l, dst_l, w_l = _split_arrays(batches)
            if not src_l:
                return
            row = _pack_edges(np.concatenate(src_l).astype(np.int64, copy=False),
                              np.concatenate(dst_l).astype(np.int64, copy=False), np.concatenate(w_l), lookup, n,
                              idx_t, exchange)
            yield pa.RecordBatch.from_pylist([row], schema=_FILES_PA if exchange else _BLOCK_PA)

        job, packed = None, None
        if files is not None and exchange and not undirected and files.usable():
            # every task reads the edge files with pyarrow and packs its share of the blocks: no shuffle
            job = spark.range(0, parts, 1, max(1, min(parts, task_slots(spark)))).mapInArrow(
                _file_packer(files, parts, lookup, n, idx_t, exchange), _FILES_SCHEMA)
        else:
            from lepton_spark.graph.propagation.partitioned_plan import block_keys  # it imports this module

            # each task holds one block (balanced labels): the edges travel as binary pieces per block
            packed = e.mapInArrow(_edge_splitter(block_keys(spark, parts), undirected), _SPLIT_SCHEMA) \
                .repartition(parts, "pid")
        try:
            return cls._pack(spark, packed, pack, exchange, lookup, n, idx_t, undirected, t0, job)
        except BaseException:
            if exchange:
                shutil.rmtree(exchange, ignore_errors=True)
            raise

    @classmethod
    def _pack(cls, spark: SparkSession, packed: DataFrame | None, pack: Any, exchange: str | None,
              lookup: np.ndarray | None, n: int, idx_t: type, undirected: bool, t0: float,
              file_job: DataFrame | None = None) -> BroadcastOperator:
        """Run the packing job (files in ``exchange``, or cached binary rows) and build the operator;
        ``file_job``: the job that packs the blocks from the edge files instead (:class:`EdgeFiles`;
        ``packed`` is then None)."""
        if exchange:
            assert file_job is not None or packed is not None
            files = storage.collect_arrow(file_job if file_job is not None else packed.mapInArrow(pack, _FILES_SCHEMA))
            blocks, paths = None, files.column("path").to_pylist()
            nnz, bad, nb = int(pc.sum(files.column("nnz")).as_py() or 0), \
                int(pc.sum(files.column("bad_weights")).as_py() or 0), files.num_rows
            out_deg = np.zeros(n, dtype=np.float64)
            for r, c in zip(files.column("out_rows"), files.column("out_counts")):
                out_deg[np.frombuffer(_buf(r), np.int64)] += np.frombuffer(_buf(c), np.int64)  # rows unique per block
        else:
            assert packed is not None  # the file job packs into exchange files only
            blocks, paths, out_deg = packed.mapInArrow(pack, _BLOCK_SCHEMA).persist(), None, None
            stats = blocks.agg(F.count(F.lit(1)).alias("b"), F.sum("nnz").alias("nnz"),
                               F.sum("bad_weights").alias("bad")).first()
            nnz, bad, nb = int(stats["nnz"] or 0), int(stats["bad"] or 0), int(stats["b"])
        op = cls(spark, lookup, n, nnz, blocks, idx_t, exchange, 0.0, paths, out_deg)
        if bad:
            op.close()
            raise InvalidGraphError(f"graph: {bad} edges have a null, NaN or infinite weight")
        op.seconds_prepared = time.perf_counter() - t0
        log.info("blocks: %d vertices, %d %sedges in %d blocks%s; prepared in %.2fs%s", n, nnz,
                 "directed " if not undirected else "undirected ", nb,
                 " read from the edge files" if file_job is not None else "", op.seconds_prepared,
                 f" (local files in {exchange})" if exchange else "")
        return op

    def out_degrees(self) -> np.ndarray:
        """Edges leaving every vertex (float64), counting edges whose dst is not a vertex; computed once."""
        if self._out_degrees is None:
            assert self.blocks is not None  # local mode computes them while packing
            t = storage.collect_arrow(self.blocks.select("out_rows", "out_counts"))
            deg = np.zeros(self.n, dtype=np.float64)
            for r, c in zip(t.column("out_rows"), t.column("out_counts")):
                deg[np.frombuffer(_buf(r), np.int64)] += np.frombuffer(_buf(c), np.int64)  # rows unique per block
            self._out_degrees = deg
        return self._out_degrees

    def in_degrees(self) -> np.ndarray:
        """Weighted in-degree of every vertex (sum of the weights of its in-edges; float64); computed once."""
        if self._in_degrees is None:
            deg = np.zeros(self.n, dtype=np.float64)
            if self.block_paths is not None:
                for path in self.block_paths:
                    b = _load_block(path)
                    if len(b["data"]):
                        deg[b["rows"]] = np.add.reduceat(np.asarray(b["data"], np.float64), b["indptr"][:-1])
            else:
                assert self.blocks is not None

                def sums(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
                    for b in batches:
                        for i in range(b.num_rows):
                            indptr = np.frombuffer(_buf(b.column("indptr")[i]), dtype=np.int64)
                            data = np.frombuffer(_buf(b.column("data")[i]), dtype=np.float32).astype(np.float64)
                            s = np.add.reduceat(data, indptr[:-1]) if len(data) else np.zeros(0)
                            yield pa.RecordBatch.from_arrays(
                                [b.column("rows").slice(i, 1), pa.array([s.tobytes()], pa.binary())],
                                names=["rows", "values"])

                t = storage.collect_arrow(self.blocks.select("rows", "indptr", "data").mapInArrow(sums, _OUT_SCHEMA))
                for r, v in zip(t.column("rows"), t.column("values")):
                    deg[np.frombuffer(_buf(r), np.int64)] = np.frombuffer(_buf(v), np.float64)
            self._in_degrees = deg
        return self._in_degrees

    def received(self) -> np.ndarray:
        """Which vertices receive messages (have an in-edge from a vertex): the same every round; local mode."""
        if self._received is None:
            assert self.block_paths is not None
            rec = np.zeros(self.n, dtype=bool)
            for path in self.block_paths:
                rec[np.load(os.path.join(path, "rows.npy"), mmap_mode="r")] = True
            self._received = rec
        return self._received

    def apply(self, x: np.ndarray, reduce: str, weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """One round: ``(values, received)`` where ``values[v]`` reduces ``x[u]`` over the edges ``u -> v``.

        ``x`` has one row per vertex (1-d or 2-d, any numeric dtype). ``reduce``: ``sum``/``mean``/
        ``max`` weight the messages (float32 results for float32 input), ``min``/``mode`` use the
        values as they are. ``weighted=False`` counts every edge with weight 1 (PageRank on a graph whose
        blocks carry edge weights). Rows that receive nothing are zero; ``received`` marks the others.
        """
        return self.apply_many([(x, reduce, weighted)])[0]

    def apply_many(self, rounds: Sequence[tuple[np.ndarray, str, bool]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`apply` of every ``(x, reduce, weighted)``, in one job: each task reads its blocks once
        and reduces all of them (the analytics' programs run side by side: a job's overhead is most of
        a scalar round at 100k vertices)."""
        for _, reduce, _ in rounds:
            if reduce not in kernels.REDUCES:
                raise ValueError(f"unknown reduction {reduce!r}; expected one of {', '.join(kernels.REDUCES)}")
        xs = [np.ascontiguousarray(x) for x, _, _ in rounds]
        specs = tuple((reduce, bool(weighted)) for _, reduce, weighted in rounds)
        dtypes = [kernels.reduce_dtype(x.dtype, reduce) for x, (reduce, _) in zip(xs, specs)]
        if self.block_paths is not None:
            return self._apply_files(xs, specs, dtypes)
        idx_t, delay = self.idx_t, fault_sleep()  # on a cluster the closure carries the x's

        def step(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            if delay:
                time.sleep(delay)
            for b in batches:
                for i in range(b.num_rows):
                    arrays = {"indptr": np.frombuffer(_buf(b.column("indptr")[i]), dtype=np.int64),
                              "indices": np.frombuffer(_buf(b.column("indices")[i]), dtype=idx_t),
                              "data": np.frombuffer(_buf(b.column("data")[i]), dtype=np.float32)}
                    for k, (x, (reduce, weighted)) in enumerate(zip(xs, specs)):
                        vals = _reduce_block(arrays, x, reduce, weighted)
                        yield pa.RecordBatch.from_arrays(
                            [b.column("rows").slice(i, 1), pa.array([vals.tobytes()], pa.binary()),
                             pa.array([k], pa.int32())], names=["rows", "values", "k"])

        results = [(np.zeros(x.shape, dtype=t), np.zeros(self.n, dtype=bool)) for x, t in zip(xs, dtypes)]
        assert self.blocks is not None
        out = storage.collect_arrow(self.blocks.select("rows", "indptr", "indices", "data").mapInArrow(
            step, _OUT_MANY_SCHEMA))
        for r, v, k in zip(out.column("rows"), out.column("values"), out.column("k").to_pylist()):
            rows = np.frombuffer(_buf(r), dtype=np.int64)
            nxt, received = results[k]
            nxt[rows] = np.frombuffer(_buf(v), dtype=nxt.dtype).reshape((-1, *nxt.shape[1:]))
            received[rows] = True
        return results

    def _apply_files(self, xs: list[np.ndarray], specs: tuple[tuple[str, bool], ...],
                     dtypes: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`apply_many` in local mode: the round's tasks map ``x<k>.npy`` and write ``out<k>.npy`` in
        the exchange."""
        assert self.block_paths is not None
        live = [k for k, x in enumerate(xs) if x.size]
        results: list[tuple[np.ndarray, np.ndarray] | None] = [
            None if x.size else (np.zeros(x.shape, dtype=t), self.received().copy()) for x, t in zip(xs, dtypes)]
        if not live:
            return results  # type: ignore[return-value]
        files = [self._round_files(k) for k in range(len(live))]
        try:
            for (x_path, out_path), k in zip(files, live):
                np.save(x_path, xs[k], allow_pickle=False)
                # the tasks write their rows into one shared file (a sparse file: rows no block writes
                # read as zero) that the driver then maps copy-on-write: no per-block result files and
                # no driver-side scatter into a fresh matrix (at 1M x 64 those copies and their page
                # faults cost about a second per round on the driver)
                np.lib.format.open_memmap(out_path, mode="w+", dtype=dtypes[k], shape=xs[k].shape)
            done = storage.collect_arrow(self._round_job(tuple(specs[k] for k in live))).num_rows
            if done != len(self.block_paths):
                raise RuntimeError(f"blocks: {done} of {len(self.block_paths)} blocks reduced")
            for (_, out_path), k in zip(files, live):
                # private: the caller may write
                results[k] = (np.load(out_path, mmap_mode="c").view(np.ndarray), self.received().copy())
        finally:
            # removed every round (the mapping keeps its pages until the result is freed): the next
            # round's files are new files under the same names
            for path in (p for pair in files for p in pair):
                if os.path.exists(path):
                    os.remove(path)
        return results  # type: ignore[return-value]

    def _round_job(self, specs: tuple[tuple[str, bool], ...]) -> DataFrame:
        """The round's DataFrame for the ``(reduce, weighted)`` of each input, made once and collected every round.

        Its tasks read input ``k`` from ``x<k>.npy`` and write ``out<k>.npy`` (fixed names in the
        exchange, :meth:`_round_files`), so one DataFrame serves every round: a new one per round cost
        its Python function's pickling and the query's analysis and planning again (about 0.05 s of a
        0.15 s PageRank round at 100k vertices).
        """
        if specs in self._round_jobs:
            return self._round_jobs[specs]
        assert self.block_paths is not None
        paths = self.block_paths
        files = [self._round_files(k) for k in range(len(specs))]
        delay = fault_sleep()

        def step_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            if delay:
                time.sleep(delay)
            xms = [np.load(x_path, mmap_mode="r") for x_path, _ in files]
            outs = [np.load(out_path, mmap_mode="r+") for _, out_path in files]  # every task writes its rows in place
            for b in batches:
                for i in b.column("id").to_pylist():
                    arrays = _load_block(paths[i])
                    for xm, out, (reduce, weighted) in zip(xms, outs, specs):
                        out[arrays["rows"]] = _reduce_block(arrays, xm, reduce, weighted)
                    yield pa.RecordBatch.from_pylist([{"path": paths[i]}], schema=_PATH_PA)
            for out in outs:
                out.flush()
            del outs

        # one task per slot, each reducing its share of the block files: on one machine a task's
        # overhead is most of a scalar round (PageRank at 1M vertices / 19M edges on 2 cores: 0.43 s
        # per round with a task per block of 8, 0.2 s with 2 tasks); the packing keeps its finer
        # blocks (2 coarse ones packed 2.5 s slower)
        jobs = self.spark.range(0, len(paths), 1, max(1, min(len(paths), task_slots(self.spark))))
        self._round_jobs[specs] = jobs.mapInArrow(step_files, _PATH_SCHEMA)
        return self._round_jobs[specs]

    def _round_files(self, k: int = 0) -> tuple[str, str]:
        """``(input, output)`` paths of input ``k`` of a local-mode round in the exchange."""
        assert self.exchange is not None
        return os.path.join(self.exchange, f"x{k}.npy"), os.path.join(self.exchange, f"out{k}.npy")

    def close(self) -> None:
        """Release the blocks (unpersist, or delete their files), the round DataFrames and the local
        exchange directory."""
        self._round_jobs.clear()
        if self.blocks is not None:
            self.blocks.unpersist()
        if self.exchange:
            shutil.rmtree(self.exchange, ignore_errors=True)
            self.exchange = None

    def __enter__(self) -> BroadcastOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

