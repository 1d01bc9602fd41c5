"""GraphFrame API cases run on both backends: the builtin engine and the real GraphFrames (JVM jar).

``tests/test_graphframes_backend.py`` computes :func:`compute` with ``engine="builtin"`` in the test
session and runs this module as a script in ONE subprocess whose SparkSession has the GraphFrames jar
on its classpath (``spark.jars``); the script prints one JSON line with the results for
``engine="graphframes"``, for the default engine (``auto``, which must resolve to GraphFrames there)
and for the real ``graphframes.GraphFrame``'s own degrees and ``aggregateMessages`` (our
``GraphFrame`` never delegates those). The main test session must never get the jar: with it, ``auto``
would switch every other engine test to GraphFrames.

Every result is normalised to sorted JSON-able lists so both sides compare after a JSON round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

# name -> (id type, vertices (id, name), edges (src, dst)); every graph has an isolated vertex, a
# self-loop, a multi-edge and a vertex without out-edges (dangling for PageRank)
GRAPHS: dict[str, tuple[str, list[tuple[Any, str]], list[tuple[Any, Any]]]] = {
    # a triangle with a chord, a double edge into it, a self-loop with one in-neighbour, a 2-cycle
    # with a double edge, and 9 isolated; LPA ties occur (long ids: both break them to the smallest)
    "long": (
        "long",
        [(i, f"v{i}") for i in range(1, 10)],
        [(1, 2), (2, 3), (3, 1), (1, 3), (4, 1), (4, 1), (5, 5), (6, 5), (7, 8), (8, 7), (8, 7)],
    ),
    # string ids: a star around "h" (edges both ways round), a triple edge p -> q with a self-loop on
    # q, and the isolated "z". Every LPA tie here leaves the partition unchanged whichever label wins
    # (GraphFrames breaks ties by its internal long index, the builtin engine by the id itself).
    "string": (
        "string",
        [(x, f"n-{x}") for x in ("h", "l1", "l2", "l3", "p", "q", "z")],
        [("h", "l1"), ("l2", "h"), ("h", "l3"), ("p", "q"), ("p", "q"), ("p", "q"), ("q", "q")],
    ),
}
SOURCES = {"long": 4, "string": "h"}  # personalised PageRank sources
LANDMARKS = {"long": [1, 5], "string": ["h", "q"]}
RESET, MAX_ITER, TOL, LPA_ITER = 0.2, 5, 1e-6, 3
AUTO_CASES = {"string": ["pagerank", "components", "communities"]}  # run again with the default engine


def graph_frames(spark: Any, name: str) -> tuple[Any, Any]:
    """The vertex and edge DataFrames of ``GRAPHS[name]`` (vertices carry a ``name`` attribute)."""
    id_type, vertices, edges = GRAPHS[name]
    v = spark.createDataFrame(vertices, f"id {id_type}, name string")
    e = spark.createDataFrame(edges, f"src {id_type}, dst {id_type}")
    return v, e


def _sorted_rows(df: Any, *cols: str) -> list[list[Any]]:
    return sorted([r[c] for c in cols] for r in df.collect())


def _distances(df: Any) -> list[list[Any]]:
    return sorted([r["id"], sorted([k, v] for k, v in (r["distances"] or {}).items())] for r in df.collect())


def _dtype(df: Any, col: str) -> str:
    return df.schema[col].dataType.simpleString()


def _guard(fn: Callable[[], Any]) -> Any:
    """Run one case; an exception becomes ``{"error": ...}`` so one failing case names itself."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ''}",
                "traceback": traceback.format_exc()[-2000:]}


