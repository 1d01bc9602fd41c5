"""Benchmark: vector propagation vs a GraphFrames-equivalent plan vs scipy, in one run.

    python bench/propagate.py --nodes 100000 --edges 1000000 --dim 64 --rounds 4
    python bench/propagate.py --nodes 1000000 --edges 10000000 --dim 64 --rounds 4 --skip-graphframes \
        --jar ../shared/jars/graphframes-spark4.3_2.13-e49a655.jar

Generates a seeded power-law graph (Chung-Lu weights, exponent 2.2; cached under .bench_cache/),
then measures seconds per round (median after a warm-up round) for:

* ``scipy``          CSR x dense in this process (the baseline the ratios divide by);
* ``ours (auto)``    ``lepton_spark.graph.propagate`` with the automatic plan choice;
* ``ours (partitioned)`` the same with the partitioned plan forced (features never in one process);
* ``graphframes-eq`` what GraphFrames' aggregateMessages builds: edges joined to full vertex rows on
  src and on dst, messages ``weight * x_src``, ``groupBy(dst)`` with ``Summarizer.sum`` over ML vectors
  (as GraphFrames' SamplingConvolution aggregates vectors), joined back to the vertices; lineage cut
  each round like ours;
* ``GraphFrames (jar)`` with ``--jar PATH``: the real GraphFrames' ``aggregateMessages`` summing the
  weighted vectors with ``vector_sum``, in the same session (the speed-up column then divides by it).

The "preparation s" column is what our call spends outside its rounds (packing the edge blocks,
collecting the features, building the result). Also: peak RSS of the Spark JVM + Python workers (sampled from /proc every 0.2 s) and of the driver
process, and the max relative error against scipy after all rounds. Prints a Markdown table.
``--skip-graphframes`` skips the slowest baseline. Runs local[2] unless ``--master`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def power_law_graph(n: int, m: int, seed: int, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = cache / f"powerlaw-n{n}-m{m}-s{seed}.npz"
    if path.exists():
        z = np.load(path)
        return z["src"], z["dst"], z["w"]
    rng = np.random.default_rng(seed)
    weights = (np.arange(1, n + 1, dtype=np.float64)) ** (-1.0 / (2.2 - 1.0))
    p = weights / weights.sum()
    perm = rng.permutation(n)  # hubs are not the smallest ids
    src = perm[rng.choice(n, size=m, p=p)].astype(np.int64)
    dst = perm[rng.choice(n, size=m, p=p)].astype(np.int64)
    w = rng.uniform(0.1, 1.0, m).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, src=src, dst=dst, w=w)
    return src, dst, w


class RssSampler:
    """Peak RSS (bytes) of the Spark JVM + pyspark workers, and of this driver, sampled from /proc."""

    def __init__(self) -> None:
        self.peak_spark = 0
        self.peak_driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: str) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"org.apache.spark.deploy.SparkSubmit" in cmd or b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
                    total += self._rss(pid)
            self.peak_spark = max(self.peak_spark, total)
            self.peak_driver = max(self.peak_driver, self._rss(me))
            time.sleep(0.2)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def graphframes_equivalent(spark, vertices, edges, rounds: int) -> tuple[list[float], object]:
    """GraphFrames' aggregateMessages plan with vector messages summed by Summarizer."""
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.ml.stat import Summarizer
    from pyspark.sql import functions as F

    v = vertices.select("id", array_to_vector("features").alias("features")).localCheckpoint(eager=True)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        s = v.select(F.struct("id", "features").alias("src"))
        d = v.select(F.struct("id", "features").alias("dst"))
        triplets = edges.select(F.struct("src", "dst", "weight").alias("edge")) \
            .join(s, F.col("edge.src") == F.col("src.id")).join(d, F.col("edge.dst") == F.col("dst.id"))
        msgs = triplets.select(F.col("dst.id").alias("id"), F.col("src.features").alias("MSG"),
                               F.col("edge.weight").cast("double").alias("w"))
        agg = msgs.groupBy("id").agg(Summarizer.metrics("sum").summary(F.col("MSG"), F.col("w")).alias("s"))
        agg = agg.select("id", F.col("s.sum").alias("features"))
        nxt = v.select("id").join(agg, "id", "left")  # GraphFrames joins the result back to the vertices
        zero = array_to_vector(F.array_repeat(F.lit(0.0), int(vertices.select(F.size("features")).first()[0])))
        v = nxt.select("id", F.coalesce("features", zero).alias("features")).localCheckpoint(eager=True)
        times.append(time.perf_counter() - t0)
    return times, v.select("id", vector_to_array("features", "float32").alias("features"))


