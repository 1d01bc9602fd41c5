"""Link outputs on Spark: the decoder's score of every edge and the top-k new links per vertex.

Everything here is DataFrame API (joins, windows) plus numpy on Arrow batches (``mapInArrow``) for
the arithmetic; no RDDs, no per-row Python UDFs. The decoder is the inner product of the embeddings
``score(u, v) = sigmoid(z_u . z_v)`` (float64 from the ``array<float>`` embeddings).

* :func:`edge_scores` -- ``(src, dst, weight, score)`` for every edge whose endpoints have an
  embedding (the learned edge weights).
* :func:`candidate_pairs` -- pairs ``(src, dst)`` worth scoring for ``src``, never all pairs:

  - ``two_hop``: ``src``'s neighbours' neighbours with hub capping -- every vertex keeps at most
    ``max_neighbors`` of its neighbours (chosen by a seeded hash, so deterministic), so a vertex gets
    at most ``max_neighbors^2`` candidates and a hub's fan-out costs no more than anyone's;
  - ``lsh``: approximate maximum-inner-product neighbours of the embeddings with MLlib's
    ``BucketedRandomProjectionLSH``, after the usual MIPS-to-nearest-neighbour transform (items
    ``[z/M, sqrt(1 - |z/M|^2)]``, queries ``[z/|z|, 0]``, ``M`` the largest norm; both on the unit
    sphere, so a query's nearest items are its largest inner products): a pair is a candidate when
    query and item share a bucket in some table (``lsh_projections`` MLlib projections ANDed per
    table); a bucket keeps its ``lsh_max_bucket`` largest-norm items (within a bucket they have the
    largest inner products), so a vertex has at most ``lsh_num_tables * lsh_max_bucket`` candidates;
  - ``both``: the union.

  Neighbourhoods are undirected (an edge in either direction). Self pairs and pairs that are
  already edges (either direction) are removed.
* :func:`link_predictions` -- ``(src, dst, score, rank)``: for every vertex its ``k`` best candidates
  by descending score, ties broken by ascending ``dst``, ranks ``1..k`` (fewer rows when a vertex has
  fewer candidates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from lepton_spark.errors import UsageError

log = logging.getLogger(__name__)

CANDIDATES = ("two_hop", "lsh", "both")


def _scorer(keep: list[str]) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """mapInArrow body: ``keep`` columns plus ``score = sigmoid(zs . zd)`` (double)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from lepton_spark.graph.arrow import list_to_matrix
        from lepton_spark.models.gae import sigmoid

        for b in batches:
            zs = list_to_matrix(b.column("zs")).astype(np.float64)
            zd = list_to_matrix(b.column("zd"), zs.shape[1] if b.num_rows else None).astype(np.float64)
            if zs.shape != zd.shape:
                raise ValueError(f"embeddings of different lengths: {zs.shape} vs {zd.shape}")
            score = sigmoid(np.einsum("ij,ij->i", zs, zd))
            yield pa.RecordBatch.from_arrays([b.column(c) for c in keep] + [pa.array(score, pa.float64())],
                                             names=[*keep, "score"])

    return run


def score_pairs_df(pairs: DataFrame, embeddings: DataFrame, keep: list[str] | None = None,
                   broadcast: bool = False) -> DataFrame:
    """``pairs`` (``src``, ``dst`` and the ``keep`` columns) joined with both endpoints' embeddings
    (``embeddings``: ``id``, ``embedding``) and scored; pairs with an endpoint without an embedding
    are dropped. ``broadcast`` hints Spark to broadcast the embeddings (small graphs)."""
    keep = list(keep or ["src", "dst"])
    emb = embeddings.select(F.col("id").cast("long").alias("id"), F.col("embedding").cast("array<float>"))
    if broadcast:
        emb = F.broadcast(emb)
    zs = emb.select(F.col("id").alias("src"), F.col("embedding").alias("zs"))
    zd = emb.select(F.col("id").alias("dst"), F.col("embedding").alias("zd"))
    joined = pairs.join(zs, on="src", how="inner").join(zd, on="dst", how="inner").select(*keep, "zs", "zd")
    fields = [f for f in joined.schema.fields if f.name in keep]
    ddl = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in fields) + ", score double"
    return joined.mapInArrow(_scorer(keep), ddl)