def compute(spark: Any, engine: str | None, only: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """Every algorithm of the GraphFrame API on every graph of :data:`GRAPHS` with ``engine``.

    ``engine=None`` leaves the choice to the engine module (``$LEPTON_GRAPH_ENGINE``, else ``auto``).
    ``only`` (graph -> case names) computes just those.
    """
    from lepton_spark.graph.frame import GraphFrame

    out: dict[str, dict[str, Any]] = {}
    for name in GRAPHS if only is None else only:
        v, e = graph_frames(spark, name)
        g = GraphFrame(v, e, engine=engine)

        def pagerank(g: Any = g, **kw: Any) -> dict[str, Any]:
            res = g.pageRank(resetProbability=RESET, **kw)
            return {"columns": res.vertices.columns, "edge_columns": res.edges.columns,
                    "ranks": _sorted_rows(res.vertices, "id", "pagerank"),
                    "weights": _sorted_rows(res.edges, "src", "dst", "weight")}

        def components(g: Any = g, **kw: Any) -> dict[str, Any]:
            res = g.connectedComponents(**kw)
            return {"columns": res.columns, "dtype": _dtype(res, "component"),
                    "rows": _sorted_rows(res, "id", "component")}

        def communities(g: Any = g, **kw: Any) -> dict[str, Any]:
            res = g.labelPropagation(maxIter=LPA_ITER, **kw)
            return {"columns": res.columns, "dtype": _dtype(res, "label"), "rows": _sorted_rows(res, "id", "label")}

        def paths(g: Any = g, directed: bool = True, name: str = name) -> dict[str, Any]:
            res = g.shortestPaths(landmarks=LANDMARKS[name], is_directed=directed)
            return {"columns": res.columns, "rows": _distances(res)}

        cases: dict[str, Callable[[], Any]] = {
            "pagerank": lambda: pagerank(maxIter=MAX_ITER),
            "pagerank_personalised": lambda name=name: pagerank(maxIter=MAX_ITER, sourceId=SOURCES[name]),
            "pagerank_tol": lambda: pagerank(tol=TOL),
            "components": components,
            "components_graphx": lambda: components(algorithm="graphx"),
            "components_labels": lambda: components(useLabelsAsComponents=True),
            "communities": communities,
            "paths": paths,
            "paths_undirected": lambda: paths(directed=False),
        }
        out[name] = {case: _guard(fn) for case, fn in cases.items() if only is None or case in only[name]}
    return out


def core_ops(spark: Any, graph_frame_cls: Any, am: Any) -> dict[str, dict[str, Any]]:
    """Degrees and ``aggregateMessages`` of ``graph_frame_cls`` (ours or graphframes') on every graph."""
    from pyspark.sql import functions as F

    out: dict[str, dict[str, Any]] = {}
    for name in GRAPHS:
        v, e = graph_frames(spark, name)
        g = graph_frame_cls(v, e)

        def messages(g: Any = g) -> list[list[Any]]:
            res = g.aggregateMessages(
                [F.count(am.msg).alias("n"), F.sort_array(F.collect_list(am.msg)).alias("names")],
                sendToSrc=[am.dst["name"]], sendToDst=[am.src["name"]])
            return _sorted_rows(res, "id", "n", "names")

        out[name] = {
            "degrees": _guard(lambda g=g: _sorted_rows(g.degrees, "id", "degree")),
            "inDegrees": _guard(lambda g=g: _sorted_rows(g.inDegrees, "id", "inDegree")),
            "outDegrees": _guard(lambda g=g: _sorted_rows(g.outDegrees, "id", "outDegree")),
            "aggregateMessages": _guard(messages),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Script entry: one SparkSession with ``--jar`` on its classpath; prints one JSON line last."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jar", required=True)
    args = ap.parse_args(argv)
    os.environ.pop("LEPTON_GRAPH_ENGINE", None)  # "auto" must mean auto here

    from lepton_spark.config import SparkConfig
    from lepton_spark.graph import engine as eng
    from lepton_spark.session import get_spark

    with tempfile.TemporaryDirectory(prefix="lepton-gf-test-") as tmp:
        spark = get_spark(SparkConfig(
            master="local[2]", app_name="lepton-graphframes-backend-test", driver_memory="1g", shuffle_partitions=4,
            checkpoint_dir=os.path.join(tmp, "checkpoints"),
            extra={"spark.jars": args.jar, "spark.sql.adaptive.enabled": "false", "spark.default.parallelism": "4",
                   "spark.sql.warehouse.dir": os.path.join(tmp, "warehouse")}))
        try:
            from graphframes import GraphFrame as RealGraphFrame
            from graphframes.lib import AggregateMessages as RealAM

            usable, why = eng.graphframes_status(spark)
            result = {
                "status": [usable, why],
                "auto_engine": eng.resolve_engine(spark, None),
                "graphframes": compute(spark, "graphframes"),
                # enough to show that auto delegated (GraphFrames' LPA labels string ids with its
                # internal longs); all cases again took about a minute more
                "auto": compute(spark, None, AUTO_CASES),
                "real_core": core_ops(spark, RealGraphFrame, RealAM),
            }
        finally:
            spark.stop()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
