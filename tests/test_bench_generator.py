"""bench/_gen.py (the raw export generator of bench/nightly_scale.py) and the scipy baseline's analytics.

numpy/pyarrow/networkx only: no Spark here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
N, M = 2_000, 20_000


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory):
    gen = _load("_gen")
    out = tmp_path_factory.mktemp("raw")
    res = gen.generate(out, N, M, dim=16, classes=10, seed=3)
    v = ds.dataset(res.vertices_dir, format="parquet").to_table()
    e = ds.dataset(res.edges_dir, format="parquet").to_table()
    return res, v, e


def test_schema_and_files(raw):
    res, v, e = raw
    assert v.schema.field("id").type == pa.int64()
    assert v.schema.field("features").type == pa.list_(pa.float32())
    assert v.schema.field("label").type == pa.int32()
    assert v.schema.field("split").type == pa.string()
    assert e.schema.names == ["src", "dst", "weight"]
    assert [e.schema.field(c).type for c in ("src", "dst", "weight")] == [pa.int64(), pa.int64(), pa.float32()]
    assert v.num_rows == N and e.num_rows == M
    assert res.vertex_files >= 2 and res.edge_files >= 2
    assert len(list(Path(res.vertices_dir).glob("part-*.parquet"))) == res.vertex_files
    lengths = np.diff(v.column("features").combine_chunks().offsets.to_numpy())
    assert (lengths == 16).all()
    w = e.column("weight").to_numpy()
    assert (w > 0).all() and np.isfinite(w).all()


def test_ids_distinct_sparse_unsorted(raw):
    _, v, _ = raw
    ids = v.column("id").to_numpy()
    assert len(np.unique(ids)) == N
    assert ids.min() >= 0 and ids.max() < 2**48
    assert ids.max() > 1000 * N  # not dense 0..n-1
    assert not (np.diff(ids) > 0).all()  # not sorted


def test_labels_and_splits(raw):
    _, v, _ = raw
    split = np.array(v.column("split").to_pylist(), dtype=object)
    label = v.column("label")
    for name, frac in (("train", 0.05), ("val", 0.05), ("test", 0.10)):
        assert (split == name).sum() == round(frac * N)
    labelled = split != None  # noqa: E711 - elementwise on an object array
    valid = np.asarray(label.is_valid())
    assert (valid == labelled).all()  # labels exactly on the split rows
    y = label.drop_null().to_numpy()
    assert y.min() >= 0 and y.max() == 9


def test_dirt_fractions(raw):
    _, v, e = raw
    ids = np.sort(v.column("id").to_numpy())
    src, dst = e.column("src").to_numpy(), e.column("dst").to_numpy()

    def known(x: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(ids, x), len(ids) - 1)
        return ids[pos] == x

    dangling = ~(known(src) & known(dst))
    assert abs(dangling.mean() - 0.001) <= 0.0005
    loops = src == dst
    assert abs(loops.mean() - 0.002) <= 0.001
    key = src.astype(object) * 2**48 + dst.astype(object)  # exact pairs of 48-bit ids
    _, counts = np.unique(key, return_counts=True)
    repeated = int((counts - 1).sum())  # rows that repeat an earlier (src, dst)
    assert abs(repeated / M - 0.005) <= 0.003


def test_heavy_tail_and_homophily(raw):
    res, v, e = raw
    ids = v.column("id").to_numpy()
    src, dst = e.column("src").to_numpy(), e.column("dst").to_numpy()
    _, deg = np.unique(np.concatenate([src, dst]), return_counts=True)
    mean_all = 2 * M / N
    assert deg.max() > 10 * mean_all  # hubs
    assert np.median(deg) < mean_all  # most vertices below the mean
    assert len(deg) < 0.9 * N  # a cold-start share of vertices has no edges at all
    # homophily on the edges whose endpoints both carry a label
    order = np.argsort(ids)
    lab = v.column("label").fill_null(-1).to_numpy()[order]
    sid = np.sort(ids)
    ps = np.minimum(np.searchsorted(sid, src), N - 1)
    pd = np.minimum(np.searchsorted(sid, dst), N - 1)
    ok = (sid[ps] == src) & (sid[pd] == dst) & (src != dst) & (lab[ps] >= 0) & (lab[pd] >= 0)
    assert ok.sum() > 300
    same = (lab[ps] == lab[pd])[ok].mean()
    assert abs(same - res.config["homophily"]) <= 0.06


def test_pagerank_matches_networkx():
    nx = pytest.importorskip("networkx")
    sc = _load("_scipy_nightly")
    rng = np.random.default_rng(0)
    n = 60
    src = rng.integers(0, n, 400)
    dst = rng.integers(0, n, 400)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    # every vertex gets an out-edge: GraphX's PageRank leaks the rank of out-edge-less vertices, networkx
    # spreads it, so they agree exactly on graphs without such vertices
    src = np.concatenate([src, np.arange(n)])
    dst = np.concatenate([dst, (np.arange(n) + 1) % n])
    pairs = np.unique(np.stack([src, dst], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    ours = sc.pagerank(n, src, dst, reset=0.15, max_iter=300)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(src.tolist(), dst.tolist()))
    ref = nx.pagerank(g, alpha=0.85, tol=1e-12, max_iter=1000)
    ref = np.array([ref[i] for i in range(n)])
    assert ours.sum() == pytest.approx(n)  # GraphFrames scale
    np.testing.assert_allclose(ours / ours.sum(), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours / ours.sum(), ref, rtol=1e-6)


def test_components_and_lpa_match_the_library_driver_path():
    local = pytest.importorskip("lepton_spark.analytics.local")
    sc = _load("_scipy_nightly")
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n = 300
    src = rng.integers(0, n, 500)
    dst = rng.integers(0, n, 500)
    keep = src != dst
    s, d = np.concatenate([src[keep], dst[keep]]), np.concatenate([dst[keep], src[keep]])  # symmetric
    pairs = np.unique(np.stack([s, d], axis=1), axis=0)
    s, d = pairs[:, 0], pairs[:, 1]
    ids = np.arange(n)
    A = sp.csr_matrix((np.ones(len(s)), (s, d)), shape=(n, n))
    np.testing.assert_array_equal(sc.components(n, A), local.components(ids, s, d))
    np.testing.assert_array_equal(sc.label_propagation(n, s, d, 5, symmetric=True),
                                  local.label_propagation(ids, s, d, 5))
    np.testing.assert_array_equal(sc.label_propagation(n, s, d, 5), local.label_propagation(ids, s, d, 5))
    np.testing.assert_allclose(sc.pagerank(n, s, d), local.pagerank(ids, s, d), rtol=1e-12)
