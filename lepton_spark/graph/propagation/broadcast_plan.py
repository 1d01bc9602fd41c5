"""The broadcast plan of :func:`~lepton_spark.graph.propagation.propagate` (docs/architecture.md §2.1).

The feature matrix is small enough to sit in one process. It is held on the driver and shipped with
each round's task closure (PySpark broadcasts large closures; in local mode a memory-mapped file in
``/dev/shm`` instead). The edges are partitioned by dst once, and every partition is packed once into
a CSR block (rows = its destinations, cols = source positions) that is cached as a single binary row
(:class:`~lepton_spark.graph.blocks.BroadcastOperator`). A round is one mapInArrow over the cached
blocks: one scipy ``csr @ X`` per block, and its complete rows come back as binary blobs. Nothing is
shuffled, and no per-row work happens on the JVM. This is the fastest plan on one machine.

``normalize="sym"`` never builds normalised edges: the driver scales by ``D^-1/2`` around
``(A + I) x``. :class:`OperatorCache` shares the packed blocks between calls over the same edges.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from lepton_spark import storage
from lepton_spark.errors import InvalidGraphError
from lepton_spark.graph import resident
from lepton_spark.graph.arrow import FLOAT_LIST, list_to_matrix, matrix_to_list
from lepton_spark.graph.blocks import BroadcastOperator, EdgeFiles
from lepton_spark.graph.propagation.inputs import Inputs, check_matrix
from lepton_spark.graph.propagation.rounds import Rounds, RoundStore
from lepton_spark.graph.propagation.schemas import RESULT

log = logging.getLogger(__name__)


class OperatorCache:
    """Prepared broadcast operators, keyed by the edges they were packed from.

    A model's forward pass propagates every layer over the same (normalised) edges: with one cache
    around the pass, the edges are packed into blocks once, not once per layer. The key is the edges
    DataFrame object itself, or a caller's ``key`` that names the edges (the nightly uses the graph
    directory, so its analytics reuse the blocks its propagation packed; the blocks carry the edge
    weights, and unweighted rounds ignore them). :meth:`close` unpersists them (results of the
    broadcast plan are local rows, so nothing downstream needs them).

    The partitioned plan keeps its cached edge blocks here too (:meth:`get_blocks`, :meth:`put_blocks`:
    an object with ``close()``, keyed by the edges and the plan's block layout), and the vertex
    programs of the same graph run on them (:meth:`find_blocks`).
    """

    def __init__(self) -> None:
        self._ops: dict[Any, tuple[Any, BroadcastOperator]] = {}
        self._blocks: dict[Any, tuple[Any, Any]] = {}  # (edges key, layout) -> (edges object, blocks)
        # propagated tables by a caller's recipe (see get_result), kept until close
        self._results: dict[Any, Any] = {}

    @staticmethod
    def _key(edges: Any, key: Any) -> tuple[Any, Any]:
        return (("key", key), None) if key is not None else (("df", id(edges)), edges)

    def get(self, edges: Any, ids: np.ndarray, key: Any = None) -> BroadcastOperator | None:
        """The operator packed from ``edges`` (or ``key``) over the same vertex ids, else None."""
        k, obj = self._key(edges, key)
        hit = self._ops.get(k)
        if hit is None or hit[0] is not obj:
            return None
        op = hit[1]
        same = (op.ids is None and len(ids) == op.n and (op.n == 0 or (ids[0] == 0 and ids[-1] == op.n - 1))) \
            or (op.ids is not None and np.array_equal(op.ids, ids))
        return op if same else None

    def put(self, edges: Any, op: BroadcastOperator, key: Any = None) -> None:
        """Keep ``op`` for ``edges`` (or ``key``), closing the operator it replaces."""
        k, obj = self._key(edges, key)
        old = self._ops.pop(k, None)
        if old is not None:
            old[1].close()
        self._ops[k] = (obj, op)

    def get_blocks(self, edges: Any, layout: Any, key: Any = None) -> Any:
        """The partitioned plan's blocks packed from ``edges`` (or ``key``) with ``layout``, else None."""
        k, obj = self._key(edges, key)
        hit = self._blocks.get((k, layout))
        return hit[1] if hit is not None and hit[0] is obj else None

    def put_blocks(self, edges: Any, layout: Any, blocks: Any, key: Any = None) -> None:
        """Keep the partitioned plan's ``blocks`` for ``edges`` (or ``key``) and ``layout``; the cache closes them."""
        k, obj = self._key(edges, key)
        old = self._blocks.pop((k, layout), None)
        if old is not None:
            old[1].close()
        self._blocks[(k, layout)] = (obj, blocks)

    def find_blocks(self, key: Any) -> Any:
        """Any partitioned blocks a propagation packed from the edges named ``key`` (its first), else None."""
        return next((b for (k, _layout), (_o, b) in self._blocks.items() if k == ("key", key)), None)

    def get_result(self, recipe: Any) -> Any:
        """The propagated table kept under ``recipe`` (:meth:`put_result`), else None.

        A recipe names a computation completely (the graph, how its input was derived from the graph's
        features, the operator, the rounds): the nightly's train stage propagates SGC's features over
        the graph, and its propagate stage asks for the same table with the same recipe.
        """
        return self._results.get(recipe)

    def put_result(self, recipe: Any, table: Any) -> None:
        """Keep the propagated ``table`` (materialised: cut or local rows) under ``recipe``."""
        self._results[recipe] = table

    def drop_results(self) -> None:
        """Unpersist and forget the kept results (the operators stay)."""
        for table in self._results.values():
            table.unpersist()
        self._results.clear()

    def close(self) -> None:
        """Unpersist every operator and kept result, and forget them."""
        for _, op in self._ops.values():
            op.close()
        self._ops.clear()
        for _, blocks in self._blocks.values():
            blocks.close()
        self._blocks.clear()
        self.drop_results()


class _BroadcastRounds:
    """The broadcast plan's rounds (a :class:`~.rounds.RoundPlan`): the state is the feature matrix on the driver."""

    name = "broadcast"
    lazy = False  # a step is the round's Spark job

    def __init__(self, op: BroadcastOperator, agg: str, dinv: np.ndarray | None, rows: int) -> None:
        self.op, self.agg, self.dinv, self.rows = op, agg, dinv, rows
        self._made: np.ndarray | None = None  # the last matrix step() returned (this plan's own)

    def step(self, x: np.ndarray) -> np.ndarray:
        if self.dinv is None:
            return self.op.apply(x, self.agg)[0]
        # D^-1/2 (A + I) D^-1/2 x, scaled on the driver around (A + I) y; in place: every fresh matrix
        # of 1M x 64 costs its page faults (a second a round on the benchmark machine). The previous
        # round's result (made here; the round job reads its saved copy) is updated in place; the
        # caller's input matrix is never written
        if x is self._made and np.result_type(self.dinv, x) == x.dtype:
            y = np.multiply(self.dinv, x, out=x)
        else:
            y = self.dinv * x
        y += self.op.apply(y, "sum")[0]
        y *= self.dinv
        self._made = y
        return y

    def save(self, store: RoundStore, k: int, x: np.ndarray) -> np.ndarray:
        store.write_array(k, "x.npy", x)
        return x

    def load(self, store: RoundStore, k: int) -> np.ndarray:
        return store.read_array(k, "x.npy")

    def cut(self, x: np.ndarray) -> np.ndarray:
        return x  # a driver-side matrix has no lineage


def _collect_features(inp: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, x)``: the sorted vertex ids and their features as one float32 matrix on the driver.

    Raises :class:`~lepton_spark.errors.InvalidGraphError` for duplicate ids (the broadcast operator
    indexes vertices by their position among the sorted ids).
    """
    if inp.local is not None:  # the driver holds them already (checked by prepare), sorted by id
        return inp.local
    table = storage.collect_arrow(inp.x0)
    ids = table.column("id").to_numpy()
    if not inp.checked:  # the caller's count chose this plan: check the features here, on the driver
        col = pa.concat_arrays(table.column("features").chunks) if table.num_rows else pa.array([], FLOAT_LIST)
        nulls = col.null_count
        present = col.drop_null() if nulls else col
        hinted = inp.dim
        inp.dim = check_matrix(pc.list_value_length(present).to_numpy(zero_copy_only=False).astype(np.int64),
                               nulls, present.flatten().to_numpy(zero_copy_only=False))
        if table.num_rows and inp.dim != hinted:
            log.warning("propagate: features of length %d, the caller said %d", inp.dim, hinted)
        if table.num_rows != inp.n:
            log.warning("propagate: %d vertex rows, the caller counted %d", table.num_rows, inp.n)
        inp.n, inp.checked = table.num_rows, True
    x = list_to_matrix(table.column("features"), inp.dim)
    order = np.argsort(ids, kind="stable")
    ids, x = ids[order], np.ascontiguousarray(x[order])
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise InvalidGraphError(f"propagate: {int(np.sum(ids[1:] == ids[:-1]))} duplicate vertex ids")
    return ids, x


def _operator(inp: Inputs, ids: np.ndarray, message_bytes: int, parts: int | None, local_exchange: bool,
              cache: OperatorCache | None, operator_key: Any,
              edge_files: EdgeFiles | None = None) -> tuple[BroadcastOperator, bool]:
    """The edges packed into broadcast blocks over ``ids``, from ``cache`` when it holds them: ``(op, reused)``."""
    cacheable = cache is not None and inp.source_edges is not None
    op = cache.get(inp.source_edges, ids, operator_key) if cacheable else None
    if op is not None:
        return op, True
    op = BroadcastOperator.prepare(inp.spark, ids, inp.edges, parts, local_exchange=local_exchange,
                                   message_bytes=message_bytes, files=edge_files)
    if cacheable:
        cache.put(inp.source_edges, op, operator_key)
    return op, False


def run(inp: Inputs, rounds: Rounds, *, agg: str, parts: int | None, local_exchange: bool = True,
        cache: OperatorCache | None = None, normalize: str | None = None, operator_key: Any = None,
        edge_files: EdgeFiles | None = None) -> DataFrame:
    """The broadcast plan: ``rounds`` over the edges packed once into ``parts`` blocks; DataFrame(id, features).

    The result is local rows (built from the driver's matrix). Without ``cache`` the blocks are
    unpersisted when the rounds end; with it the cache's owner closes them. ``edge_files``: the
    Parquet files the edges were read from (local mode packs the blocks from them, :class:`EdgeFiles`).
    """
    t0 = time.perf_counter()
    ids, x = _collect_features(inp)
    op, reused = _operator(inp, ids, x.nbytes, parts, local_exchange, cache, operator_key, edge_files)
    log.info("propagate[broadcast]: %d vertices x %d dims, %d edges; %s in %.2fs", len(ids), inp.dim, op.nnz,
             "edge blocks reused" if reused else "prepared", time.perf_counter() - t0)
    try:
        dinv = None
        if normalize == "sym":  # D^-1/2 (A + I) D^-1/2 with D the weighted in-degree plus the self-loop
            dinv = (1.0 / np.sqrt(op.in_degrees() + 1.0)).astype(np.float32)[:, None]
        x = rounds.run(_BroadcastRounds(op, agg, dinv, len(ids)), x)
    finally:
        if cache is None:
            op.close()
    out = pa.table({"id": pa.array(ids, pa.int64()), "features": matrix_to_list(x)})
    # the matrix stays beside its rows: a dense layer or the next propagation on this table reads it
    return resident.remember(storage.create_df(inp.spark, out, RESULT), ids, x)
