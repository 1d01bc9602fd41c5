"""Pure-numpy kernels behind propagation (no Spark here, so they are unit-testable on their own).

Convention: an edge ``u -> v`` with weight ``w`` sends ``w * x_u`` to ``v``. A "block" is a CSR
matrix whose rows are destinations and whose columns index a feature matrix; one round over a block
is ``csr @ X`` for ``sum``, divided by the in-degree for ``mean``, a segment-max for ``max``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

AGGS = ("sum", "mean", "max")


def positions(ids: np.ndarray | None, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of ``values`` in the sorted id array and a mask of the values that are ids.

    ``ids=None`` means dense ids (position = value, all valid). Positions of invalid values are
    clamped into range, so they can index safely before the mask is applied.
    """
    if ids is None:
        return values, np.ones(len(values), dtype=bool)
    if len(ids) == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    return pos, ids[pos] == values


def csr_from_pairs(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, ...]:
    """Group (row, col, val) triples by row: (unique_rows, indptr, indices, data), rows ascending.

    Duplicate (row, col) pairs are kept as separate entries (a multigraph sends one message per edge).
    """
    order = np.argsort(rows, kind="stable")
    r = rows[order]
    unique, starts = np.unique(r, return_index=True)
    indptr = np.append(starts, len(r)).astype(np.int64)
    return unique, indptr, cols[order], vals[order].astype(np.float32)


def block_apply(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, agg: str,
                counts: np.ndarray | None = None) -> np.ndarray:
    """Aggregate messages for every CSR row: ``agg`` over its entries (col c, weight w) of ``w * x[c]``.

    ``counts`` (per row) divides the sum for ``mean``; by default the number of entries of the row.
    """
    nrows = len(indptr) - 1
    if nrows == 0:
        return np.zeros((0, x.shape[1]), dtype=np.float32)
    if agg in ("sum", "mean"):
        csr = sp.csr_matrix((data, indices, indptr), shape=(nrows, x.shape[0]))
        out = np.asarray(csr @ x, dtype=np.float32)
        if agg == "mean":
            c = np.diff(indptr) if counts is None else counts
            out = out / np.maximum(c, 1).astype(np.float32)[:, None]
        return out
    if agg == "max":
        msgs = data[:, None].astype(np.float32) * x[indices]
        return np.maximum.reduceat(msgs, indptr[:-1], axis=0).astype(np.float32)
    raise ValueError(f"unknown aggregation {agg!r}; expected one of {', '.join(AGGS)}")


def combine(n: int, dim: int, parts: Sequence[tuple[np.ndarray, np.ndarray]], agg: str) -> np.ndarray:
    """Combine partial results into an (n, dim) matrix; rows that receive none stay zero.

    Each part is ``(row idx, vectors)`` with distinct rows within the part (a partial has one row per
    destination), so a part adds in with one gather/scatter and nothing is concatenated first.
    ``sum``/``mean`` partials add up (the mean's division happens after, by the true in-degree);
    ``max`` partials take the element-wise max.
    """
    out = np.zeros((n, dim), dtype=np.float32)
    if agg in ("sum", "mean"):
        for idx, vals in parts:
            out[idx] += vals
        return out
    seen = np.zeros(n, dtype=bool)
    for idx, vals in parts:
        first = ~seen[idx]
        out[idx[first]] = vals[first]
        again = ~first
        if again.any():
            rows = idx[again]
            out[rows] = np.maximum(out[rows], vals[again])
        seen[idx] = True
    return out


def reference_propagate(src: np.ndarray, dst: np.ndarray, w: np.ndarray, x: np.ndarray, rounds: int,
                        agg: str) -> np.ndarray:
    """Dense-index reference (float64) used by tests and benchmarks: ids are row positions of x."""
    n = x.shape[0]
    a = sp.csr_matrix((w.astype(np.float64), (dst, src)), shape=(n, n))  # row = receiver
    cnt = np.bincount(dst, minlength=n)
    h = x.astype(np.float64)
    for _ in range(rounds):
        if agg == "sum":
            h = a @ h
        elif agg == "mean":
            h = (a @ h) / np.maximum(cnt, 1)[:, None]
        elif agg == "max":
            out = np.zeros_like(h)
            order = np.argsort(dst, kind="stable")
            d_sorted = dst[order]
            msgs = w[order, None] * h[src[order]]
            unique, starts = np.unique(d_sorted, return_index=True)
            if len(unique):
                out[unique] = np.maximum.reduceat(msgs, starts, axis=0)
            h = out
        else:
            raise ValueError(agg)
    return h
