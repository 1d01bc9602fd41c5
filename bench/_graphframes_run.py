"""The real GraphFrames' analytics on a built graph, timed (a subprocess of bench/nightly_scale.py).

    python bench/_graphframes_run.py --graph RUN/runs/DATE/graph/graph --jar graphframes-....jar --output DIR

Starts its own SparkSession with ``spark.jars=<jar>``, imports the ``graphframes`` Python package
(graphframes-py) and runs, each materialised by writing its result to Parquet under ``--output``:
``pageRank(resetProbability=0.15, maxIter=20)``, ``connectedComponents()`` (GraphFrames' default
algorithm, reliable checkpoints into ``--checkpoint``) and ``labelPropagation(maxIter=5)`` (GraphX
algorithm). Logs ``stage <name>: start|done`` to stderr and prints one JSON line with the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", required=True, help="built graph directory (vertices/ and edges/)")
    ap.add_argument("--jar", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--driver-memory", default="8g")
    ap.add_argument("--shuffle-partitions", type=int, default=8)
    ap.add_argument("--pagerank-iters", type=int, default=20)
    ap.add_argument("--lpa-iters", type=int, default=5)
    args = ap.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(args.master).appName("graphframes-bench")
             .config("spark.jars", args.jar)
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.sql.shuffle.partitions", str(args.shuffle_partitions))
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    spark.sparkContext.setCheckpointDir(args.checkpoint)
    from graphframes import GraphFrame

    startup = time.perf_counter() - t0
    say("spark session ready (graphframes)")
    g = GraphFrame(spark.read.parquet(os.path.join(args.graph, "vertices")).select("id"),
                   spark.read.parquet(os.path.join(args.graph, "edges")).select("src", "dst"))
    secs: dict[str, float] = {}
    runs = {
        "pagerank": lambda: g.pageRank(resetProbability=0.15, maxIter=args.pagerank_iters).vertices
        .select("id", "pagerank"),
        "components": lambda: g.connectedComponents().select("id", "component"),
        "communities": lambda: g.labelPropagation(maxIter=args.lpa_iters).select("id", "label"),
    }
    for name, make in runs.items():
        say(f"stage {name}: start")
        t1 = time.perf_counter()
        make().write.mode("overwrite").parquet(os.path.join(args.output, name))
        secs[name] = round(time.perf_counter() - t1, 3)
        say(f"stage {name}: done in {secs[name]:.2f}s")
    spark.stop()
    print(json.dumps({"startup_seconds": round(startup, 3), "seconds": secs,
                      "total_seconds": round(time.perf_counter() - t0, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
