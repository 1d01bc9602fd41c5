"""export: a top-PageRank sample with attributes, readable as GraphML and GEXF (parsed with networkx)."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lepton_spark.cli import main


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory) -> Path:
    g = nx.planted_partition_graph(3, 20, 0.4, 0.02, seed=2)
    root = tmp_path_factory.mktemp("g")
    (root / "vertices").mkdir()
    (root / "edges").mkdir()
    pq.write_table(pa.table({"id": list(range(60)), "features": [[1.0]] * 60, "label": [i // 20 for i in range(60)]}),
                   root / "vertices" / "part-0.parquet")
    src = [a for a, b in g.edges()] + [b for a, b in g.edges()]
    dst = [b for a, b in g.edges()] + [a for a, b in g.edges()]
    pq.write_table(pa.table({"src": src, "dst": dst, "weight": [1.0] * len(src)}), root / "edges" / "part-0.parquet")
    return root


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_export_sample_with_attributes(spark, graph_dir: Path, tmp_path: Path, capsys, fmt: str) -> None:
    out = tmp_path / f"g.{fmt}"
    assert main(["export", "--graph", str(graph_dir), "--output", str(out), "--format", fmt,
                 "--max-vertices", "25", "--max-edges", "40"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    g = nx.read_graphml(out) if fmt == "graphml" else nx.read_gexf(out)
    assert g.number_of_nodes() == summary["vertices"] == 25
    assert g.number_of_edges() == summary["edges"] <= 40
    # the kept vertices are the 25 with the highest PageRank, and they carry the engine's values
    from lepton_spark.graph import GraphFrame

    v = spark.read.parquet(str(graph_dir / "vertices"))
    e = spark.read.parquet(str(graph_dir / "edges"))
    pr = {r["id"]: r["pagerank"] for r in GraphFrame(v, e).pageRank(maxIter=20).vertices.collect()}
    top = sorted(pr, key=lambda i: (-pr[i], i))[:25]
    assert sorted(int(n) for n in g.nodes()) == sorted(top)
    for n, attrs in g.nodes(data=True):
        assert abs(float(attrs["pagerank"]) - pr[int(n)]) < 1e-9
        assert "community" in attrs and "component" in attrs and int(attrs["class"]) == int(n) // 20
    assert not list(tmp_path.glob(".*tmp"))


def test_export_needs_output(spark, graph_dir: Path, capsys) -> None:
    assert main(["export", "--graph", str(graph_dir)]) == 2
    assert "export needs --output" in capsys.readouterr().err
