"""The tables propagation moves between Spark and Python, each as a Spark schema and its Arrow twin.

Every Spark schema here is declared once and its Arrow schema derived from it by :func:`arrow_schema`
at import time (the Python functions of ``applyInArrow`` / ``mapInArrow`` must return exactly the
Arrow types Spark expects, and two hand-written copies drift apart).

- ``RESULT``: the result of :func:`~lepton_spark.graph.propagation.propagate`, ``(id long,
  features array<float>)`` (docs/architecture.md §2.2).
- ``EBLOCK``: the cached edge blocks of the partitioned plan, a few rows per block: ``part`` 0 holds
  the block's vertices, in-degrees and GCN scaling factors (empty unless ``normalize="sym"``), and
  every part a piece of its CSR rows (their targets and CSR arrays), as raw bytes; ``bad_weights``
  counts the null, NaN or infinite weights found while packing.
- ``PARTIAL_BLOB`` / ``PARTIAL_ROWS``: the partials a block sends to a destination block, as binary
  values of many rows (``numpy`` aggregation) or one row per vertex (``native_aggregate``).
"""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T

from lepton_spark.graph.arrow import FLOAT_LIST

FEATURES_T = T.ArrayType(T.FloatType())


def arrow_schema(schema: T.StructType) -> pa.Schema:
    """The Arrow schema Spark exchanges for ``schema`` (int, long, binary and ``array<float>`` fields)."""
    mapping = {T.IntegerType: pa.int32(), T.LongType: pa.int64(), T.BinaryType: pa.binary()}
    fields = []
    for f in schema.fields:
        if isinstance(f.dataType, T.ArrayType):
            fields.append(pa.field(f.name, FLOAT_LIST))
        else:
            fields.append(pa.field(f.name, mapping[type(f.dataType)]))
    return pa.schema(fields)


RESULT = T.StructType(
    [T.StructField("id", T.LongType(), False), T.StructField("features", FEATURES_T, False)]
)
EBLOCK = T.StructType(
    [
        T.StructField("pid", T.IntegerType()),
        T.StructField("part", T.IntegerType()),
        T.StructField("n", T.LongType()),
        T.StructField("ids", T.BinaryType()),
        T.StructField("indeg", T.BinaryType()),
        T.StructField("dinv", T.BinaryType()),
        T.StructField("tgt", T.BinaryType()),
        T.StructField("tgt_local", T.BinaryType()),
        T.StructField("indptr", T.BinaryType()),
        T.StructField("indices", T.BinaryType()),
        T.StructField("data", T.BinaryType()),
        T.StructField("bad_weights", T.LongType()),
    ]
)
PARTIAL_BLOB = T.StructType(
    [T.StructField("pid", T.IntegerType()), T.StructField("local", T.BinaryType()),
     T.StructField("values", T.BinaryType())]
)
PARTIAL_ROWS = T.StructType(
    [T.StructField("pid", T.IntegerType()), T.StructField("local", T.IntegerType()),
     T.StructField("features", FEATURES_T)]
)

RESULT_PA = arrow_schema(RESULT)
EBLOCK_PA = arrow_schema(EBLOCK)
PARTIAL_BLOB_PA = arrow_schema(PARTIAL_BLOB)
PARTIAL_ROWS_PA = arrow_schema(PARTIAL_ROWS)
