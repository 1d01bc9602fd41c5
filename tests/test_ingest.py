"""Graph build: every validation rule with exact counts, transforms vs scipy/numpy, ids, formats, bad inputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from pyspark.sql import functions as F

from lepton_spark.cli import main
from lepton_spark.config import BuildConfig
from lepton_spark.ingest import BuildFailed, build_graph

NAN = float("nan")


def _write(tmp: Path, name: str, table: pa.Table, fmt: str = "parquet") -> str:
    path = tmp / f"{name}.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in table.to_pylist()) + "\n")
    return str(path)


def _cfg(v: str, e: str, **kw) -> BuildConfig:
    kw.setdefault("report_components_max_edges", 0)
    return BuildConfig(vertices=v, edges=e, **kw)


def _read(out: Path, table: str) -> list[dict]:
    return pq.read_table(out / table).to_pylist()


# ------------------------------------------------------------------ every rule, exact counts


def test_every_rule_counted_and_quarantined(spark, tmp_path: Path) -> None:
    v = pa.table({
        "id": ["a", "b", "c", "d", "e", "f", "g", "a", None, "  ", "h", "i", "j"],
        "features": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [1.0, 2.0], [2.0, 1.0],
                     [9.0, 9.0], [0.0, 0.0], [0.0, 0.0], [1.0], [NAN, 1.0], None],
        "label": [0, 1, 2, 0, 1, 2, 0, 1, 1, 1, 1, 1, 1],
        "split": ["train", "VAL", "test", "validation", None, "", "train", "x", "x", "x", "x", "x", "x"],
        "extra": list(range(13)),
    })
    v2 = pa.table({"id": ["k", "l", "m"], "features": [[1.0, 1.0]] * 3, "label": [7, -1, 1],
                   "split": ["train", "test", "holdout"], "extra": [13, 14, 15]})
    e = pa.table({
        "src": ["a", "b", "c", "d", "a", None, "a", "a", "b", "zz", "h", "a", "k"],
        "dst": ["b", "c", "d", "a", "a", "b", "", "c", "c", "a", "a", "b", "a"],
        "weight": [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, NAN, -2.0, 1.0, 1.0, 3.0, 1.0],
    })
    vpath = _write(tmp_path, "v", pa.concat_tables([v, v2]))
    epath = _write(tmp_path, "e", e)
    out = tmp_path / "out"
    cfg = _cfg(vpath, epath, num_classes=3, max_quarantine_fraction=1.0, symmetrize=False, self_loops="keep",
               merge_duplicates="sum")
    report = build_graph(spark, cfg, str(out))
    assert report["quarantine"] == {
        "null_id": 2,  # None and blank
        "duplicate_vertex": 1,  # the second "a"
        "bad_features": 3,  # wrong length (h), NaN (i), null (j)
        "bad_label": 2,  # 7 >= num_classes, -1
        "bad_split": 1,  # holdout ("x" rows were rejected earlier by other rules)
        "null_endpoint": 2,  # src None, dst ""
        "bad_weight": 2,  # NaN, negative
        "dangling_edge": 3,  # zz -> a, h (rejected vertex) -> a, k (rejected vertex) -> a
    }
    assert report["counts"]["vertices_in"] == 16 and report["counts"]["vertices_out"] == 7
    assert report["counts"]["edges_in"] == 13
    # merged duplicates (a->b twice: 1 + 3 = 4 with merge sum), self-loop a->a kept
    mapping = {r["raw_id"]: r["id"] for r in _read(out, "mapping")}
    assert sorted(mapping) == ["a", "b", "c", "d", "e", "f", "g"] and sorted(mapping.values()) == list(range(7))
    inv = {i: k for k, i in mapping.items()}
    edges = {(inv[r["src"]], inv[r["dst"]]): r["weight"] for r in _read(out, "graph/edges")}
    assert edges == {("a", "b"): 4.0, ("b", "c"): 2.0, ("c", "d"): 1.0, ("d", "a"): 1.0, ("a", "a"): 1.0}
    verts = {inv[r["id"]]: r for r in _read(out, "graph/vertices")}
    assert verts["b"]["split"] == "val" and verts["d"]["split"] == "val" and verts["f"]["split"] is None
    assert verts["c"]["label"] == 2 and verts["a"]["features"] == [1.0, 0.0] and verts["g"]["extra"] == 6
    q = _read(out, "quarantine/bad_features")
    assert sorted(str(r["id"]) for r in q) == ["h", "i", "j"] and {r["reason"] for r in q} == {"bad_features"}
    assert len(_read(out, "quarantine/dangling_edge")) == 3
    graph_meta = json.loads((out / "graph" / "_graph.json").read_text())
    assert graph_meta["num_features"] == 2 and graph_meta["num_classes"] == 3
    assert graph_meta["split_counts"] == {"train": 2, "val": 2, "test": 1}


# ------------------------------------------------------------------ transforms vs references


def test_sym_normalisation_matches_scipy(spark, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, m = 50, 200
    src, dst = rng.integers(0, n, m), rng.integers(0, n, m)
    w = rng.uniform(0.5, 2.0, m)
    feats = rng.normal(size=(n, 3))
    vpath = _write(tmp_path, "v", pa.table({"id": np.arange(n), "features": feats.tolist()}))
    epath = _write(tmp_path, "e", pa.table({"src": src, "dst": dst, "weight": w}))
    out = tmp_path / "out"
    cfg = _cfg(vpath, epath, self_loops="add", symmetrize=True, merge_duplicates="max", edge_norm="sym",
               feature_norm="standard", max_quarantine_fraction=0.0)
    build_graph(spark, cfg, str(out))
    # reference: drop loops, symmetrise, merge by max, + I, D^-1/2 (A+I) D^-1/2
    a = np.zeros((n, n))
    for s, d, x in zip(src, dst, w):
        if s != d:
            a[s, d] = max(a[s, d], x)
            a[d, s] = max(a[d, s], x)
    a += np.eye(n)
    deg = a.sum(axis=0)
    want = a / np.sqrt(np.outer(deg, deg))
    got_rows = _read(out, "graph/edges")
    got = sp.coo_matrix(([r["weight"] for r in got_rows], ([r["src"] for r in got_rows], [r["dst"] for r in got_rows])),
                        shape=(n, n)).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    x = np.array([r["features"] for r in sorted(_read(out, "graph/vertices"), key=lambda r: r["id"])])
    np.testing.assert_allclose(x, (feats - feats.mean(0)) / feats.std(0), rtol=1e-5, atol=1e-5)
    # the in-degree histogram the run report plots, recorded by the build, against the reference matrix
    meta = json.loads((out / "graph" / "_graph.json").read_text())
    indeg = np.count_nonzero(a, axis=0)  # a has the self-loops of A + I; the built edges have them too
    want_hist = sorted((int(d), int(c)) for d, c in zip(*np.unique(indeg[indeg > 0], return_counts=True)))
    assert [tuple(p) for p in meta["in_degree_histogram"]] == want_hist
    # the promise the partitioned propagation relies on (in-degree = out-degree, weights too), checked
    assert meta["symmetric"] and meta["symmetric_weights"] and np.array_equal(got, got.T)
    # and the dense-id promise (the partitioned plan's arithmetic placement): the ids are 0..n-1
    assert meta["dense_ids"] and sorted(r["id"] for r in _read(out, "graph/vertices")) == list(range(n))


def test_row_normalised_edges_are_not_symmetric_in_weight(spark, tmp_path: Path) -> None:
    """edge_norm row divides (u, v) and (v, u) by different out-degrees: _graph.json must not promise
    equal weights both ways (structure stays symmetric)."""
    vpath = _write(tmp_path, "v", pa.table({"id": [0, 1, 2], "features": [[1.0]] * 3}))
    epath = _write(tmp_path, "e", pa.table({"src": [0, 0], "dst": [1, 2]}))
    out = tmp_path / "out"
    build_graph(spark, _cfg(vpath, epath, symmetrize=True, edge_norm="row", max_quarantine_fraction=0.0), str(out))
    w = {(r["src"], r["dst"]): r["weight"] for r in _read(out, "graph/edges")}
    assert w[(0, 1)] != w[(1, 0)]  # 1/2 against 1/1
    meta = json.loads((out / "graph" / "_graph.json").read_text())
    assert meta["symmetric"] and not meta["symmetric_weights"]


@pytest.mark.parametrize(("merge", "loops", "want"), [
    ("first", "drop", {(0, 1): 5.0, (1, 0): 5.0, (1, 2): 1.0, (2, 1): 1.0}),
    ("sum", "keep", {(0, 1): 7.0, (1, 0): 7.0, (1, 2): 1.0, (2, 1): 1.0, (2, 2): 8.0}),
])
def test_merge_and_self_loop_policies(spark, tmp_path: Path, merge, loops, want) -> None:
    vpath = _write(tmp_path, "v", pa.table({"id": [0, 1, 2], "features": [[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]]}))
    epath = _write(tmp_path, "e", pa.table({"src": [0, 0, 1, 2], "dst": [1, 1, 2, 2], "weight": [5.0, 2.0, 1.0, 4.0]}))
    out = tmp_path / f"out-{merge}"
    build_graph(spark, _cfg(vpath, epath, merge_duplicates=merge, self_loops=loops, feature_norm="row",
                            max_quarantine_fraction=0.0), str(out))
    assert {(r["src"], r["dst"]): r["weight"] for r in _read(out, "graph/edges")} == want
    feats = {r["id"]: r["features"] for r in _read(out, "graph/vertices")}
    assert feats == {0: [0.5, 0.5], 1: [1.0, 0.0], 2: [0.0, 0.0]}  # row (L1) normalisation, zero row stays


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_text_formats_match_parquet(spark, tmp_path: Path, fmt: str) -> None:
    v = pa.table({"node": ["x1", "x2", "x3"], "features": ["0.5 1", "[1, 2]", "3;4"], "label": [0, 1, 0]})
    e = pa.table({"a": ["x1", "x2"], "b": ["x2", "x3"]})
    kw = dict(id_col="node", src_col="a", dst_col="b", max_quarantine_fraction=0.0)
    out_pq, out_txt = tmp_path / "pq", tmp_path / fmt
    build_graph(spark, _cfg(_write(tmp_path, "v", v), _write(tmp_path, "e", e), **kw), str(out_pq))
    build_graph(spark, _cfg(_write(tmp_path, "v", v, fmt), _write(tmp_path, "e", e, fmt), format=fmt, **kw),
                str(out_txt))
    for table in ("graph/vertices", "graph/edges", "mapping"):
        assert sorted(map(str, _read(out_pq, table))) == sorted(map(str, _read(out_txt, table))), table
    mapping = {r["raw_id"]: r["id"] for r in _read(out_txt, "mapping")}
    feats = {r["id"]: r["features"] for r in _read(out_txt, "graph/vertices")}
    assert feats[mapping["x1"]] == [0.5, 1.0] and feats[mapping["x3"]] == [3.0, 4.0]
    assert len(_read(out_txt, "graph/edges")) == 4  # symmetrised by default


def test_string_ids_round_trip_and_rebuild_replaces(spark, tmp_path: Path) -> None:
    ids = [f"user-{i:03d}" for i in range(20)]
    vpath = _write(tmp_path, "v", pa.table({"id": ids, "features": [[float(i)] for i in range(20)]}))
    epath = _write(tmp_path, "e", pa.table({"src": ids[:1] * 19, "dst": ids[1:]}))  # a star
    out = tmp_path / "out"
    for _ in range(2):  # a rebuild swaps the whole output in place
        build_graph(spark, _cfg(vpath, epath, report_components_max_edges=1000), str(out))
    mapping = {r["id"]: r["raw_id"] for r in _read(out, "mapping")}
    feats = {mapping[r["id"]]: r["features"][0] for r in _read(out, "graph/vertices")}
    assert feats == {f"user-{i:03d}": float(i) for i in range(20)}
    edges = {(mapping[r["src"]], mapping[r["dst"]]) for r in _read(out, "graph/edges")}
    assert ("user-000", "user-007") in edges and ("user-007", "user-000") in edges and len(edges) == 38
    report = json.loads((out / "build_report.json").read_text())
    assert report["connected_components"] == 1 and report["degree"]["max"] == 38
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _star(tmp_path: Path, n: int) -> tuple[str, str]:
    """A star on ``n`` integer ids (vertex 0 in the middle), one feature each."""
    vpath = _write(tmp_path, f"v{n}", pa.table({"id": list(range(n)), "features": [[float(i)] for i in range(n)]}))
    epath = _write(tmp_path, f"e{n}", pa.table({"src": [0] * (n - 1), "dst": list(range(1, n))}))
    return vpath, epath


def test_a_build_cleans_up_after_a_killed_one(spark, tmp_path: Path, caplog) -> None:
    """A killed build leaves its staging directory (and an aside directory if it died after moving the old
    output away); the next build of that output removes exactly those, nothing else beside it."""
    out = tmp_path / "out"
    build_graph(spark, _cfg(*_star(tmp_path, 5)), str(out))
    left = [tmp_path / ".out.staging-0123456789ab", tmp_path / ".out.old-0123456789ab",
            tmp_path / "out.old-ba9876543210"]
    others = [tmp_path / ".other.staging-0123456789ab", tmp_path / "out.old-backup", tmp_path / "out.staging-0123456789ab",
              tmp_path / ".out.old-0123456789ab.x", tmp_path / ".out.staging-ba9876543210"]
    for d in left + others[:-1]:
        (d / "graph").mkdir(parents=True)
        (d / "graph" / "part-0.parquet").write_bytes(b"half-written")
    others[-1].write_text("a file, not a directory a build makes")
    with caplog.at_level(logging.WARNING, logger="lepton_spark"):
        report = build_graph(spark, _cfg(*_star(tmp_path, 7)), str(out))
    assert [d.exists() for d in left] == [False] * 3
    assert [d.exists() for d in others] == [True] * 5
    assert sum("left by an interrupted earlier build" in ln for ln in caplog.text.splitlines()) == 3
    assert report["graph"]["num_vertices"] == 7 and len(_read(out, "graph/vertices")) == 7


def test_a_build_killed_between_its_renames_is_recovered(spark, tmp_path: Path, monkeypatch, caplog) -> None:
    """Killed after moving the old output aside and before moving the new one in: the output is absent and
    the previous complete build sits in a hidden aside directory. The next build puts that back first
    (readers see the last good graph while it runs), then replaces it as usual."""
    from lepton_spark import storage

    out = tmp_path / "out"
    build_graph(spark, _cfg(*_star(tmp_path, 5)), str(out))
    real_move, moves = storage.move, []

    def move_then_die(src: str, dst: str) -> None:
        moves.append((src, dst))
        if len(moves) == 2:  # staging -> out: the process is "killed" here
            raise KeyboardInterrupt
        real_move(src, dst)

    monkeypatch.setattr(storage, "move", move_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_graph(spark, _cfg(*_star(tmp_path, 6)), str(out))
    monkeypatch.setattr(storage, "move", real_move)
    aside = Path(moves[0][1])
    assert not out.exists() and aside.parent == tmp_path and aside.name.startswith(".out.old-")
    assert len(pq.read_table(aside / "graph" / "vertices")) == 5

    from lepton_spark.ingest.job import remove_leftovers

    with caplog.at_level(logging.WARNING, logger="lepton_spark"):
        done = remove_leftovers(str(out))
    assert len(done) == 1 and done[0].startswith(f"restored {out} from .out.old-") and done[0] in caplog.text
    assert len(_read(out, "graph/vertices")) == 5 and not aside.exists()
    assert remove_leftovers(str(out)) == []
    build_graph(spark, _cfg(*_star(tmp_path, 6)), str(out))
    assert len(_read(out, "graph/vertices")) == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("symmetrize", [True, False])
def test_report_components_driver_and_spark_paths_agree(spark, tmp_path: Path, monkeypatch, caplog,
                                                        symmetrize) -> None:
    """Weak components by hand: {a, b, c} (a directed path), {d, e}, {f} and {g} isolated -> 4.

    Degrees (out + in) by hand: symmetrised a 2, b 4, c 2, d 2, e 2, f 0, g 0; as given a 1, b 2, c 1,
    d 1, e 1, f 0, g 0. Counted on the driver (scipy), then on Spark from the edge files (numpy in the
    tasks), then on Spark with the DataFrame aggregate (files pyarrow cannot use)."""
    from lepton_spark.graph.blocks import EdgeFiles
    from lepton_spark.ingest import job

    ids = list("abcdefg")
    vpath = _write(tmp_path, "v", pa.table({"id": ids, "features": [[1.0]] * 7}))
    epath = _write(tmp_path, "e", pa.table({"src": ["a", "b", "e"], "dst": ["b", "c", "d"]}))
    counts, degrees = [], []
    for path in ("driver", "files", "frame"):
        monkeypatch.setattr(job, "LOCAL_COMPONENTS_MAX_EDGES", 0 if path != "driver" else 2_000_000)
        if path == "frame":
            monkeypatch.setattr(EdgeFiles, "usable", lambda self: False)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lepton_spark"):
            report = build_graph(spark, _cfg(vpath, epath, report_components_max_edges=1000,
                                             symmetrize=symmetrize), str(tmp_path / f"out-{path}"))
        assert ("histogram of 7 vertices from" in caplog.text) == (path == "files")
        counts.append(report["connected_components"])
        degrees.append(report["degree"])
        if symmetrize:  # in-degree = half the degree: a 1, b 2, c 1, d 1, e 1 (isolated vertices left out)
            assert [tuple(p) for p in report["graph"]["in_degree_histogram"]] == [(1, 4), (2, 1)]
    assert counts == [4, 4, 4]
    assert degrees[0] == degrees[1] == degrees[2]
    top = 4 if symmetrize else 2
    assert (degrees[0]["isolated"], degrees[0]["min"], degrees[0]["max"]) == (2, 0, top)
    assert degrees[0]["mean"] == pytest.approx((12 if symmetrize else 6) / 7, abs=1e-4)  # rounded to 4 places


def test_report_counts_read_with_pyarrow_equal_spark_counts(spark, tmp_path: Path, monkeypatch) -> None:
    """The build report's vertex, edge, split and class counts come from the written files (pyarrow);
    where pyarrow cannot read them Spark counts the same (by hand: 6 vertices, splits 2/1/1 plus two
    without, labels up to 4 with a null one, 3 input edges symmetrised to 6)."""
    from lepton_spark import storage

    v = pa.table({"id": [10, 11, 12, 13, 14, 15], "features": [[1.0]] * 6,
                  "label": pa.array([0, 4, None, 2, 1, 1], pa.int32()),
                  "split": ["train", "TRAIN", "val", "", None, "test"]})
    e = pa.table({"src": [10, 11, 12], "dst": [11, 12, 13]})
    vpath, epath = _write(tmp_path, "v", v), _write(tmp_path, "e", e)
    reports = [build_graph(spark, _cfg(vpath, epath), str(tmp_path / "a"))]

    def unreadable(path: str, columns: list[str]):
        raise OSError("no file system for this URI")

    monkeypatch.setattr(storage, "read_parquet_arrow", unreadable)
    monkeypatch.setattr(storage, "count_parquet_rows",
                        lambda spark_, path, by=None: (spark_.read.parquet(path).count(), {}))
    reports.append(build_graph(spark, _cfg(vpath, epath), str(tmp_path / "b")))
    for report in reports:
        g = report["graph"]
        assert (g["num_vertices"], g["num_edges"], g["num_classes"]) == (6, 6, 5)
        assert g["split_counts"] == {"train": 2, "val": 1, "test": 1}
        assert report["counts"]["vertices_out"] == 6 and report["counts"]["edges_out"] == 6


@pytest.mark.parametrize("ragged", [False, True])
def test_bad_features_entries_null_nan_and_infinities(spark, tmp_path: Path, ragged: bool) -> None:
    """``bad_features`` rejects a null entry, NaN and +-inf anywhere in the array (first, middle, last),
    and nothing else: with every row of one length (the summary counts them) and with a short row too
    (the per-length pass counts them)."""
    feats = [[1.0, 2.0, 3.0], [float("inf"), 1.0, 1.0], [1.0, 1.0, float("-inf")], [1.0, None, 1.0],
             [1.0, NAN, 1.0], [-3.0e38, 0.0, 3.0e38], [0.0, -0.0, 1e-45], [2.0, 2.0, 2.0]]
    if ragged:
        feats.append([1.0, 1.0])
    ids = list(range(len(feats)))
    vpath = _write(tmp_path, "v", pa.table({"id": ids, "features": pa.array(feats, pa.list_(pa.float32()))}))
    epath = _write(tmp_path, "e", pa.table({"src": [0, 5], "dst": [5, 6]}))
    out = tmp_path / "out"
    report = build_graph(spark, _cfg(vpath, epath, max_quarantine_fraction=1.0), str(out))
    assert report["quarantine"]["bad_features"] == 4 + ragged
    assert sorted(r["id"] for r in _read(out, "quarantine/bad_features")) == [1, 2, 3, 4, *([8] if ragged else [])]
    assert report["graph"]["num_features"] == 3


# ------------------------------------------------------------------ bad-input corpus


def _corpus(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    good_v = _write(tmp, "good_v", pa.table({"id": [1, 2, 3], "features": [[1.0], [2.0], [3.0]]}))
    good_e = _write(tmp, "good_e", pa.table({"src": [1, 2], "dst": [2, 3]}))
    corrupt = tmp / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not really parquet PAR1")
    many = 200
    big_v = pa.table({"id": list(range(many)), "features": [[1.0]] * many, "label": [0] * many,
                      "split": ["train"] * many})
    big_e = pa.table({"src": list(range(many - 1)), "dst": list(range(1, many))})
    cases = [
        ("vertices path missing", ["--vertices", str(tmp / "nope.parquet"), "--edges", good_e], 3, "no such file"),
        ("edges path missing", ["--vertices", good_v, "--edges", str(tmp / "nope")], 3, "no such file"),
        ("no id column", ["--vertices", _write(tmp, "noid", pa.table({"key": [1]})), "--edges", good_e], 3,
         "required column 'id' not found"),
        ("no dst column", ["--vertices", good_v, "--edges", _write(tmp, "nodst", pa.table({"src": [1]}))], 3,
         "required column 'dst' not found"),
        ("corrupt parquet", ["--vertices", str(corrupt), "--edges", good_e], 3, "cannot read"),
        ("empty edges", ["--vertices", good_v, "--edges", _write(tmp, "empty_e", pa.table(
            {"src": pa.array([], pa.int64()), "dst": pa.array([], pa.int64())}))], 3, "the table is empty"),
        ("empty vertices", ["--vertices", _write(tmp, "empty_v", pa.table(
            {"id": pa.array([], pa.int64()), "features": pa.array([], pa.list_(pa.float64()))})), "--edges", good_e],
         3, "the table is empty"),
        ("features of a map type", ["--vertices", _write(tmp, "mapf", pa.table(
            {"id": [1], "features": pa.array([[("a", 1.0)]], pa.map_(pa.string(), pa.float64()))})), "--edges", good_e],
         3, "has type map"),
        ("features column absent", ["--vertices", _write(tmp, "nof", pa.table({"id": [1, 2]})), "--edges", good_e],
         3, "features column 'features' not found"),
        ("feature_cols not numeric", ["--vertices", _write(tmp, "strf", pa.table({"id": [1], "f1": ["x"]})),
                                      "--edges", good_e, "--set", "build.feature_cols=[f1]"], 3, "not numeric"),
        ("boolean weight", ["--vertices", good_v, "--edges", _write(tmp, "boolw", pa.table(
            {"src": [1], "dst": [2], "weight": [True]}))], 3, "not numeric"),
        ("all edges dangling", ["--vertices", good_v, "--edges", _write(tmp, "dang", pa.table(
            {"src": [7, 8], "dst": [9, 10]}))], 3, "dangling_edge: 2"),
        ("negative weights over threshold", ["--vertices", good_v, "--edges", _write(tmp, "negw", pa.table(
            {"src": [1, 2], "dst": [2, 3], "weight": [-1.0, 1.0]}))], 3, "largest rule bad_weight: 1"),
        ("duplicate ids with policy fail", ["--vertices", _write(tmp, "dupv", pa.table(
            {"id": [1, 1, 2, 3], "features": [[1.0]] * 4})), "--edges", good_e,
            "--set", "build.duplicate_vertices=fail"], 3, "1 duplicate vertex ids"),
        ("labels outside classes", ["--vertices", _write(tmp, "badlab", big_v.set_column(
            2, "label", pa.array([5] * 10 + [0] * (many - 10)))), "--edges", _write(tmp, "big_e", big_e),
            "--set", "build.num_classes=3"], 3, "largest rule bad_label: 10"),
        ("unknown split values", ["--vertices", _write(tmp, "badsplit", big_v.set_column(
            3, "split", pa.array(["train"] * 190 + ["holdout"] * 10))), "--edges", _write(tmp, "big_e2", big_e)],
         3, "largest rule bad_split: 10"),
        ("NaN features", ["--vertices", _write(tmp, "nanf", big_v.set_column(
            1, "features", pa.array([[NAN]] * 5 + [[1.0]] * (many - 5)))), "--edges", _write(tmp, "big_e3", big_e)],
         3, "largest rule bad_features: 5"),
        ("blank string ids", ["--vertices", _write(tmp, "blank", pa.table(
            {"id": ["a", "", " ", "b"], "features": [[1.0]] * 4})), "--edges", _write(tmp, "abe", pa.table(
                {"src": ["a"], "dst": ["b"]}))], 3, "largest rule null_id: 2"),
        ("csv with the wrong delimiter", ["--vertices", _write(tmp, "v_csv", pa.table(
            {"id": [1, 2], "features": ["1", "2"]}), "csv"), "--edges", _write(tmp, "e_csv", pa.table(
                {"src": [1], "dst": [2]}), "csv"), "--format", "csv", "--set", "build.csv_delimiter=;"], 3,
         "required column 'id' not found"),
        ("csv read as json", ["--vertices", _write(tmp, "v_csv2", pa.table({"id": [1, 2], "features": ["1", "2"]}),
                                                   "csv"), "--edges", good_e, "--format", "json"], 3, "cannot read"),
        ("unknown format", ["--vertices", good_v, "--edges", good_e, "--set", "build.format=xml"], 2,
         "build.format: 'xml' is not one of"),
        ("no vertices given", ["--edges", good_e], 2, "build needs --vertices and --edges"),
        ("non-numeric feature strings", ["--vertices", _write(tmp, "txtf", big_v.set_column(
            1, "features", pa.array(["1.0"] * 190 + ["abc"] * 10)), "csv"), "--edges",
            _write(tmp, "big_e4", big_e, "csv"), "--format", "csv"], 3, "largest rule bad_features: 10"),
    ]
    return cases


def test_bad_input_corpus(spark, tmp_path: Path, capsys) -> None:
    cases = _corpus(tmp_path)
    assert len(cases) >= 20
    failures = []
    for i, (name, args, code, needle) in enumerate(cases):
        out = tmp_path / f"out{i}"
        argv = ["build", *args] if name == "no vertices given" else ["build", *args, "--output", str(out)]
        if name == "no vertices given":
            argv += ["--output", str(out)]
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("lepton-spark:")]
        ok = rc == code and len(lines) == 1 and needle in lines[0] and "Traceback" not in err and not out.exists()
        if not ok:
            failures.append(f"{name}: rc={rc} (want {code}) lines={lines}")
    leftovers = [p.name for p in tmp_path.iterdir() if ".staging-" in p.name]
    assert not failures, "\n".join(failures)
    assert leftovers == []


def test_over_threshold_raises_build_failed(spark, tmp_path: Path) -> None:
    vpath = _write(tmp_path, "v", pa.table({"id": [1, 2, 3], "features": [[1.0]] * 3}))
    epath = _write(tmp_path, "e", pa.table({"src": [1, 5], "dst": [2, 6]}))
    with pytest.raises(BuildFailed, match=r"1 of 2 edge rows \(50.00%\)"):
        build_graph(spark, _cfg(vpath, epath), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ id types


@pytest.mark.parametrize(("id_type", "end_type"), [(pa.float64(), pa.int64()), (pa.int32(), pa.float32()),
                                                    (pa.int64(), pa.int64())])
def test_numeric_ids_match_across_types(spark, tmp_path: Path, id_type, end_type) -> None:
    """Float ids (1.0) match integer endpoints (1) and the other way round; nothing is quarantined."""
    raw = [10, 20, 30, 40]
    vpath = _write(tmp_path, "v", pa.table({"id": pa.array([float(i) for i in raw]).cast(id_type),
                                            "features": [[1.0], [2.0], [3.0], [4.0]]}))
    epath = _write(tmp_path, "e", pa.table({"src": pa.array([10.0, 20.0, 30.0]).cast(end_type),
                                            "dst": pa.array([20.0, 30.0, 40.0]).cast(end_type)}))
    out = tmp_path / "out"
    report = build_graph(spark, _cfg(vpath, epath), str(out))
    assert report["quarantine"]["dangling_edge"] == 0
    assert report["counts"]["edges_out"] == 6  # 3 edges, symmetrised
    mapping = {r["id"]: float(r["raw_id"]) for r in _read(out, "mapping")}
    edges = {(mapping[r["src"]], mapping[r["dst"]]) for r in _read(out, "graph/edges")}
    assert (10.0, 20.0) in edges and (40.0, 30.0) in edges


# ------------------------------------------------------------------ the degree summary

def test_symmetric_degree_summary_equals_the_general_one(spark) -> None:
    from lepton_spark.analytics.degrees import degree_stats

    # symmetric with a self-loop (2 -> 2), a multi-degree hub (0) and an isolated vertex (5)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 2), (3, 4)]
    rows = sorted({(a, b) for a, b in pairs} | {(b, a) for a, b in pairs})
    edges = spark.createDataFrame(rows, "src long, dst long")
    vertices = spark.createDataFrame([(i,) for i in range(6)], "id long")
    general = degree_stats(vertices, edges)
    assert degree_stats(vertices, edges, symmetric=True) == general
    # by hand: 0 -> 6, 1 -> 4, 2 -> 6 (1, 0 both ways + the loop counted in src and dst), 3 -> 4, 4 -> 2, 5 -> 0
    assert (general["min"], general["max"], general["isolated"], general["median"]) == (0, 6, 1, 4.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degree_summary_from_histogram_equals_numpy(seed: int) -> None:
    from lepton_spark.analytics.degrees import stats_from_histogram

    rng = np.random.default_rng(seed)
    degrees = np.concatenate([np.zeros(rng.integers(0, 5), dtype=np.int64), rng.zipf(2.0, 997) % 500])
    values, counts = np.unique(degrees, return_counts=True)
    got = stats_from_histogram(list(zip(values.tolist(), counts.tolist())))
    # numpy's default percentile method is the linear interpolation Spark SQL's percentile uses
    assert got["median"] == pytest.approx(np.percentile(degrees, 50), abs=1e-12)
    assert got["p99"] == pytest.approx(np.percentile(degrees, 99), abs=1e-9)
    assert got["mean"] == round(float(degrees.mean()), 4)
    assert (got["min"], got["max"], got["isolated"]) == (degrees.min(), degrees.max(), int(np.sum(degrees == 0)))
    assert stats_from_histogram([])["max"] == 0


def test_degree_summary_matches_spark_percentile(spark) -> None:
    from lepton_spark.analytics.degrees import degree_stats

    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, 40, 150), rng.integers(0, 40, 150)
    edges = spark.createDataFrame([(int(a), int(b)) for a, b in zip(src, dst)], "src long, dst long")
    vertices = spark.createDataFrame([(i,) for i in range(45)], "id long")  # 40..44 isolated
    deg = vertices.join(edges.select(F.col("src").alias("id")).unionAll(edges.select(F.col("dst").alias("id")))
                        .groupBy("id").count(), "id", "left").fillna(0, subset=["count"])
    want = deg.agg(F.expr("percentile(count, 0.5)").alias("m"), F.expr("percentile(count, 0.99)").alias("p")).first()
    got = degree_stats(vertices, edges)
    assert got["median"] == pytest.approx(want["m"], abs=1e-12) and got["p99"] == pytest.approx(want["p"], abs=1e-9)



# ------------------------------------------------------------------ dense ids: Spark and driver numbering

@pytest.mark.parametrize("kind", ["long", "int", "string"])
def test_dense_ids_on_the_driver_equal_the_spark_numbering(spark, kind: str) -> None:
    """The same id for every row: integers numerically (negative, 48-bit, sparse), strings by their
    UTF-8 bytes (upper case before lower, a prefix first, digits as text, non-ASCII last)."""
    from pyspark.testing import assertDataFrameEqual

    from lepton_spark.ingest.ids import dense_ids, dense_ids_on_driver

    rng = np.random.default_rng(5)
    if kind == "string":
        raw = ["b", "a", "ab", "B", "Z", "10", "9", "é", "e", "zz", "", "user-007", "user-10", "Ω", "a b"]
    else:
        hi = 1 << 47 if kind == "long" else 1 << 30
        raw = [int(x) for x in np.unique(rng.integers(-hi, hi, size=300, dtype=np.int64))]
    df = spark.createDataFrame([(str(r), r) for r in raw], f"_key string, _raw {kind}").repartition(3)
    got = dense_ids_on_driver(df, "_raw")
    want = dense_ids(df, "_raw", num_partitions=4)
    assertDataFrameEqual(got.select("_key", "_raw", "id"), want.select("_key", "_raw", "id"))
    assert sorted(r["id"] for r in got.collect()) == list(range(len(raw)))


def test_build_numbers_ids_the_same_on_driver_and_spark(spark, tmp_path: Path) -> None:
    """``build.broadcast_ids_max`` 0 numbers the ids on Spark: the same mapping, vertices and edges as
    the driver's numbering; the raw edge rows are counted from the Parquet footers either way."""
    rng = np.random.default_rng(2)
    ids = rng.choice(1 << 40, size=50, replace=False).astype(np.int64)
    vpath = _write(tmp_path, "v", pa.table({"id": ids, "features": [[float(i), 1.0] for i in range(50)]}))
    epath = _write(tmp_path, "e", pa.table({"src": ids[rng.integers(0, 50, 120)], "dst": ids[rng.integers(0, 50, 120)]}))
    reports = {}
    for limit in (5_000_000, 0):
        reports[limit] = build_graph(spark, _cfg(vpath, epath, broadcast_ids_max=limit), str(tmp_path / f"o{limit}"))
        assert reports[limit]["counts"]["edges_in"] == 120
    for table in ("mapping", "graph/vertices", "graph/edges"):
        a, b = (sorted(_read(tmp_path / f"o{limit}", table), key=lambda r: json.dumps(r, sort_keys=True))
                for limit in (5_000_000, 0))
        assert a == b and len(a) > 0
    mapping = sorted(_read(tmp_path / "o0", "mapping"), key=lambda r: r["id"])
    assert [r["raw_id"] for r in mapping] == sorted(ids.tolist())  # integer ids keep their order
    # the driver's numbering writes mapping/ with pyarrow, Spark's with Spark: the same schema for readers
    a, b = (spark.read.parquet(str(tmp_path / f"o{limit}" / "mapping")).schema for limit in (5_000_000, 0))
    assert a == b and [f.name for f in a] == ["id", "raw_id"]


