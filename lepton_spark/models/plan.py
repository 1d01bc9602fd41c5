"""Execution backends for a model's propagation plan: Spark (the product) and a float32 numpy twin.

A model's ``forward_spark`` is written once, as a *plan* against the small :class:`Ops` interface
below (features, edge normalisation, ``map``/``dense`` per batch, ``propagate`` rounds, ``concat``,
APPNP's teleporting propagation, and the one-pass feature summary the large-graph path resolves
``feature_norm`` from). Two backends implement it:

* :class:`SparkOps` – DataFrames and the engine primitives of :mod:`lepton_spark.graph`
  (``propagate``, ``map_features``, ``apply_dense``, ``normalize_edges``); weights are applied per
  partition with numpy inside ``mapInArrow``.
* :class:`LocalOps` – the same operations on ``(ids, float32 matrix)`` tables with numpy/scipy, in
  float32 like Spark's ``array<float>``. It exists so the *plan itself* (weight-before-propagation
  ordering, SIGN's hop slicing, APPNP's teleport trick, self-loops for isolated vertices) is tested
  against ``forward_local`` without starting Spark, and so the float32 error can be measured.

Table contract: a feature table has ``id`` (long) and ``features`` (float32 vectors of one length);
an edge table has ``src``, ``dst``, ``weight`` (edge ``src -> dst``; a round sends ``w * x_src`` to
``dst``). Vertex ids must be ``>= 0`` for :meth:`Ops.teleport_propagate` (``build`` assigns dense ids).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from lepton_spark.graph.functional import activate
from lepton_spark.models.normalize import FeatureSummary, row_normalize_f32, standardize_f32

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# picklable batch functions (shipped to executors by map_features)
# --------------------------------------------------------------------------------------------------
class RowNormalize:
    """Row L1 normalisation of a float32 batch (feature_norm="row")."""

    keeps_width = True  # map_features: a partitioned propagation may apply it in its blocks

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return row_normalize_f32(x)


class Standardize:
    """``(x - mean) / scale`` per column of a float32 batch (feature_norm="standard", fitted stats)."""

    keeps_width = True

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return standardize_f32(x, self.mean, self.scale)


def _summary_partition(batches: Any) -> Any:
    """mapInArrow body of :meth:`SparkOps.feature_summary`: one summary row per partition."""
    import pyarrow as pa

    from lepton_spark.graph.arrow import list_to_matrix

    parts = [FeatureSummary.of(list_to_matrix(b.column("features"))) for b in batches if b.num_rows]
    if parts:
        rec = FeatureSummary.merge(parts).to_record()
        yield pa.RecordBatch.from_pylist([rec], schema=_summary_arrow_schema())


def _summary_arrow_schema() -> Any:
    import pyarrow as pa

    dlist = pa.list_(pa.field("element", pa.float64()))
    return pa.schema([(k, pa.int64()) for k in _SUMMARY_COUNTS] + [("mean", dlist), ("m2", dlist)])


_SUMMARY_COUNTS = ("rows", "cols", "nonzeros", "nonfinite", "negatives", "nonintegral", "off_l1_rows")
_SUMMARY_DDL = ", ".join(f"{k} long" for k in _SUMMARY_COUNTS) + ", mean array<double>, m2 array<double>"


def _fn_recipe(fn: Any) -> Any:
    """A per-row function's full name by value (None: not nameable, so its results are never shared)."""
    if isinstance(fn, RowNormalize):
        return ("row",)
    if isinstance(fn, Standardize):
        return ("standard", fn.mean.tobytes(), fn.scale.tobytes())
    return None


