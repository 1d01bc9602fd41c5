"""Per-partition dense transforms of a feature column: numpy on Arrow batches, no per-row UDF.

``apply_dense`` is how learned weights reach Spark: each Arrow batch of the features column becomes a
(rows, d) matrix, gets one matmul (+ bias, activation) and goes back as ``array<float>``. Math is done
in float64 and stored as float32, so results match a float64 numpy reference to ~1e-7 relative.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from lepton_spark import storage
from lepton_spark.graph import resident
from lepton_spark.graph.arrow import list_to_matrix, matrix_to_list, packed_rows
from lepton_spark.graph.functional import activate, check_activation


def _output_schema(df: DataFrame, output_col: str) -> T.StructType:
    fields = [f for f in df.schema.fields if f.name != output_col]
    out = T.StructField(output_col, T.ArrayType(T.FloatType()), nullable=False)
    names = [f.name for f in df.schema.fields]
    if output_col in names:
        fields.insert(names.index(output_col), out)
    else:
        fields.append(out)
    return T.StructType(fields)


def _apply(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, out_dim: int | None) -> np.ndarray:
    """``fn(x)`` as float32, checked to have ``x``'s rows (and ``out_dim`` columns when given)."""
    y = np.asarray(fn(x), dtype=np.float32)
    if y.ndim != 2 or y.shape[0] != x.shape[0] or (out_dim is not None and y.shape[1] != out_dim):
        raise ValueError(f"map_features: fn returned shape {y.shape} for input {x.shape}")
    return y


def map_features(
    df: DataFrame,
    fn: Callable[[np.ndarray], np.ndarray],
    input_col: str = "features",
    output_col: str = "features",
    out_dim: int | None = None,
) -> DataFrame:
    """Apply ``fn((rows, d) float32) -> (rows, d_out)`` to every Arrow batch of ``input_col``.

    A ``fn`` with ``keeps_width = True`` (d_out == d, like a standardisation) over an ``(id, features)``
    table marks its output (:func:`~lepton_spark.graph.resident.lookup_mapped`): a partitioned
    propagation of it may then apply ``fn`` to the rows inside its first round instead.

    ``fn`` must be picklable (it is shipped to the executors). Other columns pass through unchanged;
    ``output_col`` replaces ``input_col`` when they are equal, else it is added. ``out_dim`` (when
    given) is checked on every batch. On a table whose rows the driver holds (a broadcast
    propagation's result, :mod:`~lepton_spark.graph.resident`) ``fn`` runs once on that matrix; on a
    partitioned propagation's result it runs on the packed blocks the rows come from.
    """
    if input_col not in df.columns:
        raise ValueError(f"map_features: no column {input_col!r} (columns: {', '.join(df.columns)})")
    schema = _output_schema(df, output_col)
    names = schema.names
    held = resident.lookup(df) if input_col == "features" else None  # a registered table is (id, features)
    if held is not None:  # the driver holds the rows (a broadcast propagation's result): no Python worker
        ids, x = held
        y = _apply(fn, x, out_dim)
        cols = {"id": pa.array(ids, pa.int64()), "features": matrix_to_list(x), output_col: matrix_to_list(y)}
        out = storage.create_df(df.sparkSession, pa.table({n: cols[n] for n in names}), schema)
        return resident.remember(out, ids, y) if names == ["id", "features"] else out

    packed = resident.lookup_packed(df) if input_col == "features" else None
    if packed is not None:  # a partitioned propagation's result: one pass from its packed blocks to rows
        table, dim = packed
        rows = PackedRowsFn(fn, dim, names, output_col, out_dim)
        # registered: a writer on this machine may run the same pass in tasks that write the rows
        # themselves (lepton_spark.task_writes), instead of handing them to the JVM first
        return resident.remember_packed_rows(table.mapInArrow(rows, schema), table, rows)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            y = _apply(fn, list_to_matrix(batch.column(input_col)), out_dim)
            cols = {name: batch.column(name) for name in batch.schema.names if name != output_col}
            cols[output_col] = matrix_to_list(y)
            yield pa.RecordBatch.from_arrays([cols[name] for name in names], names=names)

    out = df.mapInArrow(run, schema)
    if getattr(fn, "keeps_width", False) and input_col == output_col == "features" and names == ["id", "features"]:
        # a width-keeping map of (id, features): a partitioned propagation may apply it in its blocks
        return resident.remember_mapped(out, df, RowFn(fn, out_dim))
    return out


