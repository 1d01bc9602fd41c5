"""Planetoid reader: shapes, split, features vs the raw matrices, restricted unpickling, bundled sample."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from lepton_spark.datasets.planetoid import (
    UnsafePickleError,
    load_planetoid,
    safe_load,
    to_arrow_tables,
    write_graph,
)

from .conftest import SAMPLE_GRAPH


@pytest.mark.parametrize(
    ("name", "n", "d", "c", "split"),
    [("cora", 2708, 1433, 7, (140, 500, 1000)), ("citeseer", 3327, 3703, 6, (120, 500, 1000))],
)
def test_shapes_and_split(planetoid_dir: Path, name, n, d, c, split) -> None:
    g = load_planetoid(name, planetoid_dir)
    assert (g.num_nodes, g.num_features, g.num_classes) == (n, d, c)
    assert tuple(int(g.mask(s).sum()) for s in ("train", "val", "test")) == split
    # train = first len(y) rows, val = the next 500, test = test.index
    y = safe_load(planetoid_dir / f"ind.{name}.y")
    assert np.all(g.split[: len(y)] == "train")
    assert np.all(g.split[len(y) : len(y) + 500] == "val")
    test_index = np.loadtxt(planetoid_dir / f"ind.{name}.test.index", dtype=np.int64)
    assert set(np.flatnonzero(g.mask("test"))) == set(test_index.tolist())
    # labelled split rows all carry a label; the adjacency is symmetric and binary
    split_rows = g.split != None  # noqa: E711 - elementwise on an object array
    assert np.all(g.labels[split_rows] >= 0)
    assert (g.adjacency != g.adjacency.T).nnz == 0
    assert set(np.unique(g.adjacency.data)) == {1.0}


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_features_match_raw_matrices(planetoid_dir: Path, name: str) -> None:
    g = load_planetoid(name, planetoid_dir)
    allx = sp.csr_matrix(safe_load(planetoid_dir / f"ind.{name}.allx"))
    tx = sp.csr_matrix(safe_load(planetoid_dir / f"ind.{name}.tx"))
    ally = np.asarray(safe_load(planetoid_dir / f"ind.{name}.ally"))
    ty = np.asarray(safe_load(planetoid_dir / f"ind.{name}.ty"))
    test_index = np.loadtxt(planetoid_dir / f"ind.{name}.test.index", dtype=np.int64)
    rng = np.random.default_rng(0)
    for i in rng.choice(allx.shape[0], 25, replace=False):
        np.testing.assert_array_equal(g.features[i].toarray(), allx[i].toarray())
        assert g.labels[i] == ally[i].argmax()
    for j in rng.choice(tx.shape[0], 25, replace=False):
        v = test_index[j]  # the j-th test row belongs to vertex test.index[j]
        np.testing.assert_array_equal(g.features[v].toarray(), tx[j].toarray())
        assert g.labels[v] == ty[j].argmax()


def test_citeseer_isolated_test_slots(planetoid_dir: Path) -> None:
    g = load_planetoid("citeseer", planetoid_dir)
    test_index = np.loadtxt(planetoid_dir / "ind.citeseer.test.index", dtype=np.int64)
    slots = set(range(test_index.min(), test_index.max() + 1)) - set(test_index.tolist())
    missing = np.array(sorted(slots))
    assert len(missing) == 15
    assert np.all(g.labels[missing] == -1)
    assert all(s is None for s in g.split[missing])
    assert g.features[missing].nnz == 0
    assert int((g.labels == -1).sum()) == 15


class _Hostile:
    def __reduce__(self):  # executed by a plain pickle.load
        import os

        return (os.system, ("touch /tmp/lepton_hostile_pickle_ran",))


def test_hostile_pickle_refused(planetoid_dir: Path, tmp_path: Path) -> None:
    for f in planetoid_dir.glob("ind.cora.*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "ind.cora.graph").write_bytes(pickle.dumps(_Hostile(), protocol=2))
    marker = Path("/tmp/lepton_hostile_pickle_ran")
    marker.unlink(missing_ok=True)
    with pytest.raises(UnsafePickleError, match=r"ind\.cora\.graph: refusing to unpickle posix\.system"):
        load_planetoid("cora", tmp_path)
    assert not marker.exists()


def test_garbage_file_is_a_clear_error(planetoid_dir: Path, tmp_path: Path) -> None:
    for f in planetoid_dir.glob("ind.cora.*"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "ind.cora.x").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match=r"ind\.cora\.x: not a readable Planetoid pickle"):
        load_planetoid("cora", tmp_path)
    shutil.copy(planetoid_dir / "ind.cora.x", tmp_path / "ind.cora.x")
    (tmp_path / "ind.cora.y").unlink()
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.y"):
        load_planetoid("cora", tmp_path)


def test_bundled_sample_is_the_conversion(cora, tmp_path: Path) -> None:
    """data/cora equals a fresh conversion of the raw files (the sample is reproducible)."""
    write_graph(cora, tmp_path / "cora")
    for table in ("vertices", "edges"):
        fresh = pq.read_table(tmp_path / "cora" / table)
        bundled = pq.read_table(SAMPLE_GRAPH / table)
        assert fresh.equals(bundled), table
    # the recorded in-degree histogram (the report's plot) counted independently from the bundled edges
    meta = json.loads((SAMPLE_GRAPH / "_graph.json").read_text())
    assert meta["symmetric"] and meta["symmetric_weights"]  # every weight is 1.0
    ids = pq.read_table(SAMPLE_GRAPH / "vertices").column("id").to_numpy()
    assert meta["dense_ids"] and np.array_equal(np.sort(ids), np.arange(len(ids)))
    per_vertex = Counter(pq.read_table(SAMPLE_GRAPH / "edges").column("dst").to_pylist())
    assert meta["in_degree_histogram"] == [[d, c] for d, c in sorted(Counter(per_vertex.values()).items())]
    vertices, edges = to_arrow_tables(cora)
    assert vertices.schema.field("features").type.value_type.bit_width == 32
    assert edges.num_rows == cora.adjacency.nnz == 10556