@pytest.mark.parametrize("feature_norm", ["none", "standard"])
def test_vertices_written_by_the_tasks_equal_spark_written(spark, tmp_path: Path, monkeypatch,
                                                            feature_norm: str) -> None:
    """On a local master the built vertices are written by the tasks with pyarrow: the same rows and the
    same schema as Spark's writer gives (passthrough columns of several types, null labels and splits,
    normalised features); a passthrough column of a nested type leaves the writing to Spark."""
    import datetime as dt

    from pyspark.testing import assertDataFrameEqual

    from lepton_spark import task_writes

    n = 40
    v = pa.table({"id": [f"v{i:02d}" for i in range(n)], "features": [[float(i), -1.0, 2.5 * i] for i in range(n)],
                  "label": pa.array([i % 3 if i % 5 else None for i in range(n)], pa.int32()),
                  "split": [["train", "val", None, "test"][i % 4] for i in range(n)],
                  "name": [f"name {i}" for i in range(n)], "score": [i / 7 for i in range(n)],
                  "seen": [dt.date(2026, 1, 1 + i % 28) for i in range(n)], "flag": [i % 2 == 0 for i in range(n)]})
    e = pa.table({"src": [f"v{i:02d}" for i in range(n - 1)], "dst": [f"v{i + 1:02d}" for i in range(n - 1)]})
    vpath, epath = _write(tmp_path, "v", v), _write(tmp_path, "e", e)
    calls = []
    real = task_writes.write_in_tasks
    monkeypatch.setattr(task_writes, "write_in_tasks", lambda *a, **k: calls.append(1) or real(*a, **k))
    build_graph(spark, _cfg(vpath, epath, feature_norm=feature_norm), str(tmp_path / "tasks"))
    assert calls == [1]
    monkeypatch.setattr(task_writes, "tasks_share_disk", lambda *a: False)
    build_graph(spark, _cfg(vpath, epath, feature_norm=feature_norm), str(tmp_path / "spark"))
    assert calls == [1]
    got, want = (spark.read.parquet(str(tmp_path / w / "graph" / "vertices")) for w in ("tasks", "spark"))
    assert got.schema == want.schema and got.count() == n
    assertDataFrameEqual(got, want, rtol=0.0, atol=0.0)
    names = sorted(p.name for p in (tmp_path / "tasks" / "graph" / "vertices").iterdir())
    assert names and all(x.startswith("part-") and x.endswith(".snappy.parquet") for x in names)
    # a struct passthrough column: Spark's writer
    monkeypatch.undo()
    monkeypatch.setattr(task_writes, "write_in_tasks", lambda *a, **k: calls.append(2) or real(*a, **k))
    nested = v.append_column("where", pa.array([{"x": i, "y": "a"} for i in range(n)]))
    build_graph(spark, _cfg(_write(tmp_path, "v2", nested), epath), str(tmp_path / "nested"))
    assert calls == [1]
    assert spark.read.parquet(str(tmp_path / "nested" / "graph" / "vertices")).count() == n
