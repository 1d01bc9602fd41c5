"""Random-walk node embeddings (DeepWalk; node2vec with p/q) with Spark MLlib Word2Vec."""

from __future__ import annotations

from lepton_spark.embed.walks import adjacency, random_walks
from lepton_spark.embed.word2vec import random_walk_embeddings

__all__ = ["adjacency", "random_walk_embeddings", "random_walks"]
