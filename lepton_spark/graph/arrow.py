"""Arrow <-> numpy helpers for feature columns (``array<float>``) inside mapInArrow / applyInArrow.

Spark hands ``array<float>`` columns to Python as Arrow ``list<float>`` arrays; a matrix of equal-length
rows is their flat values reshaped, with no per-row Python work. The reverse builds a list array from
a contiguous matrix with computed offsets (zero-copy of the values buffer).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Arrow type of Spark's array<float> (the project's feature column type)
FLOAT_LIST = pa.list_(pa.field("element", pa.float32()))


def list_to_matrix(arr: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """(rows, d) float32 matrix from a list<float> column whose rows all have length d.

    Raises ValueError on null rows or rows of another length (the caller's data contract).
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if arr.null_count:
        raise ValueError(f"{arr.null_count} feature rows are null")
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    d = int(lengths[0]) if dim is None else dim
    if np.any(lengths != d):
        raise ValueError(f"{int(np.sum(lengths != d))} feature rows do not have length {d}")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(n, d)


def matrix_to_list(mat: np.ndarray) -> pa.Array:
    """list<float> array (one row per matrix row) from a (rows, d) matrix."""
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    n, d = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32) if n else np.zeros(1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.reshape(-1)), type=FLOAT_LIST)


def binary_cells(col: pa.Array | pa.ChunkedArray) -> list[pa.Buffer]:
    """The values of a binary column as Arrow buffers, zero-copy (no ``combine_chunks``)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return [ch[i].as_buffer() for ch in chunks for i in range(len(ch))]


def packed_rows(batches: Iterator[pa.RecordBatch], dtype: Any, width: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, values)`` of every row of ``batches`` whose ``local`` holds int64 ids and ``values`` their
    values of ``dtype`` (``width`` per id, 0: one), as binary: views of the Arrow buffers, no copy. The
    block engines pack states and results this way (many vertices a value)."""
    for b in batches:
        locs, vals = b.column("local"), b.column("values")
        for i in range(b.num_rows):
            ids = np.frombuffer(locs[i].as_buffer(), np.int64)
            x = np.frombuffer(vals[i].as_buffer(), dtype)
            yield ids, x.reshape((len(ids), width) if width else (-1,))


def cell(table: pa.Table, name: str, dtype: type) -> np.ndarray:
    """The first value of binary column ``name`` as a numpy array of ``dtype``, zero-copy.

    The block engines store one block per row (ids, CSR arrays, targets as raw bytes); this is the one
    reader of such a cell, for the propagation plans and the vertex programs alike.
    """
    value = table.column(name)[0]
    buf = value.as_buffer() if hasattr(value, "as_buffer") else pa.py_buffer(value.as_py())
    return np.frombuffer(buf, dtype=dtype)


# one Arrow chunk's binary data stays below the int32 offset limit with room to spare
_MAX_CHUNK_BYTES = 1 << 30


def run_bounds(keys: np.ndarray, max_rows: int) -> np.ndarray:
    """Row bounds ``[0, ..., len(keys)]`` of the runs of equal ``keys``, each run cut into pieces of at
    most ``max_rows`` rows: the ``bounds`` of :func:`binary_segments` for messages per destination."""
    starts = np.flatnonzero(np.diff(keys)) + 1
    bounds = np.concatenate([[0], starts, [len(keys)]]).astype(np.int64)
    cuts = [np.arange(a + max_rows, b, max_rows) for a, b in itertools.pairwise(bounds)]
    return np.unique(np.concatenate([bounds, *cuts])).astype(np.int64)


def binary_segments(arr: np.ndarray, bounds: np.ndarray) -> pa.ChunkedArray:
    """Binary column whose i-th value is the bytes of rows ``bounds[i]:bounds[i+1]`` of ``arr``, zero-copy.

    ``arr`` is C-contiguous (rows of a matrix or a 1-d array); ``bounds`` is ascending, from 0 to
    ``len(arr)``. The values are views of ``arr``'s memory (the Arrow buffers keep it alive), split
    into chunks of at most 1 GiB so the int32 offsets of ``binary`` never overflow.
    """
    arr = np.ascontiguousarray(arr)
    flat = arr.reshape(-1).view(np.uint8) if arr.size else np.zeros(0, np.uint8)
    row_bytes = arr.itemsize * (int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1)
    byte_bounds = np.asarray(bounds, dtype=np.int64) * row_bytes
    if len(byte_bounds) < 2:
        return pa.chunked_array([], pa.binary())
    chunks = []
    first = 0
    last = len(byte_bounds) - 1
    while first < last:
        stop = first + 1  # at least one value per chunk; extend while the chunk stays under the limit
        while stop < last and byte_bounds[stop + 1] - byte_bounds[first] <= _MAX_CHUNK_BYTES:
            stop += 1
        base = byte_bounds[first]
        offsets = (byte_bounds[first:stop + 1] - base).astype(np.int32)
        data = flat[base:byte_bounds[stop]]
        chunks.append(pa.Array.from_buffers(pa.binary(), stop - first,
                                            [None, pa.py_buffer(offsets), pa.py_buffer(data)]))
        first = stop
    return pa.chunked_array(chunks, pa.binary())


def state_table(ids: np.ndarray, state: np.ndarray) -> pa.Table:
    """(id, value) Arrow table from a state array (double, long or array<int> per its shape and dtype)."""
    if state.ndim == 2:
        flat = pa.array(np.ascontiguousarray(state, dtype=np.int32).reshape(-1))
        offsets = pa.array(np.arange(0, (len(state) + 1) * state.shape[1], state.shape[1], dtype=np.int32))
        value = pa.ListArray.from_arrays(offsets, flat)
    elif state.dtype.kind == "f":
        value = pa.array(state.astype(np.float64))
    else:
        value = pa.array(state.astype(np.int64))
    return pa.table({"id": pa.array(ids.astype(np.int64)), "value": value})
