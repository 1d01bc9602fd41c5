"""A small raw graph as a user brings it (sparse integer ids, dense features, a little dirt).

Shared by the crash-consistency tests and the console-script end-to-end test: 150 vertices in 3
planted classes, ~900 directed edges mostly within a class, plus 3 edges to unknown vertices
(quarantined as ``dangling_edge``), repeated edges and one self-loop (dropped by the build).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N, DIM, CLASSES = 150, 8, 3
DANGLING = 3


def write_raw_graph(root: Path, seed: int = 7) -> tuple[str, str]:
    """Write ``root/vertices.parquet`` and ``root/edges.parquet``; return their paths."""
    rng = np.random.default_rng(seed)
    ids = 1_000_003 + 7919 * np.arange(N, dtype=np.int64)  # sparse, not 0..n-1
    y = rng.integers(0, CLASSES, N)
    centers = rng.normal(size=(CLASSES, DIM))
    x = (centers[y] * 0.8 + rng.normal(size=(N, DIM))).astype(np.float64)
    split = np.array(["train"] * 30 + ["val"] * 30 + ["test"] * 60 + [None] * 30, dtype=object)
    rng.shuffle(split)
    src, dst = [], []
    for u in range(N):
        for _ in range(6):
            same = rng.random() < 0.85
            pool = np.flatnonzero(y == y[u]) if same else np.flatnonzero(y != y[u])
            src.append(ids[u])
            dst.append(ids[rng.choice(pool)])
    src += [ids[0], ids[1], ids[2], ids[5], ids[5], ids[9]]
    dst += [ids[1], ids[2], ids[3], ids[5], 42, 43]  # duplicates, a self-loop, two dangling ends
    src.append(44)  # a third dangling edge (unknown source)
    dst.append(ids[0])
    w = rng.uniform(0.5, 2.0, len(src))
    root.mkdir(parents=True, exist_ok=True)
    vpath, epath = root / "vertices.parquet", root / "edges.parquet"
    pq.write_table(pa.table({"id": pa.array(ids), "features": pa.array(x.tolist(), pa.list_(pa.float64())),
                             "label": pa.array(y.astype(np.int32)), "split": pa.array(split.tolist())}), vpath)
    pq.write_table(pa.table({"src": pa.array(np.array(src, dtype=np.int64)),
                             "dst": pa.array(np.array(dst, dtype=np.int64)), "weight": pa.array(w)}), epath)
    return str(vpath), str(epath)


#: config overrides for a quick nightly on this graph (every stage, small random-walk embeddings)
NIGHTLY_OVERRIDES = (
    "model.type=sgc", "model.params={K: 2, epochs: 60}",
    "embed.walks_per_node=2", "embed.walk_length=6", "embed.dim=8", "embed.window=3",
    "pipeline.stages=[build, train, propagate, analytics, embed]",
)


def nightly_overrides(vertices: str, edges: str) -> list[str]:
    return [f"build.vertices={vertices}", f"build.edges={edges}", *NIGHTLY_OVERRIDES]
