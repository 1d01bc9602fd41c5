"""Arrow <-> numpy helpers for feature columns (``array<float>``) inside mapInArrow / applyInArrow.

Spark hands ``array<float>`` columns to Python as Arrow ``list<float>`` arrays; a matrix of equal-length
rows is their flat values reshaped, with no per-row Python work. The reverse builds a list array from
a contiguous matrix with computed offsets (zero-copy of the values buffer).
"""

from __future__ import annotations

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
