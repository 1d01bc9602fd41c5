"""Benchmark: graph analytics on the block engine (PageRank, connected components, label propagation).

    python bench/analytics.py --vertices 1000000 --edges 20000000 --jar ../shared/jars/graphframes-*.jar
    python bench/analytics.py --edges 1000000 --plans auto

Generates a seeded power-law digraph (Chung-Lu weights, exponent 2.2, ``--edges`` edges over
``--edges / 10`` vertices by default; cached as Parquet under .bench_cache/), then times, each
end to end (result materialised), for every block-engine plan in ``--plans`` and, with ``--jar``,
for the real GraphFrames in the same session on the same cached DataFrames:

* ``pageRank(maxIter=20)``, checked against a scipy power iteration of the same (GraphX) recurrence;
* ``connectedComponents()``, checked against ``scipy.sparse.csgraph.connected_components``;
* ``labelPropagation(maxIter=5)``.

Prints a Markdown table: seconds, seconds per round (block-engine rounds counted from its log) and
the speed-up against GraphFrames. Runs local[2] unless ``--master`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components as sp_components

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def power_law_edges(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Chung-Lu style endpoints: P(vertex i) ~ (i+1)^(-1/(2.2-1)), hubs scattered by a permutation."""
    rng = np.random.default_rng(seed)
    weights = np.arange(1, n + 1, dtype=np.float64) ** (-1.0 / (2.2 - 1.0))
    p = weights / weights.sum()
    perm = rng.permutation(n)
    src = perm[rng.choice(n, size=m, p=p)].astype(np.int64)
    dst = perm[rng.choice(n, size=m, p=p)].astype(np.int64)
    return src, dst