class PackedRowsFn:
    """The rows ``names`` (``id``, ``features`` and ``output_col`` = ``fn(features)``) of packed batches
    (``local``: int64 ids, ``values``: ``dim`` float32 features per id; :func:`~.arrow.packed_rows`):
    the ``mapInArrow`` function of :func:`map_features` on a partitioned propagation's result.
    Picklable when ``fn`` is."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], dim: int, names: list[str], output_col: str,
                 out_dim: int | None = None) -> None:
        self.fn, self.dim, self.names, self.output_col, self.out_dim = fn, int(dim), list(names), output_col, out_dim

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for ids, x in packed_rows(batches, np.float32, self.dim):
            cols = {"id": pa.array(ids, pa.int64()), "features": matrix_to_list(x),
                    self.output_col: matrix_to_list(_apply(self.fn, x, self.out_dim))}
            yield pa.RecordBatch.from_arrays([cols[n] for n in self.names], names=self.names)


class RowFn:
    """``fn`` as :func:`map_features` applies it to a matrix of rows (float32, its shape checked);
    picklable when ``fn`` is."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], out_dim: int | None = None) -> None:
        self.fn, self.out_dim = fn, out_dim

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _apply(self.fn, x, self.out_dim)

    def __str__(self) -> str:
        return type(self.fn).__name__


def apply_dense(
    df: DataFrame,
    W: np.ndarray | None,
    b: np.ndarray | None = None,
    activation: str = "identity",
    input_col: str = "features",
    output_col: str = "features",
) -> DataFrame:
    """``act(X @ W + b)`` on the features column, per Arrow batch (W None: only bias + activation).

    ``activation`` is one of :data:`lepton_spark.graph.functional.ACTIVATIONS`, applied by
    :func:`~lepton_spark.graph.functional.activate` (the function the local models and the numpy twin use).
    """
    fn = DenseFn(W, b, activation)
    return map_features(df, fn, input_col=input_col, output_col=output_col, out_dim=fn.out_dim)


#: rows per float64 pass of :class:`DenseFn` (a matrix the driver holds can have millions of rows)
DENSE_CHUNK_ROWS = 1 << 16


class DenseFn:
    """The numpy function ``x -> act(x @ W + b)`` of :func:`apply_dense` (float64 inside; picklable, so
    it can be shipped to executors or composed with other per-row functions)."""

    def __init__(self, W: np.ndarray | None, b: np.ndarray | None = None, activation: str = "identity") -> None:
        check_activation(activation)
        self.W = None if W is None else np.asarray(W, dtype=np.float64)
        self.b = None if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
        if self.W is not None and self.W.ndim != 2:
            raise ValueError(f"apply_dense: W must be 2-D, got shape {self.W.shape}")
        self.activation = activation
        self.out_dim = self.W.shape[1] if self.W is not None else (self.b.shape[0] if self.b is not None else None)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 2 and len(x) > DENSE_CHUNK_ROWS:
            # row chunks (each row's result is its own): a float64 copy of one chunk at a time, not of the
            # whole matrix (1M x 64 float32 rows on the driver: 1.6 s of page faults -> ~0.2 s)
            return np.concatenate([self._rows(x[a:a + DENSE_CHUNK_ROWS]) for a in range(0, len(x), DENSE_CHUNK_ROWS)])
        return self._rows(x)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        z = x.astype(np.float64)
        if self.W is not None:
            if z.shape[1] != self.W.shape[0]:
                raise ValueError(f"apply_dense: features have {z.shape[1]} dims, W expects {self.W.shape[0]}")
            z = z @ self.W
        if self.b is not None:
            z = z + self.b
        return activate(z, self.activation)