class ColumnSlice:
    """Keep columns ``[start, stop)`` of a batch (SIGN/SAGE block bookkeeping)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[:, self.start : self.stop])


class SumBlocks:
    """Sum ``blocks`` consecutive column blocks of width ``width`` (``[a ‖ b] -> a + b``)."""

    def __init__(self, width: int, blocks: int) -> None:
        self.width, self.blocks = int(width), int(blocks)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = x[:, : self.width].copy()
        for k in range(1, self.blocks):
            out += x[:, k * self.width : (k + 1) * self.width]
        return out


# --------------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------------
class Ops(Protocol):
    """What a model plan needs from an execution backend (see module docstring)."""

    def features(self) -> Any:
        """The vertex table ``(id, features)`` with the raw features as float32."""

    def raw_edges(self) -> Any:
        """The raw edge table ``(src, dst, weight)``."""

    def gcn_edges(self) -> Any:
        """Raw edges plus one self-loop per vertex, weights ``D^-1/2 (A+I) D^-1/2`` (in-degree)."""

    def scale_edges(self, edges: Any, factor: float) -> Any:
        """Multiply every edge weight by ``factor``."""

    def feature_summary(self, table: Any) -> FeatureSummary:
        """The :class:`~lepton_spark.models.normalize.FeatureSummary` of a table's feature vectors over
        ALL its rows (what ``feature_norm`` auto/standard is resolved from)."""

    def map(self, table: Any, fn: Any, out_dim: int | None) -> Any:
        """Apply a picklable ``fn(float32 batch) -> batch`` to the features (``out_dim`` None = same)."""

    def dense(self, table: Any, W: np.ndarray | None, b: np.ndarray | None, activation: str) -> Any:
        """``act(X @ W + b)`` per batch (``W``/``b`` optional; ``activation`` one of
        :data:`lepton_spark.graph.functional.ACTIVATIONS`, both backends apply
        :func:`~lepton_spark.graph.functional.activate`)."""

    def propagate(self, table: Any, edges: Any, rounds: int, agg: str = "sum") -> Any:
        """``rounds`` propagation rounds (sum or mean over in-edges; no in-edges -> zero vector)."""

    def concat(self, tables: list[Any]) -> Any:
        """Join tables on ``id`` and concatenate their feature vectors in order."""

    def teleport_propagate(self, h: Any, edges: Any, rounds: int, alpha: float) -> Any:
        """APPNP: ``Z_0 = H``; ``Z <- (1-alpha) * round(Z) + alpha * H`` ``rounds`` times."""

    def result(self, embedding: Any | None, probs: Any) -> Any:
        """The output ``(id, embedding, probs)`` (``(id, probs)`` when ``embedding`` is None)."""

    def persist(self, table: Any) -> Any:
        """Keep a table that several later steps read (Spark: ``persist``); returns it."""

    def unpersist(self, table: Any) -> None:
        """Release a persisted table."""

    def collect_labelled(self, tables: list[Any], splits: tuple[str, ...]) -> LabelledRows:
        """Bring ONLY the labelled rows (label not null, split in ``splits``) to the driver: the
        tables' vectors concatenated in order, with ids, labels and split names."""


@dataclass
class LabelledRows:
    """Labelled rows collected to the driver (sorted by id)."""

    ids: np.ndarray  # int64 (m,)
    Z: np.ndarray  # float32 (m, width)
    y: np.ndarray  # int64 (m,)
    split: np.ndarray  # object (m,): "train" | "val" | "test"

    def mask(self, name: str) -> np.ndarray:
        return self.split == name


# --------------------------------------------------------------------------------------------------
# numpy twin
# --------------------------------------------------------------------------------------------------
@dataclass
class LocalTable:
    ids: np.ndarray  # int64 (n,)
    x: np.ndarray  # float32 (n, d)


@dataclass
class LocalEdges:
    src: np.ndarray  # int64
    dst: np.ndarray  # int64
    weight: np.ndarray  # float32


@dataclass
class LocalForward:
    """Result of a plan run with :class:`LocalOps` (rows in vertex-id order)."""

    ids: np.ndarray
    embedding: np.ndarray | None
    probs: np.ndarray