def cached_graph(n: int, m: int, seed: int, cache: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Parquet edges (src, dst long) under ``cache``; generated once per (n, m, seed)."""
    path = cache / f"analytics-n{n}-m{m}-s{seed}" / "edges.parquet"
    if path.exists():
        t = pq.read_table(path)
        return path, t["src"].to_numpy(), t["dst"].to_numpy()
    src, dst = power_law_edges(n, m, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"src": src, "dst": dst}), path)
    return path, src, dst


def scipy_pagerank(n: int, src: np.ndarray, dst: np.ndarray, reset: float, iters: int) -> np.ndarray:
    """GraphX's fixed-iteration PageRank (leaky, start 1.0), rescaled to sum n like GraphFrames."""
    out = np.bincount(src, minlength=n).astype(np.float64)
    a = sp.csr_matrix((1.0 / out[src], (dst, src)), shape=(n, n))
    pr = np.ones(n)
    for _ in range(iters):
        pr = reset + (1 - reset) * (a @ pr)
    return pr * n / pr.sum()


class RoundCounter(logging.Handler):
    """Counts the block engine's round log lines ('<algo>[<plan>] round N: ...') of the current run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rounds = 0

    def emit(self, record: logging.LogRecord) -> None:
        if re.search(r"\] round (\d+):", record.getMessage()):
            self.rounds += 1

    def reset(self) -> None:
        self.rounds = 0


def _timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--vertices", type=int, default=0, help="default: edges / 10")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--plans", default="auto,partitioned", help="block-engine plans to time (comma-separated)")
    ap.add_argument("--jar", default="", help="the real GraphFrames jar: adds its column (same graph, same session)")
    ap.add_argument("--cache", default=str(ROOT / ".bench_cache"))
    ap.add_argument("--verbose", action="store_true", help="log every round to stderr")
    args = ap.parse_args(argv)
    n = args.vertices or max(args.edges // 10, 2)

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    counter = RoundCounter()
    for name in ("lepton_spark.graph.programs", "lepton_spark.graph.partitioned"):
        lg = logging.getLogger(name)
        lg.addHandler(counter)
        lg.setLevel(logging.INFO)

    from pyspark.sql import functions as F

    from lepton_spark.analytics.communities import label_propagation
    from lepton_spark.analytics.components import connected_components
    from lepton_spark.analytics.pagerank import page_rank
    from lepton_spark.config import SparkConfig
    from lepton_spark.graph.frame import GraphFrame
    from lepton_spark.session import get_spark

    t0 = time.perf_counter()
    path, src, dst = cached_graph(n, args.edges, args.seed, Path(args.cache))
    gen_s = time.perf_counter() - t0
    extra = {"spark.jars": str(Path(args.jar).resolve())} if args.jar else {}
    spark = get_spark(SparkConfig(master=args.master, app_name="bench-analytics", shuffle_partitions=args.partitions,
                                  driver_memory=args.driver_memory, extra=extra))
    edges = spark.read.parquet(str(path)).cache()
    vertices = spark.range(n).select(F.col("id")).cache()
    edges.count()
    vertices.count()
    g = GraphFrame(vertices, edges, engine="builtin")
    ref_pr = scipy_pagerank(n, src, dst, 0.15, 20)
    adj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    t = time.perf_counter()
    n_ref, _ = sp_components(adj, directed=True, connection="weak")
    cc_ref_s = time.perf_counter() - t
    del adj
    # column -> {algorithm: (seconds, rounds, check)}
    table: dict[str, dict[str, tuple[float, int, str]]] = {}

    for plan in [p for p in args.plans.split(",") if p]:
        col = table.setdefault(f"ours ({plan})", {})
        counter.reset()
        pr, secs = _timed(lambda plan=plan: page_rank(g, maxIter=20, plan=plan).vertices.select("id", "pagerank")
                          .toPandas())
        ours = pr.sort_values("id")["pagerank"].to_numpy()
        col["pageRank(maxIter=20)"] = (secs, counter.rounds, f"max abs diff vs scipy {np.abs(ours - ref_pr).max():.1e}")
        counter.reset()
        cc, secs = _timed(lambda plan=plan: connected_components(g, plan=plan).select("component").distinct().count())
        col["connectedComponents()"] = (secs, counter.rounds,
                                        f"{cc} components ({'ok' if cc == n_ref else 'MISMATCH vs scipy'})")
        counter.reset()
        lp, secs = _timed(lambda plan=plan: label_propagation(g, 5, plan=plan).select("label").distinct().count())
        col["labelPropagation(maxIter=5)"] = (secs, counter.rounds, f"{lp} communities")

    if args.jar:
        from graphframes import GraphFrame as RealGraphFrame

        real = RealGraphFrame(vertices, edges)
        col = table.setdefault("GraphFrames (jar)", {})
        pr, secs = _timed(lambda: real.pageRank(resetProbability=0.15, maxIter=20).vertices.select("id", "pagerank")
                          .toPandas())
        theirs = pr.sort_values("id")["pagerank"].to_numpy()
        col["pageRank(maxIter=20)"] = (secs, 20, f"max abs diff vs scipy {np.abs(theirs - ref_pr).max():.1e}")
        cc, secs = _timed(lambda: real.connectedComponents().select("component").distinct().count())
        col["connectedComponents()"] = (secs, 0, f"{cc} components ({'ok' if cc == n_ref else 'MISMATCH vs scipy'})")
        lp, secs = _timed(lambda: real.labelPropagation(maxIter=5).select("label").distinct().count())
        col["labelPropagation(maxIter=5)"] = (secs, 5, f"{lp} communities")

    print(f"\nGraph: {n:,} vertices, {args.edges:,} edges (power law, seed {args.seed}; generated/loaded in "
          f"{gen_s:.1f}s), Spark {spark.version}, master {args.master}, {args.partitions} shuffle partitions; "
          f"scipy components {cc_ref_s:.2f}s\n")
    cols = list(table)
    peer = "GraphFrames (jar)" if "GraphFrames (jar)" in table else None
    print("| algorithm | " + " | ".join(f"{c} s | {c} s/round" for c in cols)
          + (" | " + " | ".join(f"speed-up {c} vs GraphFrames" for c in cols if c != peer) if peer else "") + " |")
    print("|---|" + "---:|---:|" * len(cols) + ("---:|" * (len(cols) - 1) if peer else ""))
    for algo in table[cols[0]]:
        cells = []
        for c in cols:
            secs, rounds, _ = table[c][algo]
            cells.append(f"{secs:.1f} | {secs / rounds:.2f}" if rounds else f"{secs:.1f} | -")
        if peer:
            cells += [f"{table[peer][algo][0] / table[c][algo][0]:.1f}x" for c in cols if c != peer]
        print(f"| {algo} | " + " | ".join(cells) + " |")
    print()
    for c in cols:
        for algo, (_, _, check) in table[c].items():
            print(f"- {c}, {algo}: {check}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
