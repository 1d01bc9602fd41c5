"""Link prediction at scale: GAE trained from Spark-propagated features on a planted-community graph,
then the links stage; test AUC/AP, seconds per stage, and recall@k of the published top-k against the
exact all-pairs top-k (numpy, blockwise) of the same embeddings.

Usage (one Spark benchmark at a time on a shared machine)::

    python bench/links_scale.py                                   # 100k vertices, avg degree ~10
    python bench/links_scale.py --candidates two_hop,lsh,both --max-neighbors 32
    python bench/links_scale.py --nodes 1000000 --edges 10000000 --no-exact --candidates two_hop

Graph (numpy, cached under --work): ``nodes`` vertices in communities of ``--community`` vertices;
``edges`` undirected pairs, ``--p-in`` (80%) of them inside a community (uniform partners), the rest
uniform over all vertices; stored in both directions, weight 1. Features: ``--dim`` Gaussian values =
community centroid (unit-norm random) + noise (``--noise``), so features alone carry a weak signal.
Ids are dense 0..n-1 (the layout ``build`` produces); labels and splits are null.

Training: ``model.type=gae`` with ``encoder: sgc`` and ``train.local_max_nodes=0``, i.e. the
large-graph path (:mod:`lepton_spark.links.large`); ``--driver`` also trains the paper's gcn encoder on
the driver with the sampled loss (``loss: sampled``) for comparison. Then ``propagate`` + ``links``
per candidate method, and (``--exact``) recall@k = |published top-k ∩ exact top-k| / |exact top-k|,
pooled over all vertices; the exact top-k ranks every non-adjacent, non-self vertex by ``z_u . z_v``.
Progress to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATE = "2026-12-01"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(out: Path, nodes: int, edges: int, community: int, p_in: float, dim: int, noise: float,
             seed: int) -> dict:
    """Write the planted-community graph (see the module docstring) to ``out``; returns its summary."""
    meta_path = out / "_bench.json"
    key = dict(nodes=nodes, edges=edges, community=community, p_in=p_in, dim=dim, noise=noise, seed=seed, v=1)
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        return json.loads(meta_path.read_text())
    rng = np.random.default_rng(seed)
    comm = rng.permutation(nodes) // community  # community of each vertex, communities of equal size
    members = np.argsort(comm, kind="stable")
    start = np.searchsorted(comm[members], np.arange(comm.max() + 2))
    m_in = int(edges * p_in)
    u = rng.integers(0, nodes, m_in)
    c = comm[u]
    size = start[c + 1] - start[c]
    v = members[start[c] + (rng.random(m_in) * size).astype(np.int64)]
    u2, v2 = rng.integers(0, nodes, edges - m_in), rng.integers(0, nodes, edges - m_in)
    a, b = np.concatenate([u, u2]), np.concatenate([v, v2])
    keep = a != b
    codes = np.unique(np.minimum(a, b)[keep] * nodes + np.maximum(a, b)[keep])
    lo, hi = codes // nodes, codes % nodes
    centroids = rng.standard_normal((comm.max() + 1, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    X = (centroids[comm] + noise * rng.standard_normal((nodes, dim))).astype(np.float32)
    (out / "vertices").mkdir(parents=True, exist_ok=True)
    (out / "edges").mkdir(parents=True, exist_ok=True)
    offsets = pa.array(np.arange(0, (nodes + 1) * dim, dim, dtype=np.int32))
    feats = pa.ListArray.from_arrays(offsets, pa.array(X.reshape(-1)), type=pa.list_(pa.field("element", pa.float32())))
    pq.write_table(pa.table({"id": pa.array(np.arange(nodes), pa.int64()), "features": feats,
                             "label": pa.nulls(nodes, pa.int32()), "split": pa.nulls(nodes, pa.string())}),
                   out / "vertices" / "part-0.parquet", row_group_size=200_000)
    src, dst = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    pq.write_table(pa.table({"src": pa.array(src, pa.int64()), "dst": pa.array(dst, pa.int64()),
                             "weight": pa.array(np.ones(src.size, np.float32))}),
                   out / "edges" / "part-0.parquet", row_group_size=2_000_000)
    summary = {"key": key, "vertices": nodes, "undirected_edges": int(codes.size), "directed_edges": int(src.size),
               "in_community_share": float(np.mean(comm[lo] == comm[hi]))}
    meta_path.write_text(json.dumps(summary))
    return summary


def exact_top_k(Z: np.ndarray, A: sp.csr_matrix, k: int, block: int = 2048) -> np.ndarray:
    """(n, k) exact top-k dst per vertex by ``z_u . z_v`` over every vertex that is not ``u`` and not
    adjacent (either direction), ties by ascending dst; -1 pads vertices with fewer than k candidates."""
    n = Z.shape[0]
    out = np.full((n, k), -1, dtype=np.int64)
    Zt = np.ascontiguousarray(Z.T)
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        S = Z[r0:r1] @ Zt
        sub = A[r0:r1]
        rows = np.repeat(np.arange(r1 - r0), np.diff(sub.indptr))
        S[rows, sub.indices] = -np.inf
        S[np.arange(r1 - r0), np.arange(r0, r1)] = -np.inf
        kk = min(k, n - 1)
        part = np.argpartition(-S, kk, axis=1)[:, : kk + 1]
        for i in range(r1 - r0):
            cand = part[i][np.isfinite(S[i, part[i]])]
            order = np.lexsort((cand, -S[i, cand]))[:k]
            out[r0 + i, : len(order)] = cand[order]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=500_000, help="undirected pairs drawn (before dedup)")
    ap.add_argument("--community", type=int, default=50)
    ap.add_argument("--p-in", type=float, default=0.8)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", default="two_hop,lsh,both")
    ap.add_argument("--max-neighbors", type=int, default=32)
    ap.add_argument("--lsh-tables", type=int, default=16)
    ap.add_argument("--lsh-bucket", type=float, default=1.0)
    ap.add_argument("--lsh-max-bucket", type=int, default=64)
    ap.add_argument("--lsh-projections", type=int, default=3)
    ap.add_argument("--no-exact", action="store_true", help="skip the exact all-pairs top-k (large graphs)")
    ap.add_argument("--driver", action="store_true", help="also train the gcn encoder on the driver (sampled loss)")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench_cache" / "links")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)

    from lepton_spark.config import SparkConfig, load_config
    from lepton_spark.pipeline import run_pipeline
    from lepton_spark.pipeline.stages import train_model
    from lepton_spark.session import get_spark

    tag = f"n{args.nodes}-e{args.edges}-c{args.community}-d{args.dim}-s{args.seed}"
    graph = args.work / tag / "graph"
    t0 = time.perf_counter()
    summary = generate(graph, args.nodes, args.edges, args.community, args.p_in, args.dim, args.noise, args.seed)
    log(f"graph {summary} ({time.perf_counter() - t0:.1f}s)")
    spark = get_spark(SparkConfig(master="local[2]", driver_memory=args.driver_memory, shuffle_partitions=8))
    rows = []
    base = [f"pipeline.graph_dir={graph}", "model.type=gae", "train.local_max_nodes=0",
            "model.params={encoder: sgc}", f"links.k={args.k}", f"links.max_neighbors={args.max_neighbors}",
            f"links.lsh_num_tables={args.lsh_tables}", f"links.lsh_bucket_length={args.lsh_bucket}",
            f"links.lsh_max_bucket={args.lsh_max_bucket}", f"links.lsh_projections={args.lsh_projections}"]
    cfg = load_config(None, base)
    model_dir = args.work / tag / "model"
    t0 = time.perf_counter()
    metrics = train_model(spark, cfg, str(graph), str(model_dir), hparams=cfg.model.params)
    train_s = time.perf_counter() - t0
    log(f"train (spark path): {train_s:.1f}s test AUC {metrics['test_auc']} AP {metrics['test_ap']}")
    driver = None
    if args.driver:
        from lepton_spark.models.gae import train_link_model

        e = pq.read_table(graph / "edges").to_pydict()
        A = sp.csr_matrix((np.ones(len(e["src"])), (e["src"], e["dst"])), shape=(args.nodes, args.nodes))
        v = pq.read_table(graph / "vertices", columns=["features"]).column("features")
        X = np.asarray(v.combine_chunks().flatten()).reshape(args.nodes, -1)
        t0 = time.perf_counter()
        _, dm = train_link_model("gae", A, X, {"loss": "sampled"}, seed=0)
        driver = (dm, time.perf_counter() - t0)
        log(f"train (driver, gcn encoder, sampled loss): {driver[1]:.1f}s test AUC {dm['test_auc']} AP {dm['test_ap']}")
    exact = A_und = None
    for method in args.candidates.split(","):
        out = args.work / tag / f"out-{method}"
        cfg = load_config(None, [*base, f"links.candidates={method}", "train.enabled=false",
                                 f"pipeline.model_dir={model_dir}"])
        t0 = time.perf_counter()
        manifest = run_pipeline(spark, cfg, output=str(out), run_date=DATE, stages=["propagate", "links"],
                                resume=False)
        secs = time.perf_counter() - t0
        preds = pq.read_table(out / "outputs" / "link_predictions" / f"run_date={DATE}").to_pandas()
        recall = None
        if not args.no_exact:
            if exact is None:
                emb = pq.read_table(out / "outputs" / "embeddings" / f"run_date={DATE}").to_pandas().sort_values("id")
                Z = np.stack(emb["embedding"].to_numpy()).astype(np.float32)
                e = pq.read_table(graph / "edges").to_pydict()
                A_und = sp.csr_matrix((np.ones(len(e["src"]), np.int8), (e["src"], e["dst"])),
                                      shape=(args.nodes, args.nodes))
                A_und = (A_und + A_und.T).tocsr()
                t1 = time.perf_counter()
                exact = exact_top_k(Z, A_und, args.k)
                log(f"exact all-pairs top-{args.k}: {time.perf_counter() - t1:.1f}s")
            want = exact[exact[:, 0] >= 0]
            ex = {(int(u), int(v)) for u, row in zip(np.flatnonzero(exact[:, 0] >= 0), want, strict=True)
                  for v in row if v >= 0}
            got = set(zip(preds["src"].astype(int), preds["dst"].astype(int), strict=True))
            recall = len(ex & got) / max(len(ex), 1)
        st = manifest["stage_seconds"]
        rows.append((method, f"{args.max_neighbors}" if method != "lsh" else "-", f"{len(preds):,}",
                     f"{preds['src'].nunique() / args.nodes:.3f}",
                     "-" if recall is None else f"{recall:.3f}", f"{st.get('propagate', 0):.1f}",
                     f"{st.get('links', 0):.1f}", f"{secs:.1f}"))
        log(f"{method}: {rows[-1]}")
    print(f"graph: {summary['vertices']:,} vertices, {summary['undirected_edges']:,} undirected edges "
          f"({summary['in_community_share']:.2f} inside communities of {args.community}), dim {args.dim}")
    print(f"train (Spark-propagated features, sgc encoder): {train_s:.1f} s, test AUC "
          f"{100 * metrics['test_auc']:.2f} AP {100 * metrics['test_ap']:.2f} "
          f"({metrics['edge_split']['sampled']} pairs sampled)")
    if driver:
        print(f"train (driver, gcn encoder, sampled loss): {driver[1]:.1f} s, test AUC "
              f"{100 * driver[0]['test_auc']:.2f} AP {100 * driver[0]['test_ap']:.2f}")
    header = ("candidates", "max_neighbors", "links rows", "vertices with links", f"recall@{args.k}",
              "propagate s", "links s", "propagate+links s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
