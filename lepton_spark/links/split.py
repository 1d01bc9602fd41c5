"""The link-prediction edge split: held-out positive pairs and sampled negative pairs, seeded.

Link prediction treats the graph as undirected: a *pair* ``(u, v)`` with ``u < v`` is an edge when
the adjacency has ``u -> v`` or ``v -> u``; self-loops are never pairs. :func:`split_edges` follows
Kipf & Welling's protocol (VGAE 2016, ``mask_test_edges`` in their reference code): the pairs are
shuffled and ``floor(m * test_frac)`` go to test, ``floor(m * val_frac)`` to validation, the rest to
training (85/5/10 by default); as many negative pairs as positives are sampled for validation and
for test. Differences from the reference, all of them stricter:

* negatives are never edges of the FULL graph (the reference lets a validation negative be a test
  edge) and the validation and test negatives are disjoint;
* the pairs are sorted before shuffling, so the split depends only on the graph and the seed, not on
  the order the edges were read in;
* negatives are drawn in vectorised batches (``numpy.random.Generator``), not one pair at a time.

The training graph (:meth:`EdgeSplit.train_adjacency`) is the input adjacency without any held-out
pair, in either direction: message passing never sees a validation or test edge.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

#: largest vertex count whose pair codes ``u * n + v`` fit an int64
MAX_NODES = 3_000_000_000


def undirected_pairs(A: Any) -> np.ndarray:
    """The distinct undirected pairs ``(u, v)``, ``u < v``, of a (directed) adjacency, sorted; (m, 2) int64."""
    coo = sp.coo_matrix(A)
    keep = (coo.row != coo.col) & (coo.data != 0)
    r, c = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    n = int(A.shape[0])
    codes = np.unique(lo * n + hi)
    return np.stack([codes // n, codes % n], axis=1) if codes.size else np.zeros((0, 2), np.int64)


def pair_codes(pairs: np.ndarray, n: int) -> np.ndarray:
    """``u * n + v`` for pairs already in ``u < v`` form (int64)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0] * int(n) + pairs[:, 1]


def sample_negative_pairs(n: int, count: int, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct pairs ``(u, v)``, ``u < v``, uniformly among those whose code is not in
    ``exclude`` (sorted int64 pair codes), in the order they were drawn; (count, 2) int64.

    Batches of random ordered pairs are drawn, self pairs dropped, each pair canonicalised to
    ``u < v``, excluded and repeated codes rejected, until ``count`` are collected. Raises
    ``ValueError`` when the graph has fewer than ``count`` non-edges left.
    """
    if count <= 0:
        return np.zeros((0, 2), np.int64)
    free = n * (n - 1) // 2 - int(exclude.size)
    if free < count:
        raise ValueError(f"cannot sample {count} negative pairs: the graph has only {free} unconnected pairs")
    got = np.zeros(0, np.int64)
    while got.size < count:
        draw = max(2 * (count - got.size), 1024)
        u = rng.integers(0, n, size=draw, dtype=np.int64)
        v = rng.integers(0, n, size=draw, dtype=np.int64)
        ok = u != v
        codes = np.minimum(u, v)[ok] * n + np.maximum(u, v)[ok]
        codes = codes[~np.isin(codes, exclude, assume_unique=False)]
        codes = np.concatenate([got, codes])
        _, first = np.unique(codes, return_index=True)  # keep the first draw of every code, in draw order
        got = codes[np.sort(first)]
    got = got[:count]
    return np.stack([got // n, got % n], axis=1)


@dataclass
class EdgeSplit:
    """A link-prediction split of one graph (all pairs are ``(u, v)`` with ``u < v``, int64 (m, 2)).

    ``train``, ``val``, ``test`` partition the graph's undirected pairs; ``val_neg``/``test_neg`` are
    sampled non-edges (disjoint from each other and from every edge of the graph).
    """

    num_nodes: int
    train: np.ndarray
    val: np.ndarray
    val_neg: np.ndarray
    test: np.ndarray
    test_neg: np.ndarray
    seed: int

    def counts(self) -> dict[str, int]:
        """Pairs per part (JSON-able)."""
        return {k: int(getattr(self, k).shape[0]) for k in ("train", "val", "val_neg", "test", "test_neg")}

    def sha256(self) -> str:
        """sha256 over every part's pair codes, in a fixed order (the split's fingerprint)."""
        h = hashlib.sha256(f"n={self.num_nodes};".encode())
        for k in ("train", "val", "val_neg", "test", "test_neg"):
            codes = np.sort(pair_codes(getattr(self, k), self.num_nodes))
            h.update(f"{k}:{codes.size};".encode())
            h.update(codes.astype("<i8").tobytes())
        return h.hexdigest()

    def train_adjacency(self, A: Any) -> sp.csr_matrix:
        """``A`` (float64 CSR) without the held-out pairs in either direction; everything else (the
        training pairs with their weights and directions, self-loops) is kept."""
        n = self.num_nodes
        coo = sp.coo_matrix(A)
        r, c = coo.row.astype(np.int64), coo.col.astype(np.int64)
        held = np.sort(np.concatenate([pair_codes(self.val, n), pair_codes(self.test, n)]))
        drop = np.isin(np.minimum(r, c) * n + np.maximum(r, c), held) & (r != c)
        out = sp.csr_matrix((coo.data[~drop].astype(np.float64), (r[~drop], c[~drop])), shape=(n, n))
        out.sum_duplicates()
        return out


def split_edges(A: Any, *, val_frac: float = 0.05, test_frac: float = 0.10, seed: int = 0) -> EdgeSplit:
    """Split the undirected pairs of ``A`` into train/val/test and sample val/test negatives.

    Parameters
    ----------
    A : scipy sparse (n, n), ``A[u, v]`` = weight of ``u -> v``
    val_frac, test_frac : fractions of the pairs held out (floored), ``val_frac + test_frac < 1``
    seed : everything random comes from ``numpy.random.default_rng(seed)``

    Returns
    -------
    EdgeSplit; the same ``(A, fractions, seed)`` always gives the same split.
    """
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise ValueError(f"val_frac and test_frac must be in [0, 1) with a sum below 1, got {val_frac}, {test_frac}")
    n = int(A.shape[0])
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be square, got {A.shape}")
    if n > MAX_NODES:
        raise ValueError(f"{n} vertices: pair codes would overflow int64")
    pairs = undirected_pairs(A)
    m = pairs.shape[0]
    n_test, n_val = int(np.floor(m * test_frac)), int(np.floor(m * val_frac))
    if m - n_test - n_val < 1 or (val_frac > 0 and n_val < 1) or (test_frac > 0 and n_test < 1):
        raise ValueError(f"the graph has {m} undirected edges: too few for a {val_frac:g}/{test_frac:g} "
                         "validation/test split")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(m)
    val, test, train = pairs[perm[:n_val]], pairs[perm[n_val:n_val + n_test]], pairs[perm[n_val + n_test:]]
    edges = pair_codes(pairs, n)  # sorted (undirected_pairs sorts)
    test_neg = sample_negative_pairs(n, n_test, edges, rng)
    val_neg = sample_negative_pairs(n, n_val, np.sort(np.concatenate([edges, pair_codes(test_neg, n)])), rng)
    split = EdgeSplit(n, train, val, val_neg, test, test_neg, int(seed))
    log.info("edge split (seed %d): %d train, %d val (+%d neg), %d test (+%d neg) pairs", seed, train.shape[0],
             n_val, val_neg.shape[0], n_test, test_neg.shape[0])
    return split
