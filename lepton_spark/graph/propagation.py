"""Vector message passing over a whole graph: ``propagate`` and ``spmm`` (docs/architecture.md §2).

One round computes, for every vertex v, ``x'_v = AGG over edges (u -> v, w) of w * x_u`` with AGG in
sum | mean | max. Every vertex is in the result; a vertex that receives nothing gets a zero vector for
every aggregator. Edges whose src or dst is not a vertex are ignored (GraphFrames' triplets drop them).

Two physical plans, chosen by the size of the feature matrix (``n * d * 4`` bytes) and logged:

**broadcast** — the feature matrix is small enough to sit in one process. It is held on the driver
and shipped with each round's task closure (PySpark broadcasts large closures). The edges are
partitioned by dst once, and every partition is packed once into a CSR block (rows = its
destinations, cols = source positions) that is cached as a single binary row. A round is one
mapInArrow over the cached blocks: one scipy ``csr @ X`` per block, and its complete rows come back
as binary blobs. Nothing is shuffled, and no per-row work happens on the JVM. This is the fastest plan
on one machine.

**partitioned** — the features never sit in one process. Vertices are hashed into ``B`` blocks, one
per task slot (more only when a block would exceed ``graph.block_max_bytes``), because every extra
block adds shuffle volume and no parallelism. Each block gets a label that Spark's hash partitioning
sends to a partition of its own, so every task holds exactly one block. Each block's out-edges are
packed once into a CSR block (rows = destinations, ordered by their block; cols = local source
index) and cached, partitioned and sorted by block. A round is one cogroup of the incoming partials
with the cached edge blocks; the edges are neither reshuffled nor re-sorted. Each block combines its
partials into its features (numpy add, or max), multiplies its CSR block once, and emits one partial
per destination block, so partial sums are combined before the shuffle. The partials leave Python as
views of the product matrix, cut into binary values of about 64 KiB: the JVM moves many small values
much faster than a few values of hundreds of MB. With ``native_aggregate`` the partials are rows instead
of blobs and Spark sums them with ``vector_sum`` (Spark >= 4.3), which costs one more shuffle per round.

Lineage is cut every ``checkpoint_interval`` rounds (``localCheckpoint``). When ``checkpoint`` (a
directory) is given, each completed round's state is also written there with a completion marker,
and a later call with the same inputs resumes from the last complete round.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark import logs, storage
from lepton_spark.config import GraphConfig
from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import arrow, kernels
from lepton_spark.graph.arrow import FLOAT_LIST, list_to_matrix, matrix_to_list
from lepton_spark.graph.blocks import BroadcastOperator, fault_sleep
from lepton_spark.session import is_connect, is_local_master, shuffle_partitions, task_slots

log = logging.getLogger(__name__)

PLANS = ("auto", "broadcast", "partitioned")
RoundCallback = Callable[[int, dict[str, Any]], None]

_FEATURES_T = T.ArrayType(T.FloatType())
_RESULT_SCHEMA = T.StructType(
    [T.StructField("id", T.LongType(), False), T.StructField("features", _FEATURES_T, False)]
)


class _Graph(NamedTuple):
    """The two DataFrames :func:`propagate` reads (any object with these attributes will do)."""

    vertices: DataFrame
    edges: DataFrame


@dataclass
class _Inputs:
    spark: SparkSession
    x0: DataFrame  # id long, features array<float>
    edges: DataFrame  # src long, dst long, weight float
    n: int
    dim: int
    source_edges: DataFrame | None = None  # the caller's edges DataFrame (the operator cache key)


# ---------------------------------------------------------------------------------------- helpers


def _spark_version(spark: SparkSession) -> tuple[int, int]:
    major, minor = spark.version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def native_aggregate_available(spark: SparkSession) -> bool:
    """True when Spark has ``vector_sum``/``vector_avg`` on ``array<float>`` (Spark >= 4.3)."""
    return _spark_version(spark) >= (4, 3) and hasattr(F, "vector_sum")


def _cut(df: DataFrame) -> DataFrame:
    """Cut lineage and materialise.

    Local mode: ``localCheckpoint`` (executor memory, the fastest cut; nothing can be lost that the
    driver would survive). On a cluster a lost executor would take local checkpoint blocks with it
    and fail the job, so there the cut is a reliable ``checkpoint`` into the checkpoint directory,
    falling back to ``localCheckpoint`` when no directory is configured; persist+count where neither
    is available (some Connect servers).
    """
    if not is_local_master(df.sparkSession):
        try:
            return df.checkpoint(eager=True)
        except Exception as exc:  # noqa: BLE001 - no checkpoint directory: local checkpoint instead
            log.warning("propagate: reliable checkpoint failed (%s); using localCheckpoint "
                        "(set spark.checkpoint.dir to survive executor loss)", storage.first_line(exc))
    try:
        return df.localCheckpoint(eager=True)
    except Exception as exc:  # noqa: BLE001 - some Connect servers lack it; persisting is the fallback
        log.debug("localCheckpoint unavailable (%s); persisting instead", exc)
        df = df.persist()
        df.count()
        return df


def check_features(vertices: DataFrame, features: str = "features") -> tuple[int, int]:
    """``(vertices, dims)`` of an ``array`` feature column, in one aggregation job.

    Raises :class:`~lepton_spark.errors.InvalidGraphError` (a ValueError; exit code 3) when features
    are null, of more than one length, or hold NaN/inf. An empty table gives ``(0, 0)``.
    """
    col = F.col(features)
    nonfinite = F.exists(col, lambda v: F.isnan(v) | (F.abs(v) == F.lit(float("inf"))))
    rows = vertices.groupBy(F.size(col).alias("d")).agg(
        F.count(F.lit(1)).alias("count"), F.sum(F.when(nonfinite, 1).otherwise(0)).alias("bad")).collect()
    lengths = {(-1 if r["d"] is None else int(r["d"])): int(r["count"]) for r in rows}
    n = sum(lengths.values())
    valid = {d: c for d, c in lengths.items() if d >= 0}
    if not valid:
        if n == 0:
            return 0, 0
        raise InvalidGraphError(f"propagate: all {n} feature vectors are null")
    dim = max(valid, key=lambda d: (valid[d], -d))
    bad = n - valid[dim]
    if bad:
        raise InvalidGraphError(
            f"propagate: {bad} of {n} vertices have null features or a length other than {dim} "
            f"(lengths seen: {dict(sorted(lengths.items()))})"
        )
    nonfinite_rows = sum(int(r["bad"] or 0) for r in rows)
    if nonfinite_rows:
        raise InvalidGraphError(f"propagate: {nonfinite_rows} of {n} vertices have NaN or infinite features")
    return n, dim


def check_weights(edges: DataFrame, weight: str = "weight") -> None:
    """Raise :class:`~lepton_spark.errors.InvalidGraphError` when an edge weight is null, NaN or infinite
    (one aggregation job; a missing weight column means weight 1.0 and passes)."""
    if weight not in edges.columns:
        return
    w = F.col(weight).cast("double")
    bad = edges.agg(F.sum(F.when(w.isNull() | F.isnan(w) | (F.abs(w) == F.lit(float("inf"))), 1)
                          .otherwise(0)).alias("bad")).first()["bad"]
    if bad:
        raise InvalidGraphError(f"propagate: {int(bad)} edges have a null, NaN or infinite weight")


def _prepare(g: Any, features: str, weight: str | None) -> _Inputs:
    vertices, edges = g.vertices, g.edges
    if features not in vertices.columns:
        raise ValueError(f"propagate: vertices have no column {features!r} (columns: {', '.join(vertices.columns)})")
    ftype = vertices.schema[features].dataType
    if not isinstance(ftype, T.ArrayType) or not isinstance(
        ftype.elementType, T.FloatType | T.DoubleType | T.IntegerType | T.LongType | T.ShortType
    ):
        raise ValueError(f"propagate: column {features!r} must be array<float>, got {ftype.simpleString()}")
    x0 = vertices.select(F.col("id").cast("long").alias("id"), F.col(features).cast(_FEATURES_T).alias("features"))
    # a null weight is bad data (checked while the edges are packed), not weight 1.0; only a missing
    # weight column (or weight=None) means 1.0
    w = F.col(weight).cast("float") if weight and weight in edges.columns else F.lit(1.0).cast("float")
    e = edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"), w.alias("weight"))
    spark = vertices.sparkSession
    # kept for the plan's own read: the features often come out of a dense layer (a Python UDF), which
    # would otherwise run twice (for this check and for the plan)
    x0 = x0.persist()
    try:
        n, dim = check_features(x0, "features")
    except InvalidGraphError:
        x0.unpersist()
        raise
    return _Inputs(spark, x0, e, n, dim, edges)


# ------------------------------------------------------------------------------ round-state store


class _RoundStore:
    """Round state under ``<checkpoint>/round-NNNN/`` with a ``_COMPLETE`` marker (resume support)."""

    def __init__(self, root: str | None, signature: dict[str, Any]) -> None:
        self.root = root.rstrip("/") if root else None
        self.signature = signature

    def _dir(self, k: int) -> str:
        return f"{self.root}/round-{k:04d}"

    def latest(self, rounds: int) -> int:
        """Highest complete round <= rounds written for the same signature, else 0."""
        if not self.root:
            return 0
        meta_path = f"{self.root}/_signature.json"
        if not storage.path_exists(meta_path) or json.loads(storage.read_text(meta_path)) != self.signature:
            return 0
        for k in range(rounds, 0, -1):
            if storage.path_exists(f"{self._dir(k)}/_COMPLETE"):
                return k
        return 0

    def begin(self) -> None:
        if not self.root:
            return
        meta_path = f"{self.root}/_signature.json"
        if storage.path_exists(meta_path) and json.loads(storage.read_text(meta_path)) == self.signature:
            return
        if storage.path_exists(self.root):
            storage.delete_path(self.root)  # state of another computation: start clean
        storage.write_json(meta_path, self.signature)

    def complete(self, k: int) -> None:
        if self.root:
                storage.write_text(f"{self._dir(k)}/_COMPLETE", str(time.time()))

    def path(self, k: int, name: str) -> str:
        return f"{self._dir(k)}/{name}"


# ---------------------------------------------------------------------------------- broadcast plan


class OperatorCache:
    """Prepared broadcast operators, keyed by the edges they were packed from.

    A model's forward pass propagates every layer over the same (normalised) edges: with one cache
    around the pass, the edges are packed into blocks once, not once per layer. The key is the edges
    DataFrame object itself, or a caller's ``key`` that names the edges (the nightly uses the graph
    directory, so its analytics reuse the blocks its propagation packed; the blocks carry the edge
    weights, and unweighted rounds ignore them). :meth:`close` unpersists them (results of the
    broadcast plan are local rows, so nothing downstream needs them).
    """

    def __init__(self) -> None:
        self._ops: dict[Any, tuple[Any, BroadcastOperator]] = {}

    @staticmethod
    def _key(edges: Any, key: Any) -> tuple[Any, Any]:
        return (("key", key), None) if key is not None else (("df", id(edges)), edges)

    def get(self, edges: Any, ids: np.ndarray, key: Any = None) -> BroadcastOperator | None:
        k, obj = self._key(edges, key)
        hit = self._ops.get(k)
        if hit is None or hit[0] is not obj:
            return None
        op = hit[1]
        same = (op.ids is None and len(ids) == op.n and (op.n == 0 or (ids[0] == 0 and ids[-1] == op.n - 1))) \
            or (op.ids is not None and np.array_equal(op.ids, ids))
        return op if same else None

    def put(self, edges: Any, op: BroadcastOperator, key: Any = None) -> None:
        k, obj = self._key(edges, key)
        old = self._ops.pop(k, None)
        if old is not None:
            old[1].close()
        self._ops[k] = (obj, op)

    def close(self) -> None:
        for _, op in self._ops.values():
            op.close()
        self._ops.clear()


def _broadcast_plan(inp: _Inputs, rounds: int, agg: str, parts: int, store: _RoundStore,
                    interval: int, on_round: RoundCallback | None, local_exchange: bool = True,
                    cache: OperatorCache | None = None, normalize: str | None = None,
                    operator_key: Any = None) -> DataFrame:
    t0 = time.perf_counter()
    table = storage.collect_arrow(inp.x0)
    ids = table.column("id").to_numpy()
    x = list_to_matrix(table.column("features"), inp.dim)
    order = np.argsort(ids, kind="stable")
    ids, x = ids[order], np.ascontiguousarray(x[order])
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise InvalidGraphError(f"propagate: {int(np.sum(ids[1:] == ids[:-1]))} duplicate vertex ids")
    n = len(ids)
    op = cache.get(inp.source_edges, ids, operator_key) if cache is not None and inp.source_edges is not None \
        else None
    reused = op is not None
    if op is None:
        op = BroadcastOperator.prepare(inp.spark, ids, inp.edges, parts, local_exchange=local_exchange,
                                       message_bytes=x.nbytes)
        if cache is not None and inp.source_edges is not None:
            cache.put(inp.source_edges, op, operator_key)
    log.info("propagate[broadcast]: %d vertices x %d dims, %d edges; %s in %.2fs", n, inp.dim, op.nnz,
             "edge blocks reused" if reused else "prepared", time.perf_counter() - t0)

    dinv = None
    if normalize == "sym":  # D^-1/2 (A + I) D^-1/2 with D the weighted in-degree plus the self-loop
        dinv = (1.0 / np.sqrt(op.in_degrees() + 1.0)).astype(np.float32)[:, None]

    def one_round(x: np.ndarray) -> np.ndarray:
        if dinv is None:
            return op.apply(x, agg)[0]
        y = dinv * x
        return dinv * (op.apply(y, "sum")[0] + y)

    start = store.latest(rounds)
    store.begin()
    if start:
        x = np.load(_open_binary(store.path(start, "x.npy")), allow_pickle=False)
        log.info("propagate[broadcast]: resuming after round %d/%d from %s", start, rounds, store.root)
    try:
        for k in range(start + 1, rounds + 1):
            logs.set_round(k)
            tk = time.perf_counter()
            x = one_round(x)
            secs = time.perf_counter() - tk
            if store.root and (k % interval == 0 or k == rounds):
                _save_npy(store.path(k, "x.npy"), x)
                store.complete(k)
            log.info("propagate[broadcast] round %d/%d: %d rows, %.2fs", k, rounds, n, secs)
            if on_round:
                on_round(k, {"round": k, "rounds": rounds, "rows": n, "seconds": secs, "plan": "broadcast"})
    finally:
        logs.set_round(None)
        if cache is None:
            op.close()
    out = pa.table({"id": pa.array(ids, pa.int64()), "features": matrix_to_list(x)})
    return storage.create_df(inp.spark, out, _RESULT_SCHEMA)


def _open_binary(path: str) -> Any:
    from lepton_spark.storage import filesystem

    fs, p = filesystem(path)
    return fs.open_input_file(p)


def _save_npy(path: str, arr: np.ndarray) -> None:
    import io as _io

    from lepton_spark.storage import write_bytes

    buf = _io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes(path, buf.getvalue(), fsync=False)  # resume scratch: atomic, not worth an fsync per round


# -------------------------------------------------------------------------------- partitioned plan


_EBLOCK_SCHEMA = T.StructType(
    [
        T.StructField("pid", T.IntegerType()),
        T.StructField("n", T.LongType()),
        T.StructField("ids", T.BinaryType()),
        T.StructField("indeg", T.BinaryType()),
        T.StructField("tgt", T.BinaryType()),
        T.StructField("tgt_local", T.BinaryType()),
        T.StructField("indptr", T.BinaryType()),
        T.StructField("indices", T.BinaryType()),
        T.StructField("data", T.BinaryType()),
        T.StructField("bad_weights", T.LongType()),
    ]
)
_PARTIAL_VALUE_BYTES = 64 << 10  # target size of one binary partial value
_PARTIAL_BLOB = T.StructType(
    [T.StructField("pid", T.IntegerType()), T.StructField("local", T.BinaryType()),
     T.StructField("values", T.BinaryType())]
)
_PARTIAL_ROWS = T.StructType(
    [T.StructField("pid", T.IntegerType()), T.StructField("local", T.IntegerType()),
     T.StructField("features", _FEATURES_T)]
)


def _to_table(obj: Any) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    return pa.Table.from_pandas(obj, preserve_index=False)  # pyspark 3.5 cogroup hands pandas frames


def _cogroup(left: DataFrame, right: DataFrame, fn: Callable[[pa.Table, pa.Table], pa.Table],
             schema: T.StructType) -> DataFrame:
    grouped = left.groupBy("pid").cogroup(right.groupBy("pid"))
    if hasattr(grouped, "applyInArrow"):
        return grouped.applyInArrow(fn, schema)

    def pandas_fn(lp: Any, rp: Any) -> Any:  # pyspark 3.5
        return fn(_to_table(lp), _to_table(rp)).to_pandas()

    return grouped.applyInPandas(pandas_fn, schema)


def _cell(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    col = table.column(name)
    value = col[0]
    buf = value.as_buffer() if hasattr(value, "as_buffer") else pa.py_buffer(value.as_py())
    return np.frombuffer(buf, dtype=dtype)


def _block_keys(spark: SparkSession, blocks: int) -> list[int]:
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


def _partitioned_plan(inp: _Inputs, rounds: int, agg: str, blocks: int, native: bool, store: _RoundStore,
                      interval: int, on_round: RoundCallback | None) -> DataFrame:
    t0 = time.perf_counter()
    dim = inp.dim
    parts = blocks  # one block per partition: every task holds one block
    keys = _block_keys(inp.spark, blocks)
    block = (F.pmod(F.xxhash64("id"), F.lit(blocks)) + 1).cast("int")
    pid = F.element_at(F.array(*[F.lit(k) for k in keys]), block).cast("int")
    vfull = _cut(inp.x0.withColumn("pid", pid).withColumn(
        "local", (F.row_number().over(Window.partitionBy("pid").orderBy("id")) - 1).cast("int")
    ))
    vl = vfull.select("id", "pid", "local")
    s = vl.select(F.col("id").alias("src"), F.col("pid").alias("spid"), F.col("local").alias("slocal"))
    d = vl.select(F.col("id").alias("dst"), F.col("pid").alias("dpid"), F.col("local").alias("dlocal"))
    e = inp.edges.join(s, "src").join(d, "dst").select("spid", "slocal", "dpid", "dlocal", "weight")
    indeg = e.groupBy(F.col("dpid").alias("pid"), F.col("dlocal").alias("local")).agg(
        F.count(F.lit(1)).cast("int").alias("indeg"))
    vside = vl.join(indeg, ["pid", "local"], "left").select("pid", "id", "local", F.coalesce("indeg", F.lit(0)).alias("indeg"))
    eside = e.withColumnRenamed("spid", "pid")

    def pack(vt: pa.Table, et: pa.Table) -> pa.Table:
        if vt.num_rows == 0:
            return pa.Table.from_pylist([], schema=_EBLOCK_SCHEMA_PA)
        order = np.argsort(vt.column("local").to_numpy(), kind="stable")
        ids = vt.column("id").to_numpy()[order]
        indeg_ = vt.column("indeg").to_numpy().astype(np.int32)[order]
        if et.num_rows:
            tgt_pid = et.column("dpid").to_numpy().astype(np.int64)
            tgt_loc = et.column("dlocal").to_numpy().astype(np.int64)
            key = tgt_pid * (1 << 32) + tgt_loc  # rows ordered by (target block, local index)
            wt = et.column("weight").to_numpy(zero_copy_only=False)  # a null weight arrives as NaN
            bad_weights = int(np.count_nonzero(~np.isfinite(wt)))
            rows, indptr, indices, data = kernels.csr_from_pairs(
                key, et.column("slocal").to_numpy().astype(np.int32), wt)
            tgt, tgt_local = (rows >> 32).astype(np.int32), (rows & 0xFFFFFFFF).astype(np.int32)
        else:
            tgt = tgt_local = indices = np.zeros(0, np.int32)
            bad_weights = 0
            indptr, data = np.zeros(1, np.int64), np.zeros(0, np.float32)
        row = {"pid": int(vt.column("pid")[0].as_py()), "n": len(ids), "ids": ids.astype(np.int64).tobytes(),
               "indeg": indeg_.tobytes(), "tgt": tgt.tobytes(), "tgt_local": tgt_local.tobytes(),
               "indptr": indptr.tobytes(), "indices": indices.astype(np.int32).tobytes(),
               "data": data.astype(np.float32).tobytes(), "bad_weights": bad_weights}
        return pa.Table.from_pylist([row], schema=_EBLOCK_SCHEMA_PA)

    eblocks = _cogroup(vside, eside, pack, _EBLOCK_SCHEMA)
    # cached partitioned and sorted by pid: each round's cogroup reads it with no exchange and no sort.
    # The partials are repartitioned explicitly into the same B partitions, so that co-partitioning
    # never rests on how a Spark version picks the partition count of the cogroup's shuffle.
    eblocks = eblocks.repartition(parts, "pid").sortWithinPartitions("pid").persist()
    stats = eblocks.agg(F.count(F.lit(1)).alias("nb"), F.sum("bad_weights").alias("bad")).first()
    nb = int(stats["nb"])
    if stats["bad"]:
        eblocks.unpersist()
        raise InvalidGraphError(f"propagate: {int(stats['bad'])} edges have a null, NaN or infinite weight")
    log.info("propagate[partitioned]: %d vertices x %d dims in %d blocks (%d partitions), %s aggregation; "
             "prepared in %.2fs", inp.n, dim, nb, parts, "native vector_sum" if native else "numpy",
             time.perf_counter() - t0)

    delay = fault_sleep()
    step_rows = max(1, _PARTIAL_VALUE_BYTES // (4 * dim))  # rows per binary partial value

    def step_fn(final: bool, rows_mode: bool, finalize_mean: bool) -> Callable[[pa.Table, pa.Table], pa.Table]:
        def step(incoming: pa.Table, eb: pa.Table) -> pa.Table:
            if delay and not final:
                time.sleep(delay)
            if eb.num_rows == 0:
                return pa.Table.from_pylist([], schema=_FINAL_PA if final else
                                            (_ROWS_PA if native else _BLOB_PA))
            n = int(eb.column("n")[0].as_py())
            ids = _cell(eb, "ids", np.int64)
            if rows_mode:
                x = np.zeros((n, dim), dtype=np.float32)
                if incoming.num_rows:
                    x[incoming.column("local").to_numpy()] = list_to_matrix(incoming.column("features"), dim)
            else:
                locs = arrow.binary_cells(incoming.column("local"))
                vals = arrow.binary_cells(incoming.column("values"))
                partials = [(np.frombuffer(lb, np.int32), np.frombuffer(vb, np.float32).reshape(-1, dim))
                             for lb, vb in zip(locs, vals)]
                x = kernels.combine(n, dim, partials, agg)
            if finalize_mean:
                x = x / np.maximum(_cell(eb, "indeg", np.int32), 1).astype(np.float32)[:, None]
            if final:
                return pa.table({"id": pa.array(ids), "features": matrix_to_list(x)})
            indptr = _cell(eb, "indptr", np.int64)
            y = kernels.block_apply(indptr, _cell(eb, "indices", np.int32), _cell(eb, "data", np.float32), x,
                                    "max" if agg == "max" else "sum")
            tgt = _cell(eb, "tgt", np.int32)
            tgt_local = _cell(eb, "tgt_local", np.int32)
            if native:
                return pa.table({"pid": pa.array(tgt), "local": pa.array(tgt_local),
                                 "features": matrix_to_list(y)})
            if not len(tgt):
                return pa.Table.from_pylist([], schema=_BLOB_PA)
            # partials per target block, as views of y, cut into values of about 64 KiB: the JVM copies
            # many small binary values much faster than a few of hundreds of MB (measured 3.2 against
            # 5-7 s per round at 1M vertices x 64 dims)
            starts = np.flatnonzero(np.diff(tgt)) + 1
            bounds = np.concatenate([[0], starts, [len(tgt)]]).astype(np.int64)
            cuts = [np.arange(a + step_rows, b, step_rows) for a, b in itertools.pairwise(bounds)]
            bounds = np.unique(np.concatenate([bounds, *cuts])).astype(np.int64)
            return pa.table({
                "pid": pa.array(tgt[bounds[:-1]], pa.int32()),
                "local": arrow.binary_segments(tgt_local, bounds),
                "values": arrow.binary_segments(y, bounds),
            })

        return step

    x_rows = vfull.select("pid", "local", "features")
    start = store.latest(rounds)
    store.begin()
    state: DataFrame = x_rows
    state_rows_mode, state_mean = True, False
    if start:
        state = inp.spark.read.parquet(store.path(start, "state"))
        state_rows_mode = native
        state_mean = agg == "mean"
        if not native:
            state = state.select("pid", "local", "values")
        log.info("propagate[partitioned]: resuming after round %d/%d from %s", start, rounds, store.root)
    try:
        for k in range(start + 1, rounds + 1):
            logs.set_round(k)
            tk = time.perf_counter()
            out = _cogroup(state.repartition(parts, "pid"), eblocks, step_fn(False, state_rows_mode, state_mean),
                           _PARTIAL_ROWS if native else _PARTIAL_BLOB)
            if native:
                out = out.groupBy("pid", "local").agg(F.vector_sum("features").alias("features"))
                state_rows_mode = True
            else:
                state_rows_mode = False
            state_mean = agg == "mean"
            if store.root and (k % interval == 0 or k == rounds):
                out.write.mode("overwrite").parquet(store.path(k, "state"))
                store.complete(k)
                out = inp.spark.read.parquet(store.path(k, "state"))
            elif k % interval == 0:
                out = _cut(out)
            state = out
            secs = time.perf_counter() - tk
            # rows = vertices updated (as in the broadcast plan); counting the partials would cost a job.
            # Rounds between lineage cuts are only planned here and run in the job of the next cut.
            cut = k % interval == 0 or bool(store.root and k == rounds)
            ran = "" if cut else " (planned; runs with the next lineage cut)"
            log.info("propagate[partitioned] round %d/%d: %d rows, %.2fs%s", k, rounds, inp.n, secs, ran)
            if on_round:
                on_round(k, {"round": k, "rounds": rounds, "rows": inp.n, "seconds": secs, "plan": "partitioned"})
        result = _cogroup(state.repartition(parts, "pid"), eblocks, step_fn(True, state_rows_mode, state_mean),
                          _RESULT_SCHEMA)
        result = _cut(result)
    finally:
        logs.set_round(None)
        eblocks.unpersist()
    return result


def _pa_schema(schema: T.StructType) -> pa.Schema:
    mapping = {T.IntegerType: pa.int32(), T.LongType: pa.int64(), T.BinaryType: pa.binary()}
    fields = []
    for f in schema.fields:
        if isinstance(f.dataType, T.ArrayType):
            fields.append(pa.field(f.name, FLOAT_LIST))
        else:
            fields.append(pa.field(f.name, mapping[type(f.dataType)]))
    return pa.schema(fields)


_EBLOCK_SCHEMA_PA = _pa_schema(_EBLOCK_SCHEMA)
_BLOB_PA = _pa_schema(_PARTIAL_BLOB)
_ROWS_PA = _pa_schema(_PARTIAL_ROWS)
_FINAL_PA = _pa_schema(_RESULT_SCHEMA)


# ------------------------------------------------------------------------------------------ public


def propagate(
    g: Any,
    features: str = "features",
    weight: str | None = "weight",
    rounds: int = 1,
    agg: str = "sum",
    *,
    plan: str | None = None,
    native_aggregate: str | None = None,
    num_blocks: int | None = None,
    broadcast_max_bytes: int | None = None,
    checkpoint: str | None = None,
    checkpoint_interval: int | None = None,
    on_round: RoundCallback | None = None,
    config: GraphConfig | None = None,
    operators: OperatorCache | None = None,
    normalize: str | None = None,
    operator_key: Any = None,
) -> DataFrame:
    """``rounds`` rounds of ``x'_v = agg_{(u -> v, w)} w * x_u``; returns DataFrame(id, features).

    Every vertex is in the result; a vertex that receives nothing gets a zero vector. Edges whose
    ``src`` or ``dst`` is not a vertex are ignored. The plan (broadcast or partitioned, see the module
    docstring and ``docs/architecture.md`` §2.1) is chosen once per call and logged.

    Parameters
    ----------
    g : GraphFrame
        The graph: ``g.vertices`` has ``id`` (long) and ``features`` (``array<float>``, one length),
        ``g.edges`` has ``src``, ``dst`` and optionally ``weight``.
    features : str, default "features"
        The vertex column holding the feature vectors.
    weight : str or None, default "weight"
        The edge weight column; ``None`` or a missing column means weight 1.0.
    rounds : int, default 1
        Number of propagation rounds (0 returns the input features).
    agg : {"sum", "mean", "max"}, default "sum"
        How the weighted messages ``w * x_u`` arriving at a vertex are combined.
    plan : {"auto", "broadcast", "partitioned"}, optional
        The physical plan; default ``config.plan``. ``auto`` picks broadcast when the feature matrix
        (``n * d * 4`` bytes) fits ``broadcast_max_bytes`` (always partitioned on Spark Connect).
    native_aggregate : {"auto", "on", "off"}, optional
        Partitioned plan: let Spark sum the partials with ``vector_sum`` (Spark >= 4.3); default
        ``config.native_aggregate``.
    num_blocks : int, optional
        Partitioned plan: the number of vertex blocks (default: one per task slot, more only when a
        block would exceed ``config.block_max_bytes``).
    broadcast_max_bytes : int, optional
        The ``auto`` plan's threshold; default ``config.broadcast_max_bytes``.
    checkpoint : str, optional
        A directory for the round state: each completed round is written there, and a later call
        with the same inputs resumes after the last complete round.
    checkpoint_interval : int, optional
        Cut the lineage every this many rounds; default ``config.checkpoint_interval``.
    on_round : callable, optional
        ``on_round(k, info)`` after round ``k``; ``info`` has the round's row count, seconds and plan.
    config : GraphConfig, optional
        The ``graph.*`` settings the defaults above come from (default ``GraphConfig()``).
    operators : OperatorCache, optional
        Shared by several calls over the same edges DataFrame (a model's layers): the broadcast plan
        packs the edge blocks once and reuses them; the caller closes the cache.
    normalize : {None, "sym"}, default None
        ``"sym"`` propagates with GCN's ``D^-1/2 (A + I) D^-1/2`` of the given edges (D: weighted
        in-degree plus the self-loop; ``agg`` must be sum). The broadcast plan scales on the driver
        around ``(A + I) x`` and never builds normalised edges; the partitioned plan normalises the
        edge table first (:func:`~lepton_spark.graph.normalize.normalize_edges`).
    operator_key : object, optional
        Names the edges in ``operators`` instead of the DataFrame object (see :class:`OperatorCache`).

    Returns
    -------
    DataFrame
        ``id`` (long), ``features`` (``array<float>``): one row per vertex.

    Raises
    ------
    ValueError
        For an unknown ``agg``, ``plan`` or ``normalize``, or negative ``rounds``.
    InvalidGraphError
        For null, ragged, NaN or infinite features, or null, NaN or infinite weights.

    Examples
    --------
    Vertex 0 receives nothing, 1 gets ``x_0``, and 2 gets ``0.5 x_1`` plus its self-loop ``2 x_2``:

    >>> from lepton_spark.graph import GraphFrame, propagate
    >>> v = spark.createDataFrame([(0, [1.0, 0.0]), (1, [0.0, 1.0]), (2, [1.0, 1.0])],
    ...                           "id long, features array<float>")
    >>> e = spark.createDataFrame([(0, 1, 1.0), (1, 2, 0.5), (2, 2, 2.0)], "src long, dst long, weight float")
    >>> out = propagate(GraphFrame(v, e), rounds=1, agg="sum")
    >>> sorted((r["id"], r["features"]) for r in out.collect())
    [(0, [0.0, 0.0]), (1, [1.0, 0.0]), (2, [2.0, 2.5])]
    """
    cfg = config or GraphConfig()
    plan = plan or cfg.plan
    native_mode = native_aggregate or cfg.native_aggregate
    interval = checkpoint_interval or cfg.checkpoint_interval
    max_bytes = cfg.broadcast_max_bytes if broadcast_max_bytes is None else broadcast_max_bytes
    if agg not in kernels.AGGS:
        raise ValueError(f"propagate: agg must be one of {', '.join(kernels.AGGS)}, got {agg!r}")
    if plan not in PLANS:
        raise ValueError(f"propagate: plan must be one of {', '.join(PLANS)}, got {plan!r}")
    if rounds < 0:
        raise ValueError(f"propagate: rounds must be >= 0, got {rounds}")
    if normalize not in (None, "sym") or (normalize == "sym" and agg != "sum"):
        raise ValueError(f"propagate: normalize must be None or 'sym' (with agg='sum'), got {normalize!r}")
    inp = _prepare(g, features, weight)
    try:
        return _run(inp, rounds, agg, plan, cfg, native_mode, max_bytes, num_blocks, checkpoint, interval, on_round,
                    operators, normalize, operator_key)
    finally:
        inp.x0.unpersist()


def _run(inp: _Inputs, rounds: int, agg: str, plan: str, cfg: GraphConfig, native_mode: str, max_bytes: int,
         num_blocks: int | None, checkpoint: str | None, interval: int, on_round: RoundCallback | None,
         operators: OperatorCache | None = None, normalize: str | None = None,
         operator_key: Any = None) -> DataFrame:
    if rounds == 0 or inp.n == 0:
        return inp.x0
    size = inp.n * inp.dim * 4
    if plan == "auto":
        if is_connect(inp.spark):
            chosen, why = "partitioned", "Spark Connect: the feature matrix never rides in a client closure"
        else:
            chosen = "broadcast" if size <= max_bytes else "partitioned"
            why = (f"feature matrix {size / 2**20:.1f} MiB {'<=' if chosen == 'broadcast' else '>'} "
                   f"{max_bytes / 2**20:.0f} MiB")
    else:
        chosen, why = plan, "forced"
    parts = cfg.num_partitions or shuffle_partitions(inp.spark)
    native = False
    if chosen == "partitioned":
        available = native_aggregate_available(inp.spark)
        if native_mode == "on" and not available:
            raise ValueError(f"propagate: native vector aggregation needs Spark >= 4.3 (running {inp.spark.version})")
        native = native_mode == "on" and agg != "max"
    log.info("propagate: %s plan (%s), %d rounds, agg=%s", chosen, why, rounds, agg)
    signature = {"n": inp.n, "dim": inp.dim, "rounds_plan": chosen, "agg": agg, "native": native,
                 "normalize": normalize}
    store = _RoundStore(checkpoint, signature)
    if chosen == "broadcast":
        return _broadcast_plan(inp, rounds, agg, parts, store, interval, on_round, cfg.local_exchange, operators,
                               normalize, operator_key)
    factors = None
    if normalize == "sym":
        inp.edges, factors = sym_edges(inp.edges, inp.x0.select("id"))
    slots = cfg.num_partitions or task_slots(inp.spark)
    blocks = num_blocks or num_partitioned_blocks(size, slots, cfg.block_max_bytes)
    try:
        return _partitioned_plan(inp, rounds, agg, blocks, native, store, interval, on_round)
    finally:
        if factors is not None:
            factors.unpersist()


def sym_edges(edges: DataFrame, ids: DataFrame) -> tuple[DataFrame, DataFrame]:
    """GCN's ``D^-1/2 (A + I) D^-1/2`` as an edge table: every edge weighted ``w / sqrt(d_src d_dst)`` plus
    one loop ``1 / d_v`` per vertex, with ``d`` the weighted in-degree (edges from vertices) plus 1.

    Multi-edges stay separate rows (a round sums them, as it sums the merged weight), so unlike
    :func:`~lepton_spark.graph.normalize.normalize_edges` nothing is grouped by (src, dst): one
    aggregation by dst and two joins with the per-vertex factor (shuffle joins: this is the plan for
    graphs whose vertex tables are large; broadcasting them ran a 4 GiB driver out of heap at 1M
    vertices). Edges whose src or dst is not a vertex are dropped, as
    propagation ignores them. The same operator as the broadcast plan's on-the-fly scaling.
    Returns the edge table and the persisted per-vertex factors (unpersist them when done).
    """
    valid = edges.join(ids.select(F.col("id").alias("src")), "src", "left_semi") \
        .join(ids.select(F.col("id").alias("dst")), "dst", "left_semi")
    deg = valid.groupBy(F.col("dst").alias("id")).agg(F.sum(F.col("weight").cast("double")).alias("deg"))
    dinv = ids.join(deg, "id", "left").select(
        "id", (F.lit(1.0) / F.sqrt(F.coalesce(F.col("deg"), F.lit(0.0)) + F.lit(1.0))).alias("dinv"))
    dinv = dinv.persist()
    e = valid.join(dinv.select(F.col("id").alias("src"), F.col("dinv").alias("_ds")), "src") \
        .join(dinv.select(F.col("id").alias("dst"), F.col("dinv").alias("_dd")), "dst") \
        .select("src", "dst", (F.col("weight") * F.col("_ds") * F.col("_dd")).cast("float").alias("weight"))
    loops = dinv.select(F.col("id").alias("src"), F.col("id").alias("dst"),
                        (F.col("dinv") * F.col("dinv")).cast("float").alias("weight"))
    return e.unionByName(loops), dinv


def num_partitioned_blocks(size: int, slots: int, max_block_bytes: int) -> int:
    """Blocks for the partitioned plan: one per task slot, more only when a block would exceed the limit.

    Every block beyond that costs shuffle volume and buys no parallelism: a vertex receives one partial
    from every block that holds an in-neighbour of it. On the 1M-vertex/10M-edge benchmark graph the
    partials are 1.6 feature matrices per round with 2 blocks, 2.5 with 4 and 3.4 with 8.
    """
    return max(1, slots, math.ceil(size / max(1, max_block_bytes)))


def spmm(entries: DataFrame, dense: DataFrame, *, row: str = "row", col: str = "col", value: str = "value",
         features: str = "features", **kwargs: Any) -> DataFrame:
    """C = A·B for sparse A as (row, col, value) entries and dense B as (id, features).

    One :func:`propagate` round (the same code) on the edges ``col -> row`` weighted by ``value``.

    Parameters
    ----------
    entries : DataFrame
        The non-zero entries of A, one row per (row, col); columns named by ``row``, ``col``, ``value``.
    dense : DataFrame
        B as ``id`` and ``features`` (arrays of one length); row ``id`` of B is column ``id`` of A.
    row, col, value : str, default "row", "col", "value"
        The column names in ``entries``.
    features : str, default "features"
        The array column of ``dense``.
    **kwargs
        Passed to :func:`propagate` (``plan``, ``config``, ...).

    Returns
    -------
    DataFrame
        ``id`` (long), ``features`` (``array<float>``): one row per id of B and per row id of A (a
        zero vector where A's row is empty).

    Examples
    --------
    ``A = [[2, 1], [0, 3]]`` times ``B = [[1, 2], [3, 4]]``:

    >>> from lepton_spark.graph import spmm
    >>> a = spark.createDataFrame([(0, 0, 2.0), (0, 1, 1.0), (1, 1, 3.0)], "row long, col long, value double")
    >>> b = spark.createDataFrame([(0, [1.0, 2.0]), (1, [3.0, 4.0])], "id long, features array<double>")
    >>> sorted((r["id"], r["features"]) for r in spmm(a, b).collect())
    [(0, [5.0, 8.0]), (1, [9.0, 12.0])]
    """
    b = dense.select(F.col("id").cast("long").alias("id"), F.col(features).cast(_FEATURES_T).alias("features"))
    dim_row = b.select(F.size("features").alias("d")).first()
    extra_ids = entries.select(F.col(row).cast("long").alias("id")).distinct().join(b.select("id"), "id", "left_anti")
    if dim_row is not None:
        zeros = F.array_repeat(F.lit(0.0).cast("float"), int(dim_row["d"])).cast(_FEATURES_T)
        b = b.unionByName(extra_ids.select("id", zeros.alias("features")))
    edges = entries.select(F.col(col).cast("long").alias("src"), F.col(row).cast("long").alias("dst"),
                           F.col(value).cast("float").alias("weight"))
    return propagate(_Graph(b, edges), features="features", weight="weight", rounds=1, agg="sum", **kwargs)