def _rows_by_id(table: LocalTable, ids: np.ndarray) -> np.ndarray:
    """Rows of ``table`` in the order of ``ids`` (every id must be present)."""
    order = np.argsort(table.ids)
    pos = order[np.searchsorted(table.ids, ids, sorter=order)]
    if not np.array_equal(table.ids[pos], ids):
        raise ValueError("table is missing some vertex ids")
    return table.x[pos]


class LocalOps:
    """Numpy/scipy float32 implementation of :class:`Ops` for a graph given as (A, X[, ids]).

    ``A[i, j]`` is the weight of the edge from vertex ``ids[i]`` to vertex ``ids[j]`` (the local
    convention); ``ids`` defaults to ``0..n-1``.
    """

    def __init__(self, A: Any, X: Any, ids: np.ndarray | None = None, labels: np.ndarray | None = None,
                 split: np.ndarray | None = None) -> None:
        n = A.shape[0]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.split = None if split is None else np.asarray(split, dtype=object)
        if X.shape[0] != n:
            raise ValueError(f"X has {X.shape[0]} rows but A has {n} vertices")
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        coo = sp.coo_matrix(A)
        self._edges = LocalEdges(self.ids[coo.row], self.ids[coo.col], coo.data.astype(np.float32))
        Xd = X.toarray() if sp.issparse(X) else np.asarray(X)
        self._x = Xd.astype(np.float32)

    def features(self) -> LocalTable:
        return LocalTable(self.ids.copy(), self._x.copy())

    def raw_edges(self) -> LocalEdges:
        return self._edges

    def gcn_edges(self) -> LocalEdges:
        e = self._edges
        src = np.concatenate([e.src, self.ids])
        dst = np.concatenate([e.dst, self.ids])
        w = np.concatenate([e.weight, np.ones(self.ids.size, dtype=np.float32)]).astype(np.float64)
        order = np.argsort(self.ids)
        dpos = order[np.searchsorted(self.ids, dst, sorter=order)]
        spos = order[np.searchsorted(self.ids, src, sorter=order)]
        deg = np.bincount(dpos, weights=w, minlength=self.ids.size)
        wn = w / np.sqrt(deg[spos] * deg[dpos])
        return LocalEdges(src, dst, wn.astype(np.float32))

    def scale_edges(self, edges: LocalEdges, factor: float) -> LocalEdges:
        return LocalEdges(edges.src, edges.dst, (edges.weight.astype(np.float64) * factor).astype(np.float32))

    def feature_summary(self, table: LocalTable) -> FeatureSummary:
        return FeatureSummary.of(table.x)

    def map(self, table: LocalTable, fn: Any, out_dim: int | None) -> LocalTable:
        y = np.asarray(fn(table.x), dtype=np.float32)
        out_dim = table.x.shape[1] if out_dim is None else out_dim
        if y.shape != (table.x.shape[0], out_dim):
            raise ValueError(f"map fn returned shape {y.shape}, expected ({table.x.shape[0]}, {out_dim})")
        return LocalTable(table.ids, y)

    def dense(self, table: LocalTable, W: np.ndarray | None, b: np.ndarray | None,
              activation: str) -> LocalTable:
        y = table.x
        if W is not None:
            y = y @ np.asarray(W, dtype=np.float32)
        if b is not None:
            y = y + np.asarray(b, dtype=np.float32)
        return LocalTable(table.ids, activate(y.astype(np.float32), activation).astype(np.float32))

    def propagate(self, table: LocalTable, edges: LocalEdges, rounds: int, agg: str = "sum") -> LocalTable:
        if agg not in ("sum", "mean"):
            raise ValueError(f"LocalOps.propagate supports sum|mean, got {agg!r}")
        ids = table.ids
        order = np.argsort(ids)
        spos = order[np.searchsorted(ids, edges.src, sorter=order)]
        dpos = order[np.searchsorted(ids, edges.dst, sorter=order)]
        if not (np.array_equal(ids[spos], edges.src) and np.array_equal(ids[dpos], edges.dst)):
            raise ValueError("edge endpoint not in the vertex table")
        n = ids.size
        Pt = sp.csr_matrix((edges.weight, (dpos, spos)), shape=(n, n), dtype=np.float32)
        count = np.bincount(dpos, minlength=n).astype(np.float32)[:, None]
        x = table.x
        for _ in range(rounds):
            x = np.asarray(Pt @ x, dtype=np.float32)
            if agg == "mean":
                x = np.divide(x, count, out=np.zeros_like(x), where=count > 0)
        return LocalTable(ids, x)

    def concat(self, tables: list[LocalTable]) -> LocalTable:
        base = tables[0].ids
        parts = [t.x if np.array_equal(t.ids, base) else _rows_by_id(t, base) for t in tables]
        return LocalTable(base, np.hstack(parts).astype(np.float32))

    def teleport_propagate(self, h: LocalTable, edges: LocalEdges, rounds: int, alpha: float) -> LocalTable:
        if h.ids.size and h.ids.min() < 0:
            raise ValueError("teleport_propagate needs vertex ids >= 0")
        virt = -h.ids - 1
        table = LocalTable(np.concatenate([h.ids, virt]), np.vstack([h.x, h.x]))
        scaled = self.scale_edges(edges, 1.0 - alpha)
        aug = LocalEdges(
            np.concatenate([scaled.src, virt, virt]),
            np.concatenate([scaled.dst, h.ids, virt]),
            np.concatenate([scaled.weight, np.full(h.ids.size, alpha, dtype=np.float32),
                            np.ones(h.ids.size, dtype=np.float32)]),
        )
        out = self.propagate(table, aug, rounds)
        keep = out.ids >= 0
        return LocalTable(out.ids[keep], out.x[keep])

    def result(self, embedding: LocalTable | None, probs: LocalTable) -> LocalForward:
        ids = np.sort(probs.ids)
        return LocalForward(ids, None if embedding is None else _rows_by_id(embedding, ids),
                            _rows_by_id(probs, ids))

    def persist(self, table: Any) -> Any:
        return table

    def unpersist(self, table: Any) -> None:
        return None

    def collect_labelled(self, tables: list[LocalTable], splits: tuple[str, ...]) -> LabelledRows:
        if self.labels is None or self.split is None:
            raise ValueError("LocalOps needs labels= and split= to collect labelled rows")
        keep = (self.labels >= 0) & np.isin(self.split, list(splits))
        ids = self.ids[keep]
        order = np.argsort(ids)
        ids = ids[order]
        parts = [_rows_by_id(t, ids) for t in tables]
        return LabelledRows(ids, np.hstack(parts).astype(np.float32), self.labels[keep][order],
                            self.split[keep][order])


