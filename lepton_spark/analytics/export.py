"""``lepton-spark export``: a size-capped sample of the graph with PageRank and community attributes,
as GraphML or GEXF for Gephi.

The sample keeps the ``max_vertices`` vertices with the highest PageRank (the "key nodes") and the
edges among them, capped at ``max_edges`` (heaviest first); only that sample is collected to the
driver. Attributes: ``pagerank`` (GraphFrames scale, sums to N over the whole graph), ``community``
(label propagation), ``component`` and, when the graph has them, ``class`` (the vertex label) and ``split``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lepton_spark import storage
from lepton_spark.errors import UsageError

log = logging.getLogger(__name__)

FORMATS = ("graphml", "gexf")


def sample_for_export(vertices: DataFrame, edges: DataFrame, *, max_vertices: int = 2000, max_edges: int = 20000,
                      pagerank_iters: int = 20, lpa_iters: int = 5,
                      local_max_edges: int = 2_000_000) -> tuple[list[dict], list[dict]]:
    """Compute the attributes on the whole graph, then collect the capped sample."""
    from lepton_spark.analytics.batch import vertex_analytics

    tables = vertex_analytics(vertices, edges, pagerank_iters=pagerank_iters, lpa_iters=lpa_iters,
                              local_max_edges=local_max_edges)
    pr = tables["pagerank"]
    lpa = tables["communities"].select("id", F.col("label").alias("community"))
    cc = tables["components"]
    # the class label is exported as "class": GEXF readers take a node's "label" as its display name
    extra = [F.col(c).alias(a) for c, a in (("label", "class"), ("split", "split")) if c in vertices.columns]
    attrs = pr.join(lpa, "id").join(cc, "id").join(vertices.select("id", *extra), "id")
    top = attrs.orderBy(F.col("pagerank").desc(), F.col("id")).limit(max_vertices).localCheckpoint(eager=True)
    keep = top.select(F.col("id").alias("_k"))
    w = F.col("weight") if "weight" in edges.columns else F.lit(1.0)
    sub = edges.select("src", "dst", w.cast("double").alias("weight")) \
        .join(keep, F.col("src") == F.col("_k"), "left_semi") \
        .join(keep.select(F.col("_k").alias("_d")), F.col("dst") == F.col("_d"), "left_semi") \
        .orderBy(F.col("weight").desc(), "src", "dst").limit(max_edges)
    nodes = [r.asDict() for r in top.orderBy("id").collect()]
    links = [r.asDict() for r in sub.collect()]
    return nodes, links


def _fmt(value: Any) -> str:
    return escape(repr(value) if isinstance(value, float) else str(value))


def write_graphml(path: Path, nodes: list[dict], links: list[dict]) -> None:
    """The sample as GraphML at ``path`` (written atomically)."""
    keys = [k for k in nodes[0] if k != "id"] if nodes else []
    types = {k: ("double" if isinstance(nodes[0][k], float) else "long" if isinstance(nodes[0][k], int)
                 else "string") for k in keys}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<graphml xmlns="http://graphml.graphdrawing.org/xmlns">']
    out += [f'  <key id={quoteattr(k)} for="node" attr.name={quoteattr(k)} attr.type="{types[k]}"/>' for k in keys]
    out.append('  <key id="weight" for="edge" attr.name="weight" attr.type="double"/>')
    out.append('  <graph id="lepton" edgedefault="directed">')
    for n in nodes:
        data = "".join(f'<data key={quoteattr(k)}>{_fmt(n[k])}</data>' for k in keys if n[k] is not None)
        out.append(f'    <node id="{n["id"]}">{data}</node>')
    for i, e in enumerate(links):
        out.append(f'    <edge id="e{i}" source="{e["src"]}" target="{e["dst"]}">'
                   f'<data key="weight">{e["weight"]!r}</data></edge>')
    out += ["  </graph>", "</graphml>"]
    storage.write_text(path, "\n".join(out) + "\n")


def write_gexf(path: Path, nodes: list[dict], links: list[dict]) -> None:
    """The sample as GEXF 1.3 at ``path`` (written atomically)."""
    keys = [k for k in nodes[0] if k != "id"] if nodes else []
    types = {k: ("double" if isinstance(nodes[0][k], float) else "long" if isinstance(nodes[0][k], int)
                 else "string") for k in keys}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<gexf xmlns="http://gexf.net/1.3" version="1.3">',
           '  <graph defaultedgetype="directed" mode="static">',
           '    <attributes class="node">']
    out += [f'      <attribute id="{i}" title={quoteattr(k)} type="{types[k]}"/>' for i, k in enumerate(keys)]
    out += ["    </attributes>", "    <nodes>"]
    for n in nodes:
        vals = "".join(f'<attvalue for="{i}" value={quoteattr(_fmt(n[k]))}/>' for i, k in enumerate(keys)
                       if n[k] is not None)
        out.append(f'      <node id="{n["id"]}" label="{n["id"]}"><attvalues>{vals}</attvalues></node>')
    out += ["    </nodes>", "    <edges>"]
    for i, e in enumerate(links):
        out.append(f'      <edge id="{i}" source="{e["src"]}" target="{e["dst"]}" weight="{e["weight"]!r}"/>')
    out += ["    </edges>", "  </graph>", "</gexf>"]
    storage.write_text(path, "\n".join(out) + "\n")


def export_graph(vertices: DataFrame, edges: DataFrame, output: str, fmt: str = "graphml", *,
                 max_vertices: int = 2000, max_edges: int = 20000, pagerank_iters: int = 20, lpa_iters: int = 5,
                 local_max_edges: int = 2_000_000) -> dict[str, Any]:
    """Write the sample to ``output`` (a local file, written atomically: never half-written)."""
    if fmt not in FORMATS:
        raise UsageError(f"export: format must be graphml or gexf, got {fmt!r}")
    if max_vertices <= 0 or max_edges < 0:
        raise UsageError("export: max_vertices must be > 0 and max_edges >= 0")
    nodes, links = sample_for_export(vertices, edges, max_vertices=max_vertices, max_edges=max_edges,
                                     pagerank_iters=pagerank_iters, lpa_iters=lpa_iters,
                                     local_max_edges=local_max_edges)
    path = Path(output)
    (write_graphml if fmt == "graphml" else write_gexf)(path, nodes, links)
    log.info("exported %d vertices, %d edges to %s (%s)", len(nodes), len(links), path, fmt)
    return {"vertices": len(nodes), "edges": len(links), "output": str(path), "format": fmt}
