"""Read the raw Planetoid split files (Cora, Citeseer) safely and convert them to the graph layout.

The Planetoid files (github.com/kimiyoung/planetoid, also shipped by tkipf/gcn) are Python-2 pickles.
Pickle executes code on load, so they are read with :class:`RestrictedUnpickler`, which only resolves
the handful of numpy / scipy / collections names those files reference and refuses anything else.

The split follows the GCN reference loader (tkipf/gcn ``utils.load_data``) exactly:

* vertex order = the order of ``allx`` followed by the test rows placed at their ``test.index`` slots;
* train = the first ``len(y)`` rows (20 per class), val = the next 500 rows, test = ``test.index``;
* Citeseer's ``test.index`` spans 2312..3326 (1015 slots) but lists only 1000 ids: the 15 slots with
  no test row are isolated vertices with all-zero features, no label (null) and no split, exactly as
  the reference loader pads them with zero rows (its zero one-hot label row means "no class").

Edges are the undirected citation links as the reference builds them (``nx.from_dict_of_lists``):
binary, symmetric (both directions present), duplicates collapsed, self-loops kept as a single entry.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lepton_spark import storage

log = logging.getLogger(__name__)

DATASETS = ("cora", "citeseer")
_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")


class UnsafePickleError(ValueError):
    """A pickle referenced a class outside the allow-list."""


# (module, name) pairs the Planetoid pickles need, mapped to what they resolve to today.
def _allowed() -> dict[tuple[str, str], object]:
    import collections

    import numpy.core.multiarray  # noqa: F401  (module path used by old pickles)

    reconstruct = np.core.multiarray._reconstruct  # type: ignore[attr-defined]
    scalar = np.core.multiarray.scalar  # type: ignore[attr-defined]
    return {
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "list"): list,
        ("builtins", "list"): list,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse", "csr_matrix"): sp.csr_matrix,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy/scipy/collections names the Planetoid files use."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _allowed()
        key = (module, name)
        if key not in allowed:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: not on the Planetoid allow-list "
                "(numpy arrays, scipy CSR matrices, collections.defaultdict)"
            )
        return allowed[key]


def safe_load(path: str | Path) -> object:
    """Load one Planetoid pickle with the restricted unpickler (latin1 for Python-2 numpy buffers)."""
    data = Path(path).read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable Planetoid pickle ({exc})") from None


@dataclass(frozen=True)
class PlanetoidGraph:
    """One Planetoid dataset in memory, in the reference vertex order."""

    name: str
    features: sp.csr_matrix  # (n, d) float32, raw (not normalised)
    labels: np.ndarray  # (n,) int64, -1 = no label
    adjacency: sp.csr_matrix  # (n, n) float32, symmetric, binary
    split: np.ndarray  # (n,) object: "train" | "val" | "test" | None

    @property
    def num_nodes(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def mask(self, name: str) -> np.ndarray:
        return self.split == name


def load_planetoid(name: str, root: str | Path) -> PlanetoidGraph:
    """Read ``ind.<name>.*`` from ``root`` and assemble the graph with the GCN split."""
    name = name.lower()
    if name not in DATASETS:
        raise ValueError(f"unknown Planetoid dataset {name!r}; expected one of {', '.join(DATASETS)}")
    root = Path(root)
    parts: dict[str, object] = {}
    for part in _PARTS:
        path = root / f"ind.{name}.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"missing Planetoid file {path}")
        parts[part] = safe_load(path)
    index_path = root / f"ind.{name}.test.index"
    if not index_path.is_file():
        raise FileNotFoundError(f"missing Planetoid file {index_path}")
    test_index = np.array([int(line) for line in index_path.read_text().split()], dtype=np.int64)

    y = np.asarray(parts["y"])  # x (the train rows) is allx[: len(y)]; only its length matters
    tx, ty = sp.csr_matrix(parts["tx"]), np.asarray(parts["ty"])
    allx, ally = sp.csr_matrix(parts["allx"]), np.asarray(parts["ally"])
    graph = parts["graph"]
    if not isinstance(graph, dict):
        raise ValueError(f"ind.{name}.graph: expected a dict of adjacency lists, got {type(graph).__name__}")

    test_sorted = np.sort(test_index)
    lo, hi = int(test_sorted[0]), int(test_sorted[-1])
    n_test_slots = hi - lo + 1
    if n_test_slots != len(test_index):
        # Citeseer: pad the test block with zero rows for the slots that have no test row.
        tx_ext = sp.lil_matrix((n_test_slots, tx.shape[1]), dtype=np.float32)
        tx_ext[test_sorted - lo, :] = tx
        tx = tx_ext.tocsr()
        ty_ext = np.zeros((n_test_slots, ty.shape[1]), dtype=ty.dtype)
        ty_ext[test_sorted - lo, :] = ty
        ty = ty_ext

    features = sp.vstack([allx, tx]).tolil()
    features[test_index, :] = features[test_sorted, :]
    onehot = np.vstack([ally, ty])
    onehot[test_index, :] = onehot[test_sorted, :]
    features = features.tocsr().astype(np.float32)
    features.sort_indices()

    n = features.shape[0]
    labels = np.where(onehot.sum(axis=1) > 0, onehot.argmax(axis=1), -1).astype(np.int64)

    rows, cols = [], []
    for u, nbrs in graph.items():
        for v in nbrs:
            rows.append(int(u))
            cols.append(int(v))
    r = np.array(rows + cols, dtype=np.int64)
    c = np.array(cols + rows, dtype=np.int64)
    if r.size and (r.max() >= n or c.max() >= n):
        raise ValueError(f"ind.{name}.graph references node {max(r.max(), c.max())} but only {n} rows exist")
    adjacency = sp.csr_matrix((np.ones(r.size, dtype=np.float32), (r, c)), shape=(n, n))
    adjacency.sum_duplicates()
    adjacency.data[:] = 1.0

    split = np.full(n, None, dtype=object)
    split[: y.shape[0]] = "train"
    split[y.shape[0] : y.shape[0] + 500] = "val"
    split[test_index] = "test"
    log.info("loaded planetoid %s: %d vertices, %d features, %d directed edges", name, n,
             features.shape[1], adjacency.nnz)
    return PlanetoidGraph(name=name, features=features, labels=labels, adjacency=adjacency, split=split)


def to_arrow_tables(graph: PlanetoidGraph) -> tuple[object, object]:
    """The graph as two pyarrow tables in the project layout (docs/architecture.md §3)."""
    import pyarrow as pa

    n, d = graph.features.shape
    dense = graph.features.toarray().astype(np.float32)
    features = pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1), pa.float32()), d)
    features = features.cast(pa.list_(pa.float32()))
    labels = pa.array(np.where(graph.labels >= 0, graph.labels, 0).astype(np.int32), pa.int32(),
                      mask=graph.labels < 0)
    vertices = pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "features": features,
            "label": labels,
            "split": pa.array(list(graph.split), pa.string()),
        }
    )
    coo = graph.adjacency.tocoo()
    order = np.lexsort((coo.col, coo.row))
    edges = pa.table(
        {
            "src": pa.array(coo.row[order].astype(np.int64)),
            "dst": pa.array(coo.col[order].astype(np.int64)),
            "weight": pa.array(coo.data[order].astype(np.float32)),
        }
    )
    return vertices, edges


def write_graph(graph: PlanetoidGraph, out_dir: str | Path, source: str | Path | None = None) -> dict:
    """Write the graph as ``vertices/`` and ``edges/`` Parquet plus ``_graph.json``; deterministic.

    Written with pyarrow (one file per table, fixed row order) so regenerating the bundled sample
    gives identical data. The directory is written beside ``out_dir`` and swapped in with
    :func:`lepton_spark.storage.replace_dir`.
    """
    import hashlib
    import json
    import shutil

    import pyarrow.parquet as pq

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "vertices").mkdir(parents=True)
    (tmp / "edges").mkdir(parents=True)
    vertices, edges = to_arrow_tables(graph)
    pq.write_table(vertices, tmp / "vertices" / "part-00000.parquet", compression="zstd")
    pq.write_table(edges, tmp / "edges" / "part-00000.parquet", compression="zstd")
    split_hash = hashlib.sha256("\n".join(str(s) for s in graph.split).encode()).hexdigest()
    in_degree = np.asarray(graph.adjacency.getnnz(axis=0))  # edges (src row, dst column) into each vertex
    degrees, counts = np.unique(in_degree[in_degree > 0], return_counts=True)
    symmetric = bool((graph.adjacency != graph.adjacency.T).nnz == 0)  # weights too: every weight is 1.0
    meta = {
        "name": graph.name,
        "source": "Planetoid (Yang et al. 2016), GCN split (Kipf & Welling 2017)",
        "num_vertices": graph.num_nodes,
        "num_edges": int(graph.adjacency.nnz),
        "num_features": graph.num_features,
        "num_classes": graph.num_classes,
        "split_counts": {k: int((graph.split == k).sum()) for k in ("train", "val", "test")},
        "split_sha256": split_hash,
        # every (u, v) has its (v, u), each once: the analytics reuse the directed edge blocks
        "symmetric": symmetric,
        "symmetric_weights": symmetric,
        "validated": True,  # features of one length and finite, weights 1.0
        "dense_ids": True,  # vertex ids 0..n-1 (to_arrow_tables)
        # [[in-degree, vertices], ...] over the vertices with an in-edge, as build records it: the run
        # report plots it without a Spark job
        "in_degree_histogram": [[int(d), int(c)] for d, c in zip(degrees, counts, strict=True)],
    }
    if source is not None:
        meta["raw_sha256"] = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(source).glob(f"ind.{graph.name}.*"))
        }
    (tmp / "_graph.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # left by an interrupted earlier call
    storage.replace_dir(str(tmp), str(out), aside=str(old))
    return meta