# --------------------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------------------
class _Compose:
    """Picklable composition of per-row numpy functions, applied in order (float32 between steps, as
    separate ``map_features`` passes would hand them on)."""

    def __init__(self, fns: list[Any]) -> None:
        self.fns = fns

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for fn in self.fns:
            x = np.asarray(fn(x), dtype=np.float32)
        return x


class SparkOps:
    """:class:`Ops` on Spark DataFrames via :mod:`lepton_spark.graph` (imported lazily).

    ``g`` is a :class:`lepton_spark.graph.GraphFrame`; ``features`` names the vertex feature column
    and ``weight`` the edge weight column (1.0 when the edges have none).
    """

    def __init__(self, g: Any, features: str = "features", weight: str = "weight", label: str = "label",
                 split: str = "split", propagate_options: Mapping[str, Any] | None = None) -> None:
        from pyspark.sql import functions as F

        from lepton_spark import graph as engine

        self.F = F
        self.engine = engine
        self.g = g
        self.feature_col = features
        self.weight_col = weight
        self.label_col = label
        self.split_col = split
        self.propagate_options = dict(propagate_options or {})
        self._steps = 0
        self._gcn: Any = None
        # every layer propagates over the same edges: their blocks are packed once per forward pass;
        # a caller's cache (propagate_options["operators"], with an "operator_key" naming the graph's
        # edges) outlives the pass and is the caller's to close
        self._own_operators = "operators" not in self.propagate_options
        self.operators = self.propagate_options.pop("operators", None) or engine.OperatorCache()
        self.operator_key = self.propagate_options.pop("operator_key", None)
        # the caller's count of the graph's vertices (their features already checked): tables with
        # exactly those rows (the features and every per-row step or propagation of them) pass it to
        # propagate, which then skips its own validation job (see propagate's num_vertices)
        self.num_vertices: int | None = self.propagate_options.pop("num_vertices", None)
        # and their feature length: with both known, propagate skips its first-row job too
        self.num_features: int | None = self.propagate_options.pop("num_features", None)
        # id(table) -> (table, feature length or None, recipe or None) for every table with the graph's
        # vertex rows. The recipe says how the table was derived from the graph's features when every
        # step is one whose result is fully named by its parameters (features, row L1, standardisation
        # with given statistics, propagation over the graph's edges). With an operator_key naming the
        # graph, a propagation's result is kept in the operator cache under its recipe and served to the
        # next identical request (the nightly: SGC's train stage and propagate stage over the same graph)
        self._graph_rows: dict[int, tuple[Any, int | None, Any]] = {}
        # keep this pass's propagations in the caller's cache for a later identical request (the
        # nightly's train stage); without it the cache is only read
        self.keep_results = bool(self.propagate_options.pop("keep_results", False))
        # (sorted ids, float32 matrix) of the graph's feature column when the caller already holds them
        # on the driver (the nightly reads a validated graph's features with pyarrow when the broadcast
        # plan will collect them anyway): the features table is registered as resident, so the first
        # per-row step runs on that matrix and the first propagation reads it, with no Spark job
        self.driver_features = self.propagate_options.pop("driver_features", None)
        # the local Parquet directory the graph's edges were read from (a validated graph's): the
        # propagations over the graph's own edges pack their blocks from its files (graph.blocks.EdgeFiles)
        self.edge_files: str | None = self.propagate_options.pop("edge_files", None)
        self._raw: Any = None
        # id(output table) -> (output, input, numpy fn) for every per-row step (map, dense): result()
        # follows them back so the probabilities are computed in the same pass as the embedding
        self._rowwise: dict[int, tuple[Any, Any, Any]] = {}

    # tables ---------------------------------------------------------------------------------------
    def features(self) -> Any:
        F = self.F
        table = self.g.vertices.select(
            F.col("id").cast("long").alias("id"),
            F.col(self.feature_col).cast("array<float>").alias("features"),
        )
        if self.driver_features is not None:
            from lepton_spark.graph import resident

            resident.remember(table, *self.driver_features)
        return self._rows_of(None, table, self.num_features, ("features", self.feature_col))

    def _rows_of(self, source: Any, out: Any, dim: int | None = None, recipe: Any = None) -> Any:
        """Record that ``out`` has the graph's vertex rows when ``source`` has them (None: ``out`` is
        the graph's own features), its feature length ``dim`` and its ``recipe`` when known; returns ``out``."""
        if source is None or self._graph_row(source) is not None:
            self._graph_rows[id(out)] = (out, None if dim is None else int(dim), recipe)
        return out

    def _graph_row(self, table: Any) -> tuple[Any, int | None, Any] | None:
        """``(table, feature length or None, recipe or None)`` when ``table`` has the graph's vertex
        rows, else None."""
        hit = self._graph_rows.get(id(table))
        return hit if hit is not None and hit[0] is table else None

    def _recipe(self, table: Any) -> Any:
        hit = self._graph_row(table)
        return hit[2] if hit is not None else None

    def raw_edges(self) -> Any:
        if self._raw is None:  # one object: the operator cache recognises it
            F = self.F
            e = self.g.edges
            w = F.col(self.weight_col).cast("float") if self.weight_col in e.columns else F.lit(1.0).cast("float")
            self._raw = e.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"),
                                 w.alias("weight"))
        return self._raw

    def gcn_edges(self) -> Any:
        """The GCN operator ``D^-1/2 (A + I) D^-1/2`` as :class:`SymEdges`: the raw edges, normalised by
        ``propagate`` itself (the broadcast plan scales the features by ``D^-1/2`` on the driver around
        ``(A + I) x``, so no normalised edge table is ever built)."""
        if self._gcn is None:  # every layer propagates over the same operator: one object, one cache key
            self._gcn = SymEdges(self)
        return self._gcn

    def sym_edges_table(self) -> Any:
        """The normalised GCN edges as a DataFrame (for callers that need rows: APPNP's teleport graph)."""
        F = self.F
        loops = self.g.vertices.select(
            F.col("id").cast("long").alias("src"), F.col("id").cast("long").alias("dst"),
            F.lit(1.0).cast("float").alias("weight"),
        )
        # self-loops come from the vertex table so isolated vertices get one too (A + I)
        return self.engine.normalize_edges(self.raw_edges().unionByName(loops), mode="sym", self_loops=False)

    def scale_edges(self, edges: Any, factor: float) -> Any:
        F = self.F
        if isinstance(edges, SymEdges):
            edges = edges.table()
        return edges.withColumn("weight", (F.col("weight") * F.lit(float(factor))).cast("float"))

    # per-batch numpy ------------------------------------------------------------------------------
    def feature_summary(self, table: Any) -> FeatureSummary:
        """One pass over the features: a partial summary per partition (mapInArrow), merged on the
        driver (a few numbers plus two d-long vectors per partition)."""
        rows = table.select("features").mapInArrow(_summary_partition, _SUMMARY_DDL).collect()
        if not rows:
            raise ValueError("no feature rows to summarise (empty vertex table)")
        return FeatureSummary.merge([FeatureSummary.from_record(r.asDict()) for r in rows])

    def map(self, table: Any, fn: Any, out_dim: int | None) -> Any:
        out = self.engine.map_features(table, fn, input_col="features", output_col="features",
                                       out_dim=None if out_dim is None else int(out_dim))
        self._rowwise[id(out)] = (out, table, fn)
        base, step = self._recipe(table), _fn_recipe(fn)
        return self._rows_of(table, out, out_dim, ("map", base, step) if base is not None and step is not None
                             else None)

    def dense(self, table: Any, W: np.ndarray | None, b: np.ndarray | None, activation: str) -> Any:
        from lepton_spark.graph.dense import DenseFn

        fn = DenseFn(W, b, activation)
        out = self.engine.map_features(table, fn, input_col="features", output_col="features", out_dim=fn.out_dim)
        self._rowwise[id(out)] = (out, table, fn)
        return self._rows_of(table, out, fn.out_dim)

    def _rowwise_chain(self, start: Any, end: Any) -> list[Any] | None:
        """The per-row functions that turn table ``start`` into table ``end`` (None: ``end`` is not
        derived from ``start`` by per-row steps alone)."""
        fns: list[Any] = []
        t = end
        while t is not start:
            step = self._rowwise.get(id(t))
            if step is None or step[0] is not t:
                return None
            t, fn = step[1], step[2]
            fns.append(fn)
        return fns[::-1]

    # rounds ---------------------------------------------------------------------------------------
    def propagate(self, table: Any, edges: Any, rounds: int, agg: str = "sum") -> Any:
        opts = dict(self.propagate_options)
        key = None
        if isinstance(edges, SymEdges):
            opts["normalize"] = "sym"
            edges = edges.raw
        if edges is self._raw:  # the graph's own edges (not e.g. APPNP's teleport graph)
            key = self.operator_key
            if self.edge_files:
                from lepton_spark.graph.blocks import EdgeFiles

                opts["edge_files"] = EdgeFiles(self.edge_files,
                                               self.weight_col if self.weight_col in self.g.edges.columns else None)
        else:  # the caller's symmetry promise is about the graph's own edges
            opts.pop("symmetric", None)
        g = self.engine.GraphFrame(_id_features(table), edges)
        if opts.get("checkpoint"):
            opts["checkpoint"] = f"{str(opts['checkpoint']).rstrip('/')}/step-{self._steps}"
        self._steps += 1
        if self._graph_row(table) is None:  # the caller's dense-id promise is about the graph's own vertices
            opts.pop("dense_ids", None)
        hit = self._graph_row(table) if self.num_vertices is not None else None
        dim = hit[1] if hit is not None else None
        if hit is not None:
            opts["num_vertices"] = int(self.num_vertices)
            if dim is not None:
                opts["num_features"] = dim
        base = self._recipe(table)
        recipe = None if key is None or base is None else \
            ("propagate", key, self.weight_col, base, opts.get("normalize"), int(rounds), agg)
        out = self.operators.get_result(recipe) if recipe is not None else None
        if out is not None:
            log.info("propagate: %d rounds over %s served from this run's earlier identical propagation",
                     rounds, key)
        else:
            out = self.engine.propagate(g, features="features", weight="weight", rounds=int(rounds), agg=agg,
                                        operators=self.operators, operator_key=key, **opts)
            if recipe is not None and self.keep_results and not self._own_operators:  # outlives this pass
                self.operators.put_result(recipe, out)
        return self._rows_of(table, out, dim, recipe)  # every vertex is in a propagation's result, same length

    def close(self) -> None:
        """Release the prepared edge blocks (the broadcast plan's results are local rows by then)."""
        if self._own_operators:
            self.operators.close()
        if self._gcn is not None:
            self._gcn.unpersist()

    def concat(self, tables: list[Any]) -> Any:
        F = self.F
        cols = []
        joined = None
        for i, t in enumerate(tables):
            name = f"_f{i}"
            cols.append(F.col(name))
            t = t.select("id", F.col("features").alias(name))
            joined = t if joined is None else joined.join(t, on="id", how="inner")
        assert joined is not None
        return joined.select("id", F.concat(*cols).alias("features"))

    def teleport_propagate(self, h: Any, edges: Any, rounds: int, alpha: float) -> Any:
        """One ``propagate`` call on an augmented graph: each vertex ``v`` gets a twin ``-v-1`` that
        holds ``H_v`` (self-loop weight 1) and sends ``alpha * H_v`` to ``v`` every round, while graph
        edges carry ``(1-alpha) * w``. After ``rounds`` rounds the real vertices hold APPNP's ``Z_K``;
        the engine's checkpointing/round machinery applies unchanged."""
        F = self.F
        min_id = h.agg(F.min("id")).first()[0]
        if min_id is not None and min_id < 0:
            raise ValueError(f"APPNP on Spark needs vertex ids >= 0 (found {min_id}); run `build` first")
        h = h.select("id", "features")
        virt = h.select((-F.col("id") - F.lit(1)).alias("id"), "features")
        tele = h.select((-F.col("id") - F.lit(1)).alias("src"), F.col("id").alias("dst"),
                        F.lit(float(alpha)).cast("float").alias("weight"))
        keep = virt.select(F.col("id").alias("src"), F.col("id").alias("dst"),
                           F.lit(1.0).cast("float").alias("weight"))
        aug_edges = self.scale_edges(edges, 1.0 - alpha).select("src", "dst", "weight") \
            .unionByName(tele).unionByName(keep)
        out = self.propagate(h.unionByName(virt), aug_edges, rounds)
        return out.filter(F.col("id") >= 0)

    def result(self, embedding: Any | None, probs: Any) -> Any:
        """``(id, embedding, probs)``. When the probabilities are per-row functions of the embedding (SGC,
        SIGN, GCN's last layer) they are computed in the same ``mapInArrow`` pass that carries the
        embedding: no second evaluation of the embedding's lineage and no join on ``id`` (at 1M x 64
        the join's shuffle was most of the 10 s the propagate stage spent writing its two tables)."""
        F = self.F
        if embedding is not None:
            chain = self._rowwise_chain(embedding, probs)
            if chain:
                fused = self.engine.map_features(_id_features(embedding), _Compose(chain),
                                                 input_col="features", output_col="probs")
                from lepton_spark.graph import resident

                # (id, features, probs) renamed, not re-selected: rows the driver holds, or rows tasks can
                # make from a partitioned result, stay recognisable to the writer (storage.local_rows,
                # resident.lookup_packed_rows)
                return resident.rename_columns(fused, {"features": "embedding"})
        p = probs.select("id", F.col("features").alias("probs"))
        if embedding is None:
            return p
        e = embedding.select("id", F.col("features").alias("embedding"))
        return e.join(p, on="id", how="inner").select("id", "embedding", "probs")

    def persist(self, table: Any) -> Any:
        from pyspark import StorageLevel

        return table.persist(StorageLevel.MEMORY_AND_DISK)

    def unpersist(self, table: Any) -> None:
        table.unpersist()

    def collect_labelled(self, tables: list[Any], splits: tuple[str, ...]) -> LabelledRows:
        """Each table is first restricted to the labelled ids (a join with the small labelled set),
        then the pieces are concatenated and collected with Arrow; unlabelled rows never leave the
        executors."""
        F = self.F
        lab = self.g.vertices.filter(F.col(self.label_col).isNotNull() & F.col(self.split_col).isin(*splits)) \
            .select(F.col("id").cast("long").alias("id"), F.col(self.label_col).cast("long").alias("label"),
                    F.col(self.split_col).cast("string").alias("split"))
        ids = lab.select("id")
        parts = [t.select("id", "features").join(ids, on="id", how="inner") for t in tables]
        z = parts[0] if len(parts) == 1 else self.concat(parts)
        pdf = z.join(lab, on="id", how="inner").orderBy("id").toPandas()
        if len(pdf) == 0:
            raise ValueError("no labelled rows (label not null and split in "
                             f"{list(splits)}) in the vertex table")
        Z = np.stack([np.asarray(v, dtype=np.float32) for v in pdf["features"].to_numpy()])
        return LabelledRows(pdf["id"].to_numpy(np.int64), Z, pdf["label"].to_numpy(np.int64),
                            pdf["split"].to_numpy(object))


def _id_features(table: Any) -> Any:
    """``table``'s ``(id, features)``: the table itself when those are its columns, so that a table whose
    rows the driver holds stays recognisable (:mod:`lepton_spark.graph.resident`)."""
    return table if table.columns == ["id", "features"] else table.select("id", "features")


class SymEdges:
    """The GCN-normalised edges of a :class:`SparkOps` graph, kept as the raw edges plus the rule.

    ``propagate`` normalises on the fly (``normalize="sym"``); :meth:`table` builds the normalised
    edge DataFrame once for the callers that need rows. ``persist``/``unpersist`` make it usable
    wherever an edge table is persisted.
    """

    def __init__(self, ops: SparkOps) -> None:
        self.raw = ops.raw_edges()
        self._ops = ops
        self._table: Any = None

    def table(self) -> Any:
        if self._table is None:
            self._table = self._ops.sym_edges_table().persist()
        return self._table

    def persist(self, *_: Any) -> SymEdges:
        return self

    def unpersist(self, *_: Any) -> None:
        if self._table is not None:
            self._table.unpersist()
            self._table = None
