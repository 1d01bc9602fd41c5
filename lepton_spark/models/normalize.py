"""Local (scipy) graph and feature normalisation, mirroring the Spark primitives exactly.

Conventions (shared with :mod:`lepton_spark.graph`):

* ``A`` is a scipy sparse matrix with ``A[u, v]`` = weight of the edge ``u -> v`` (row = src, col = dst).
* One propagation round with weights ``w`` computes ``x'_v = sum_u w_uv x_u`` which is ``A.T @ X``.
  Every operator returned here is already transposed, i.e. a propagation round is ``P @ X``.
* ``sym``: ``Â = D^-1/2 (A + I) D^-1/2`` with ``D`` the weighted in-degree (column sums of ``A + I``,
  "degree on the dst side including the self-loop"). A vertex that already has a self-loop gets weight
  2 on the diagonal, exactly like Kipf's ``adj + sp.eye``. Every vertex gets a self-loop, isolated ones
  included (on Spark the self-loops are generated from the vertex table for the same reason).
* ``mean``: ``x'_v`` = mean over the in-edges of ``w_uv x_u`` = ``(A.T @ X)_v / count_in(v)``; a vertex
  without in-edges gets a zero row (GraphSAGE-mean neighbour aggregation, Spark ``agg="mean"``).
* feature ``row`` normalisation divides every row by its L1 norm (Kipf's ``preprocess_features`` for the
  non-negative bag-of-words features); all-zero rows stay zero. ``none`` leaves the features as they are.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

FEATURE_NORMS = ("row", "none")

Matrix = np.ndarray | sp.spmatrix | sp.sparray


def as_csr64(A: Matrix) -> sp.csr_matrix:
    """Return ``A`` as a float64 CSR matrix (a copy; the caller's matrix is never modified)."""
    if not sp.issparse(A):
        A = sp.csr_matrix(np.asarray(A))
    A = sp.csr_matrix(A, dtype=np.float64, copy=True)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {A.shape}")
    A.sum_duplicates()
    return A


def sym_propagation(A: Matrix, self_loops: bool = True) -> sp.csr_matrix:
    """The GCN operator ``P = Â.T`` with ``Â = D^-1/2 (A + I) D^-1/2`` (one round = ``P @ X``).

    Computed from the raw adjacency so callers never pre-normalise. Degrees are weighted in-degrees
    (column sums), counted after adding the self-loops, so every degree is >= 1 when ``self_loops``.
    """
    A1 = as_csr64(A)
    if self_loops:
        A1 = (A1 + sp.identity(A1.shape[0], dtype=np.float64, format="csr")).tocsr()
    deg = np.asarray(A1.sum(axis=0)).ravel()
    with np.errstate(divide="ignore"):
        dinv = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0)
    D = sp.diags(dinv)
    return (D @ A1 @ D).T.tocsr()


def mean_propagation(A: Matrix) -> sp.csr_matrix:
    """The GraphSAGE-mean operator ``M = diag(1 / count_in) A.T`` (rows without in-edges stay zero)."""
    A1 = sp.csr_matrix(A, dtype=np.float64, copy=True)
    if A1.shape[0] != A1.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {A1.shape}")
    count = A1.tocsc().getnnz(axis=0).astype(np.float64)  # stored entries per column = in-edges
    A1.sum_duplicates()
    with np.errstate(divide="ignore"):
        inv = np.where(count > 0, 1.0 / count, 0.0)
    return (sp.diags(inv) @ A1.T).tocsr()


def normalize_features(X: Matrix, mode: str) -> Matrix:
    """Apply the model's feature normalisation (``row`` = L1 rows, ``none``) in float64.

    Sparse input stays sparse (CSR); dense input stays dense.
    """
    if mode not in FEATURE_NORMS:
        raise ValueError(f"unknown feature normalisation {mode!r}; expected one of {FEATURE_NORMS}")
    if sp.issparse(X):
        Xf = sp.csr_matrix(X, dtype=np.float64, copy=True)
        if mode == "row":
            norm = np.asarray(abs(Xf).sum(axis=1)).ravel()
            inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
            Xf = sp.csr_matrix(sp.diags(inv) @ Xf)
        return Xf
    Xd = np.asarray(X, dtype=np.float64).copy()
    if mode == "row":
        norm = np.abs(Xd).sum(axis=1, keepdims=True)
        Xd = np.divide(Xd, norm, out=np.zeros_like(Xd), where=norm > 0)
    return Xd


def row_normalize_f32(x: np.ndarray) -> np.ndarray:
    """Row L1 normalisation of a float32 batch (the function shipped to Spark via ``map_features``)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.abs(x).sum(axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0).astype(np.float32, copy=False)