def graphframes_real(spark, vertices, edges, rounds: int) -> tuple[list[float], object]:
    """The real GraphFrames (jar on the classpath): aggregateMessages summing the weighted 64-dim feature
    vectors with Spark's ``vector_sum``, written as a GraphFrames user would; zero vectors for vertices
    that receive nothing (GraphFrames leaves them out)."""
    from graphframes import GraphFrame as RealGraphFrame
    from graphframes.lib import AggregateMessages as GFAM
    from pyspark.sql import functions as F

    dim = int(vertices.select(F.size("features")).first()[0])
    zero = F.array_repeat(F.lit(0.0).cast("float"), dim)
    v = vertices.select("id", "features").localCheckpoint(eager=True)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        g = RealGraphFrame(v, edges)
        msg = F.transform(GFAM.src["features"], lambda t: t * GFAM.edge["weight"].cast("float"))
        agg = g.aggregateMessages(F.vector_sum(GFAM.msg).alias("features"), sendToDst=msg)
        v = v.select("id").join(agg, "id", "left").select(
            "id", F.coalesce(F.col("features").cast("array<float>"), zero).alias("features")).localCheckpoint(eager=True)
        times.append(time.perf_counter() - t0)
    return times, v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="10g")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--skip-graphframes", action="store_true", help="skip the GraphFrames-equivalent DataFrame plan")
    ap.add_argument("--jar", default="", help="the real GraphFrames jar: adds its aggregateMessages column")
    ap.add_argument("--cache", default=str(ROOT / ".bench_cache"))
    args = ap.parse_args(argv)

    import logging

    import pyarrow as pa

    logging.basicConfig(level=logging.WARNING)
    from lepton_spark.config import GraphConfig, SparkConfig
    from lepton_spark.graph import GraphFrame, propagate
    from lepton_spark.graph.arrow import matrix_to_list
    from lepton_spark.session import get_spark

    n, m, d, rounds = args.nodes, args.edges, args.dim, args.rounds
    src, dst, w = power_law_graph(n, m, args.seed, Path(args.cache))
    x = np.random.default_rng(args.seed + 1).normal(size=(n, d)).astype(np.float32)

    # scipy baseline (one process)
    a = sp.csr_matrix((w, (dst, src)), shape=(n, n))  # row = receiver
    scipy_times, ref = [], x.astype(np.float32)
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        ref = a @ ref
        scipy_times.append(time.perf_counter() - t0)
    ref64 = x.astype(np.float64)
    for _ in range(rounds + 1):
        ref64 = a.astype(np.float64) @ ref64

    extra = {"spark.jars": str(Path(args.jar).resolve())} if args.jar else {}
    spark = get_spark(SparkConfig(master=args.master, driver_memory=args.driver_memory,
                                  shuffle_partitions=args.partitions, extra=extra))
    vt = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "features": matrix_to_list(x)})
    cache = Path(args.cache)
    vpath, epath = cache / f"v-n{n}-d{d}-s{args.seed}.parquet", cache / f"e-n{n}-m{m}-s{args.seed}.parquet"
    import pyarrow.parquet as pq

    if not vpath.exists():
        pq.write_table(vt, vpath)
    if not epath.exists():
        pq.write_table(pa.table({"src": src, "dst": dst, "weight": w}), epath)
    vertices = spark.read.parquet(str(vpath)).select("id", "features")
    edges = spark.read.parquet(str(epath))

    results = []

    prep: dict[str, float] = {}

    def run_ours(label: str, plan: str) -> None:
        times: list[float] = []
        with RssSampler() as rss:
            cfg = GraphConfig(plan=plan)
            t_call = time.perf_counter()
            out = propagate(GraphFrame(vertices, edges), rounds=rounds + 1, config=cfg,
                            on_round=lambda k, info: times.append(info["seconds"]))
            prep[label] = time.perf_counter() - t_call - sum(times)  # preparation + the final result
            got = {r[0]: r[1] for r in out.toLocalIterator()} if n <= 200_000 else None
            if got is None:
                table = out.toArrow() if hasattr(out, "toArrow") else None
                ids = table.column("id").to_numpy()
                from lepton_spark.graph.arrow import list_to_matrix

                mat = np.zeros((n, d), dtype=np.float64)
                mat[ids] = list_to_matrix(table.column("features"), d)
            else:
                mat = np.array([got[i] for i in range(n)], dtype=np.float64)
        err = float(np.abs(mat - ref64).max() / np.abs(ref64).max())
        results.append((label, statistics.median(times[1:]), rss.peak_spark, rss.peak_driver, err))

    run_ours("ours (auto)", "auto")
    run_ours("ours (partitioned)", "partitioned")
    if not args.skip_graphframes:
        with RssSampler() as rss:
            gf_times, gf_out = graphframes_equivalent(spark, vertices, edges, rounds + 1)
            table = gf_out.toArrow()
            from lepton_spark.graph.arrow import list_to_matrix

            mat = np.zeros((n, d))
            mat[table.column("id").to_numpy()] = list_to_matrix(table.column("features"), d)
        err = float(np.abs(mat - ref64).max() / np.abs(ref64).max())
        results.append(("graphframes-eq", statistics.median(gf_times[1:]), rss.peak_spark, rss.peak_driver, err))
    if args.jar:
        with RssSampler() as rss:
            gf_times, gf_out = graphframes_real(spark, vertices, edges, rounds + 1)
            table = gf_out.toArrow()
            from lepton_spark.graph.arrow import list_to_matrix

            mat = np.zeros((n, d))
            mat[table.column("id").to_numpy()] = list_to_matrix(table.column("features"), d)
        err = float(np.abs(mat - ref64).max() / np.abs(ref64).max())
        results.append(("GraphFrames (jar)", statistics.median(gf_times[1:]), rss.peak_spark, rss.peak_driver, err))
    spark.stop()

    base = statistics.median(scipy_times[1:])
    gf = next((r[1] for r in results if r[0] == "GraphFrames (jar)"), None) or \
        next((r[1] for r in results if r[0] == "graphframes-eq"), None)
    peer = "GraphFrames (jar)" if any(r[0] == "GraphFrames (jar)" for r in results) else "graphframes-eq"
    print(f"\nn={n:,} m={m:,} d={d} rounds={rounds} (+1 warm-up) master={args.master} "
          f"partitions={args.partitions}")
    print(f"| plan | s/round (median) | x scipy | speed-up vs {peer} | preparation s | peak RSS JVM+workers GiB "
          "| peak RSS driver GiB | max rel err vs scipy |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| scipy (1 process) | {base:.3f} | 1.00 | {'' if gf is None else f'{gf / base:.1f}x'} | - | - | - | 0 |")
    for label, secs, rss_spark, rss_driver, err in results:
        speed = "" if gf is None else f"{gf / secs:.1f}x"
        pre = f"{prep[label]:.1f}" if label in prep else "-"
        print(f"| {label} | {secs:.3f} | {secs / base:.2f} | {speed} | {pre} | {rss_spark / 2**30:.2f} | "
              f"{rss_driver / 2**30:.2f} | {err:.1e} |")
    print(f"seconds per edge (ours auto): {results[0][1] / m:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
