"""Benchmark: graph analytics on the builtin engine (PageRank, connected components, label propagation).

    python bench/analytics.py --edges 1000000
    python bench/analytics.py --edges 10000000 --master 'local[*]' --partitions 16

Generates a seeded power-law digraph (Chung-Lu weights, exponent 2.2, ``--edges`` edges over
``--edges / 10`` vertices by default; cached as Parquet under .bench_cache/), then times, each
end to end (result materialised):

* ``pageRank(maxIter=20)``, checked against a scipy power iteration of the same (GraphX) recurrence;
* ``connectedComponents()``, checked against ``scipy.sparse.csgraph.connected_components``;
* ``labelPropagation(maxIter=5)``.

The algorithms run with their GraphFrames defaults (reliable checkpoints every 2 iterations into the
session's checkpoint directory). Prints a Markdown table (seconds, Pregel iterations, check) and the
per-iteration mean. Runs local[2] unless ``--master`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

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


class IterationCounter(logging.Handler):
    """Remembers the last 'pregel: finished after N applied iteration(s)' and per-iteration seconds."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.iterations = 0
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if m := re.search(r"finished after (\d+) applied", msg):
            self.iterations = int(m.group(1))
        elif msg.startswith("pregel iteration") and (m := re.search(r"([\d.]+)s$", msg)):
            self.seconds.append(float(m.group(1)))

    def reset(self) -> None:
        self.iterations, self.seconds = 0, []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--vertices", type=int, default=0, help="default: edges / 10")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--cache", default=str(ROOT / ".bench_cache"))
    ap.add_argument("--verbose", action="store_true", help="log every Pregel iteration to stderr")
    args = ap.parse_args(argv)
    n = args.vertices or max(args.edges // 10, 2)

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    counter = IterationCounter()
    pregel_log = logging.getLogger("lepton_spark.graph.pregel")
    pregel_log.addHandler(counter)
    pregel_log.setLevel(logging.INFO)

    from pyspark.sql import functions as F

    from lepton_spark.config import SparkConfig
    from lepton_spark.graph.frame import GraphFrame
    from lepton_spark.session import get_spark

    t0 = time.perf_counter()
    path, src, dst = cached_graph(n, args.edges, args.seed, Path(args.cache))
    gen_s = time.perf_counter() - t0
    spark = get_spark(SparkConfig(master=args.master, app_name="bench-analytics", shuffle_partitions=args.partitions,
                                  driver_memory=args.driver_memory))
    edges = spark.read.parquet(str(path))
    vertices = spark.range(n).select(F.col("id"))
    g = GraphFrame(vertices, edges, engine="builtin")
    results: list[tuple[str, float, int, float, str]] = []

    counter.reset()
    t = time.perf_counter()
    pr = g.pageRank(maxIter=20)
    ours = pr.vertices.select("id", "pagerank").toPandas().sort_values("id")["pagerank"].to_numpy()
    pr_s = time.perf_counter() - t
    t = time.perf_counter()
    ref = scipy_pagerank(n, src, dst, 0.15, 20)
    ref_s = time.perf_counter() - t
    results.append(("pageRank(maxIter=20)", pr_s, counter.iterations, float(np.mean(counter.seconds or [0])),
                    f"max abs diff vs scipy {np.abs(ours - ref).max():.1e} (scipy {ref_s:.2f}s)"))
    pr.vertices.unpersist()

    counter.reset()
    t = time.perf_counter()
    cc = g.connectedComponents()
    comps = cc.select("component").distinct().count()
    cc_s = time.perf_counter() - t
    adj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    t = time.perf_counter()
    n_ref, _ = sp_components(adj, directed=True, connection="weak")
    ref_s = time.perf_counter() - t
    results.append(("connectedComponents()", cc_s, counter.iterations, float(np.mean(counter.seconds or [0])),
                    f"{comps} components, scipy {n_ref} ({'ok' if comps == n_ref else 'MISMATCH'}, {ref_s:.2f}s)"))
    cc.unpersist()

    counter.reset()
    t = time.perf_counter()
    lp = g.labelPropagation(maxIter=5)
    labels = lp.select("label").distinct().count()
    lp_s = time.perf_counter() - t
    results.append(("labelPropagation(maxIter=5)", lp_s, counter.iterations, float(np.mean(counter.seconds or [0])),
                    f"{labels} communities"))
    lp.unpersist()

    print(f"\nGraph: {n:,} vertices, {args.edges:,} edges (power law, seed {args.seed}; generated/loaded in "
          f"{gen_s:.1f}s), Spark {spark.version}, master {args.master}, {args.partitions} shuffle partitions\n")
    print("| algorithm | seconds | iterations | s / iteration | check |")
    print("|---|---:|---:|---:|---|")
    for name, secs, iters, per, check in results:
        print(f"| {name} | {secs:.1f} | {iters} | {per:.2f} | {check} |")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
