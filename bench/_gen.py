"""Synthetic raw export for bench/nightly_scale.py: a planted-class, power-law, homophilous graph as Parquet.

    generate(out_dir, nodes=1_000_000, edges=10_000_000, dim=64, classes=10, seed=0)

writes ``<out_dir>/vertices/part-*.parquet`` and ``<out_dir>/edges/part-*.parquet`` (several files, each
in several row groups) that look like a user's raw export, not like a prepared graph:

vertices
    ``id`` int64: distinct random 48-bit ids in [0, 2^48), in random order (not sorted, not dense);
    ``features`` list<float>: ``dim`` Gaussian values = class mean + unit noise. The class means are
    random mixed-sign vectors of norm ``signal`` (1.0), so the features alone give a weak classifier
    (~0.32 test accuracy with 10 classes and 64 dims);
    ``label`` int32: the planted class (uniform over ``classes``), only on the rows that carry a
    ``split`` (null elsewhere, as an export of a partly labelled population has it);
    ``split`` string: ``train`` 5%, ``val`` 5%, ``test`` 10%, null for the other 80%.

edges
    ``src``, ``dst`` int64 raw ids, ``weight`` float32 > 0 (log-normal), ``edges`` rows in random order.
    Chung-Lu style power law: every vertex gets a weight ``rank^(-1/(gamma-1))`` (random rank, gamma
    2.2), except a ``isolated`` share (20%, "cold start") that gets none and so no clean edge; ``src``
    is drawn in proportion to the weights, ``dst`` too, inside ``src``'s class for a ``homophily``
    share (80%) of the pairs, else inside a uniformly chosen other class. The two pools are drawn to
    their exact counts as distinct pairs, so exactly ``homophily`` of the clean edges join two vertices
    of one class (hub pairs repeat mostly inside a class: deduplicating a mixed pool would lower it).
    Dirt, as real exports have it: ``dangling`` (0.1%) of the rows have one endpoint that is not a
    vertex id, ``duplicates`` (0.5%) repeat an earlier (src, dst) with another weight, ``self_loops``
    (0.2%) are ``u -> u``. Apart from those, (src, dst) pairs are distinct; (u, v) and (v, u) can both
    occur.

Graph signal (measured with bench/_scipy_nightly.py: SGC K=2 on the symmetrised, sym-normalised graph +
logistic regression): 0.84 test accuracy at 100k/1M and 0.83 at 1M/10M against 0.32-0.34 from the
features alone. Degrees at 1M/10M: mean 20 (raw rows x 2 / vertices), median 10 among the vertices
with edges, max ~150k.

Speed and memory: vertex rows are generated and written in chunks; the edge endpoints are held as
int64 pair keys and int32 positions: 1M/10M takes ~10 s and 0.7 GiB peak, 3M/30M ~37 s and 1.3 GiB
(6 + 6 files, 1.4 GB on disk).
Pure numpy + pyarrow (no Spark).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VERSION = 2  # bump when the output for the same options changes (nightly_scale.py's cache key)
ID_BITS = 48
SPLIT_FRACTIONS = (("train", 0.05), ("val", 0.05), ("test", 0.10))
VERTEX_FILE_ROWS = 500_000
VERTEX_GROUP_ROWS = 100_000
EDGE_FILE_ROWS = 5_000_000
EDGE_GROUP_ROWS = 1_000_000
EDGE_CHUNK = 2_000_000


@dataclass
class GenConfig:
    nodes: int
    edges: int
    dim: int = 64
    classes: int = 10
    seed: int = 0
    gamma: float = 2.2          # power-law exponent of the expected degrees
    homophily: float = 0.8      # fraction of (clean) edges inside a class
    signal: float = 1.0         # norm of each class mean vector (noise is N(0, I_dim))
    dangling: float = 0.001     # fraction of edge rows with an endpoint that is not a vertex
    duplicates: float = 0.005   # fraction of edge rows that repeat an earlier (src, dst)
    self_loops: float = 0.002   # fraction of edge rows u -> u
    isolated: float = 0.2       # fraction of vertices that never get a (clean) edge ("cold start")
    min_files: int = 2          # at least this many files per table


@dataclass
class GenResult:
    config: dict[str, Any]
    vertices_dir: str
    edges_dir: str
    vertex_files: int
    edge_files: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _files(rows: int, per_file: int, min_files: int) -> list[tuple[int, int]]:
    k = max(min_files, math.ceil(rows / per_file)) if rows else 1
    bounds = np.linspace(0, rows, k + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def distinct(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.sort + neighbour compare: far faster than np.unique on numpy 2.4)."""
    s = np.sort(a)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def raw_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct int64 in [0, 2^48), in random order."""
    ids = distinct(rng.integers(0, 1 << ID_BITS, size=n + n // 1000 + 16, dtype=np.int64))
    while len(ids) < n:  # ~n^2/2^49 collisions: practically never
        ids = distinct(np.concatenate([ids, rng.integers(0, 1 << ID_BITS, size=n, dtype=np.int64)]))
    ids = ids[rng.permutation(len(ids))[:n]]
    return ids


def class_means(rng: np.random.Generator, classes: int, dim: int, signal: float) -> np.ndarray:
    """Mixed-sign class mean vectors of norm ``signal`` each."""
    mu = rng.standard_normal((classes, dim))
    return (mu / np.linalg.norm(mu, axis=1, keepdims=True) * signal).astype(np.float32)


def _list_column(x: np.ndarray) -> pa.Array:
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.float32()))


class _Sampler:
    """Power-law endpoint sampling: globally, or inside one class (vectorised inverse-CDF)."""

    def __init__(self, weights: np.ndarray, label: np.ndarray, classes: int) -> None:
        self.cum = np.cumsum(weights)
        self.total = float(self.cum[-1])
        self.by_class = np.argsort(label, kind="stable").astype(np.int32)
        self.cum_c = np.cumsum(weights[self.by_class])
        sizes = np.bincount(label, minlength=classes)
        self.end = np.cumsum(sizes)                  # row range of class c in by_class: [start, end)
        self.start = self.end - sizes
        lo = np.concatenate([[0.0], self.cum_c])
        self.lo, self.hi = lo[self.start], lo[self.end]

    def any(self, rng: np.random.Generator, k: int) -> np.ndarray:
        u = rng.random(k) * self.total
        return np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.cum) - 1).astype(np.int32)

    def within(self, rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
        u = self.lo[cls] + rng.random(len(cls)) * (self.hi[cls] - self.lo[cls])
        pos = np.searchsorted(self.cum_c, u, side="right")
        pos = np.clip(pos, self.start[cls], self.end[cls] - 1)
        return self.by_class[pos]


def _distinct_pairs(rng: np.random.Generator, sampler: _Sampler, label: np.ndarray, classes: int, same: bool,
                    target: int) -> tuple[np.ndarray, int]:
    """``target`` distinct non-loop keys ``src * n + dst``: src by weight, dst by weight inside src's class
    (``same``) or inside a uniformly chosen other class. Returns (sorted keys, pairs drawn)."""
    n = len(label)
    keys = np.zeros(0, dtype=np.int64)
    drawn = 0
    while len(keys) < target:
        need = target - len(keys)
        k = int(need * (1.1 if drawn else 1.02)) + 64
        parts = []
        for a in range(0, k, EDGE_CHUNK):
            b = min(k, a + EDGE_CHUNK)
            s = sampler.any(rng, b - a)
            cls = label[s] if same else (label[s] + rng.integers(1, classes, b - a)) % classes
            d = sampler.within(rng, cls)
            key = s.astype(np.int64) * n + d
            parts.append(key[s != d])
        drawn += k
        before = len(keys)
        keys = distinct(np.concatenate([keys, *parts]))
        del parts
        if drawn > 50 * target + 1000 and len(keys) - before < need // 100:
            raise ValueError(f"cannot draw {target} distinct pairs: the graph is too dense for its vertices")
    if len(keys) > target:  # a random subset: the sorted order must not decide which pairs stay
        keys = np.delete(keys, rng.permutation(len(keys))[:len(keys) - target])
    return keys, drawn


def plant_edges(rng: np.random.Generator, cfg: GenConfig, label: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Distinct non-loop (src, dst) vertex positions (int32), ``count`` of them, in random order."""
    n, c = cfg.nodes, cfg.classes
    rank = rng.permutation(n).astype(np.float64) + 1.0
    weights = rank ** (-1.0 / (cfg.gamma - 1.0))
    if cfg.isolated > 0:
        weights[rng.random(n) < cfg.isolated] = 0.0  # zero width in the CDF: never drawn
    sampler = _Sampler(weights, label, c)
    n_dup = round(cfg.duplicates * cfg.edges)
    n_loop = round(cfg.self_loops * cfg.edges)
    target = cfg.edges - n_dup - n_loop
    if target > n * (n - 1) // 4:
        raise ValueError(f"{cfg.edges} edges are too many for {n} vertices")
    n_in = round(cfg.homophily * target) if c > 1 else target
    # intra- and cross-class pairs are drawn as two pools, each to its exact count: repeated draws
    # (hub pairs, mostly inside a class) are dropped per pool, so the distinct edges keep the homophily
    k_in, d_in = _distinct_pairs(rng, sampler, label, c, True, n_in)
    k_x, d_x = _distinct_pairs(rng, sampler, label, c, False, target - n_in)
    keys = np.concatenate([k_in, k_x])
    del k_in, k_x
    src = (keys // n).astype(np.int32)
    dst = (keys % n).astype(np.int32)
    del keys
    return src, dst, {"drawn_pairs": d_in + d_x, "distinct_pairs": int(target), "intra_class_pairs": n_in}


def generate(out_dir: str | Path, nodes: int, edges: int, dim: int = 64, classes: int = 10, seed: int = 0,
             **overrides: Any) -> GenResult:
    """Write the raw vertex and edge tables under ``out_dir`` (see the module docstring)."""
    import time

    t0 = time.perf_counter()
    cfg = GenConfig(nodes=nodes, edges=edges, dim=dim, classes=classes, seed=seed, **overrides)
    if nodes < classes or nodes < 2:
        raise ValueError("need at least as many vertices as classes")
    out = Path(out_dir)
    vdir, edir = out / "vertices", out / "edges"
    for d in (vdir, edir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("part-*.parquet"):
            old.unlink()
    rng = np.random.default_rng(seed)
    n = nodes
    ids = raw_ids(rng, n)
    label = rng.integers(0, classes, n).astype(np.int32)
    mu = class_means(rng, classes, dim, cfg.signal)
    split_code = np.zeros(n, dtype=np.int8)  # 0 none, 1 train, 2 val, 3 test
    perm = rng.permutation(n)
    lo = 0
    for code, (_, frac) in enumerate(SPLIT_FRACTIONS, start=1):
        k = round(frac * n)
        split_code[perm[lo:lo + k]] = code
        lo += k
    del perm
    split_names = np.array([None, *[s for s, _ in SPLIT_FRACTIONS]], dtype=object)

    # ---- vertices, chunk by chunk (features are never all in memory)
    vschema = pa.schema([("id", pa.int64()), ("features", pa.list_(pa.float32())), ("label", pa.int32()),
                         ("split", pa.string())])
    vfiles = _files(n, VERTEX_FILE_ROWS, cfg.min_files)
    for i, (a, b) in enumerate(vfiles):
        with pq.ParquetWriter(vdir / f"part-{i:05d}.parquet", vschema) as w:
            for g in range(a, b, VERTEX_GROUP_ROWS):
                h = min(b, g + VERTEX_GROUP_ROWS)
                lab = label[g:h]
                x = rng.standard_normal((h - g, dim), dtype=np.float32)
                x += mu[lab]
                code = split_code[g:h]
                labelled = code > 0
                w.write_table(pa.table({
                    "id": pa.array(ids[g:h]),
                    "features": _list_column(x),
                    "label": pa.array(lab, mask=~labelled),
                    "split": pa.array(split_names[code], type=pa.string()),
                }, schema=vschema))

    # ---- edges
    src, dst, counts = plant_edges(rng, cfg, label)
    m_clean = len(src)
    n_dup = round(cfg.duplicates * edges)
    n_loop = round(cfg.self_loops * edges)
    n_dang = min(round(cfg.dangling * edges), m_clean)
    raw_src = ids[src]
    raw_dst = ids[dst]
    del src, dst
    weight = rng.lognormal(0.0, 0.5, m_clean).astype(np.float32)
    # dangling: one endpoint of some rows replaced by an id that is not a vertex
    sorted_ids = np.sort(ids)
    foreign = rng.integers(0, 1 << ID_BITS, size=n_dang + 64, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, foreign), n - 1)
    foreign = distinct(foreign[sorted_ids[pos] != foreign])[:n_dang]
    foreign = foreign[rng.permutation(len(foreign))]
    n_dang = len(foreign)
    rows = rng.choice(m_clean, size=n_dang, replace=False)
    on_src = rng.random(n_dang) < 0.5
    raw_src[rows[on_src]] = foreign[on_src]
    raw_dst[rows[~on_src]] = foreign[~on_src]
    is_dangling = np.zeros(m_clean, dtype=bool)
    is_dangling[rows] = True
    # duplicates of clean rows (with another weight), self-loops on uniformly chosen vertices
    dup_rows = rng.choice(np.flatnonzero(~is_dangling), size=n_dup, replace=n_dup > m_clean - n_dang)
    loop_v = ids[rng.integers(0, n, n_loop)]
    raw_src = np.concatenate([raw_src, raw_src[dup_rows], loop_v])
    raw_dst = np.concatenate([raw_dst, raw_dst[dup_rows], loop_v])
    weight = np.concatenate([weight, rng.lognormal(0.0, 0.5, n_dup).astype(np.float32),
                             rng.lognormal(0.0, 0.5, n_loop).astype(np.float32)])
    del is_dangling, dup_rows, loop_v
    order = rng.permutation(len(raw_src))
    eschema = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("weight", pa.float32())])
    efiles = _files(len(order), EDGE_FILE_ROWS, cfg.min_files)
    for i, (a, b) in enumerate(efiles):
        with pq.ParquetWriter(edir / f"part-{i:05d}.parquet", eschema) as w:
            for g in range(a, b, EDGE_GROUP_ROWS):
                sel = order[g:min(b, g + EDGE_GROUP_ROWS)]
                w.write_table(pa.table({"src": raw_src[sel], "dst": raw_dst[sel], "weight": weight[sel]},
                                       schema=eschema))
    counts.update({"vertices": n, "edge_rows": len(order), "clean_edges": m_clean - n_dang,
                   "dangling_rows": n_dang, "duplicate_rows": n_dup, "self_loop_rows": n_loop,
                   **{f"split_{s}": int((split_code == k).sum()) for k, (s, _) in enumerate(SPLIT_FRACTIONS, 1)}})
    return GenResult(config=asdict(cfg), vertices_dir=str(vdir), edges_dir=str(edir), vertex_files=len(vfiles),
                     edge_files=len(efiles), counts=counts, seconds=round(time.perf_counter() - t0, 3))