def edge_scores(edges: DataFrame, embeddings: DataFrame, broadcast: bool = False) -> DataFrame:
    """``(src long, dst long, weight float, score double)`` for every edge (weight 1.0 when the edge
    table has none)."""
    w = F.col("weight").cast("float") if "weight" in edges.columns else F.lit(1.0).cast("float")
    e = edges.select(F.col("src").cast("long").alias("src"), F.col("dst").cast("long").alias("dst"), w.alias("weight"))
    return score_pairs_df(e, embeddings, ["src", "dst", "weight"], broadcast=broadcast)


def undirected(edges: DataFrame) -> DataFrame:
    """``(u, v)`` for every edge in both directions, distinct, without self-loops."""
    e = edges.select(F.col("src").cast("long").alias("u"), F.col("dst").cast("long").alias("v"))
    both = e.unionByName(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    return both.filter(F.col("u") != F.col("v")).distinct()


def capped_neighbours(und: DataFrame, max_neighbors: int, seed: int) -> DataFrame:
    """``(u, v)`` keeping, for every ``u``, at most ``max_neighbors`` of its neighbours: those with the
    smallest ``xxhash64(u, v, seed)`` (ties by ``v``), so the choice is deterministic and unbiased."""
    w = Window.partitionBy("u").orderBy(F.xxhash64("u", "v", F.lit(int(seed))), "v")
    return und.withColumn("_r", F.row_number().over(w)).filter(F.col("_r") <= int(max_neighbors)).drop("_r")


def two_hop_pairs(und: DataFrame, max_neighbors: int, seed: int) -> DataFrame:
    """``(src, dst)``: ``dst`` is a kept neighbour of a kept neighbour of ``src`` (not deduplicated)."""
    cap = capped_neighbours(und, max_neighbors, seed)
    first = cap.select(F.col("u").alias("src"), F.col("v").alias("mid"))
    second = cap.select(F.col("u").alias("mid"), F.col("v").alias("dst"))
    return first.join(second, on="mid", how="inner").select("src", "dst")


def lsh_pairs(embeddings: DataFrame, *, bucket_length: float, num_tables: int, max_bucket: int,
              seed: int, projections: int = 1) -> DataFrame:
    """``(src, dst)`` sharing a bucket of MLlib's ``BucketedRandomProjectionLSH`` after the MIPS
    transform (module docstring); every bucket keeps its ``max_bucket`` largest-norm items (ties by
    id) and all its queries, so a vertex has at most ``num_tables * max_bucket`` candidates.
    ``bucket_length`` is the bucket width on the unit sphere both sides are mapped to.

    MLlib hashes each table with ONE random projection (OR-amplification only), so one table's
    bucket is a slab of the space. ``projections > 1`` ANDs that many tables into one bucket key (a
    cell of a ``projections``-dimensional grid): ``num_tables`` such keys are built from
    ``num_tables * projections`` MLlib hash tables."""
    from pyspark.ml.feature import BucketedRandomProjectionLSH
    from pyspark.ml.functions import array_to_vector, vector_to_array

    z = embeddings.select(F.col("id").cast("long").alias("id"), F.col("embedding").cast("array<double>").alias("z"))
    norm2 = F.aggregate("z", F.lit(0.0), lambda acc, x: acc + x * x)
    max_norm = z.select(F.max(F.sqrt(norm2))).first()[0] or 0.0
    if max_norm <= 0:
        return z.select(F.col("id").alias("src"), F.col("id").alias("dst")).limit(0)
    scale = F.lit(1.0 / max_norm)
    unit = F.transform("z", lambda x: x * scale)  # norms <= 1 after scaling by M
    u2 = F.aggregate(unit, F.lit(0.0), lambda acc, x: acc + x * x)
    items = z.select("id", F.sqrt(norm2).alias("norm"),
                     array_to_vector(F.concat(unit, F.array(F.sqrt(F.greatest(F.lit(1.0) - u2, F.lit(0.0))))))
                     .alias("v"))
    # a query's scale does not change its ranking: unit queries put both sides on the unit sphere
    qn = F.sqrt(F.aggregate("z", F.lit(0.0), lambda acc, x: acc + x * x))
    qunit = F.transform("z", lambda x: F.when(qn > 0, x / qn).otherwise(F.lit(0.0)))
    queries = z.select("id", F.lit(0.0).alias("norm"), array_to_vector(F.concat(qunit, F.array(F.lit(0.0)))).alias("v"))
    p = max(1, int(projections))
    model = BucketedRandomProjectionLSH(inputCol="v", outputCol="h", bucketLength=float(bucket_length),
                                        numHashTables=int(num_tables) * p, seed=int(seed)).fit(items)

    def buckets(df: DataFrame, cap: bool) -> DataFrame:
        h = model.transform(df).select("id", "norm", F.posexplode("h").alias("j", "hv"))
        h = h.select("id", "norm", (F.col("j") % F.lit(int(num_tables))).alias("t"), "j",
                     vector_to_array("hv")[0].alias("b"))
        if p > 1:  # AND: the table's key is its p bucket numbers, in hash-table order
            h = h.groupBy("id", "norm", "t").agg(F.sort_array(F.collect_list(F.struct("j", "b"))).alias("s")) \
                .select("id", "norm", "t", F.transform("s", lambda x: x["b"]).alias("b"))
        else:
            h = h.select("id", "norm", "t", "b")
        if not cap:
            return h
        # an item bucket keeps its largest-norm members: within a bucket (similar directions) they have
        # the largest inner products with any query of the bucket
        w = Window.partitionBy("t", "b").orderBy(F.col("norm").desc(), "id")
        return h.withColumn("_r", F.row_number().over(w)).filter(F.col("_r") <= int(max_bucket)).drop("_r")

    q = buckets(queries, cap=False).select(F.col("id").alias("src"), "t", "b")
    it = buckets(items, cap=True).select(F.col("id").alias("dst"), "t", "b")
    return q.join(it, on=["t", "b"], how="inner").select("src", "dst")


def candidate_pairs(edges: DataFrame, embeddings: DataFrame | None = None, *, method: str = "two_hop",
                    max_neighbors: int = 32, seed: int = 0, lsh_bucket_length: float = 1.0,
                    lsh_num_tables: int = 16, lsh_max_bucket: int = 64, lsh_projections: int = 3) -> DataFrame:
    """Distinct candidate pairs ``(src, dst)``: no self pairs, no existing edges (either direction).

    ``method``: ``two_hop`` | ``lsh`` (needs ``embeddings``) | ``both``; see the module docstring.
    """
    if method not in CANDIDATES:
        raise UsageError(f"links.candidates must be one of {', '.join(CANDIDATES)}, got {method!r}")
    if max_neighbors < 1:
        raise UsageError(f"links.max_neighbors must be >= 1, got {max_neighbors}")
    und = undirected(edges)
    parts = []
    if method in ("two_hop", "both"):
        parts.append(two_hop_pairs(und, max_neighbors, seed))
    if method in ("lsh", "both"):
        if embeddings is None:
            raise UsageError("lsh candidates need the embeddings")
        parts.append(lsh_pairs(embeddings, bucket_length=lsh_bucket_length, num_tables=lsh_num_tables,
                               max_bucket=lsh_max_bucket, seed=seed, projections=lsh_projections))
    pairs = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    existing = und.select(F.col("u").alias("src"), F.col("v").alias("dst"))
    return (pairs.filter(F.col("src") != F.col("dst")).distinct()
            .join(existing, on=["src", "dst"], how="left_anti"))


def top_k(scored: DataFrame, k: int) -> DataFrame:
    """``(src, dst, score, rank)``: per ``src`` the ``k`` highest scores, ties by ascending ``dst``."""
    if k < 1:
        raise UsageError(f"links.k must be >= 1, got {k}")
    w = Window.partitionBy("src").orderBy(F.col("score").desc(), F.col("dst").asc())
    return (scored.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= int(k))
            .select("src", "dst", "score", F.col("rank").cast("int").alias("rank")))


def link_predictions(edges: DataFrame, embeddings: DataFrame, *, k: int = 10, method: str = "two_hop",
                     max_neighbors: int = 32, seed: int = 0, broadcast: bool = False,
                     **lsh: Any) -> DataFrame:
    """Top-``k`` new links per vertex (``src long, dst long, score double, rank int``); see
    :func:`candidate_pairs` for ``method``/``max_neighbors``/``seed`` and the ``lsh_*`` options."""
    if k < 1:
        raise UsageError(f"links.k must be >= 1, got {k}")
    cands = candidate_pairs(edges, embeddings, method=method, max_neighbors=max_neighbors, seed=seed, **lsh)
    return top_k(score_pairs_df(cands, embeddings, ["src", "dst"], broadcast=broadcast), k)
