"""DeepWalk / node2vec embeddings: random walks -> Spark MLlib Word2Vec (skip-gram)."""

from __future__ import annotations

import logging
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lepton_spark.config import EmbedConfig
from lepton_spark.embed.walks import random_walks

log = logging.getLogger(__name__)


def random_walk_embeddings(spark: SparkSession, vertices: DataFrame, edges: DataFrame,
                           cfg: EmbedConfig | None = None, *, num_partitions: int = 1) -> DataFrame:
    """``(id, embedding array<float>)`` for every vertex that appears in a walk (all of them).

    Determinism: the walks are a pure function of the seed (hash-based sampling). MLlib's Word2Vec is
    deterministic for a fixed seed when it trains on one partition (``num_partitions=1``, the
    default) and the session's ``spark.default.parallelism`` is the same (its vocabulary order, hence
    the initial vectors, follows the partitioning of its word count); with more partitions it trains
    partitions in parallel and merges, which is faster on a cluster but not bit-reproducible.
    """
    from pyspark.ml.feature import Word2Vec
    from pyspark.ml.functions import vector_to_array

    cfg = cfg or EmbedConfig()
    t0 = time.perf_counter()
    walks = random_walks(vertices, edges, walks_per_node=cfg.walks_per_node, walk_length=cfg.walk_length,
                         p=cfg.p, q=cfg.q, seed=cfg.seed, max_degree=cfg.max_degree_sample)
    sentences = walks.select(F.transform("walk", lambda x: x.cast("string")).alias("walk"))
    w2v = Word2Vec(vectorSize=cfg.dim, windowSize=cfg.window, minCount=cfg.min_count, maxIter=cfg.epochs,
                   seed=cfg.seed, inputCol="walk", outputCol="vec", numPartitions=num_partitions)
    model = w2v.fit(sentences)
    vectors = model.getVectors().select(
        F.col("word").cast("long").alias("id"), vector_to_array("vector", "float32").alias("embedding"))
    log.info("walk embeddings: dim %d in %.1fs", cfg.dim, time.perf_counter() - t0)
    return vectors
