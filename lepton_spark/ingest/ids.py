"""Map raw vertex ids (strings or integers) to dense longs 0..n-1, scalably and deterministically.

Vertices are range-partitioned and sorted by raw id; each partition's size is counted (one small
aggregate), the driver turns the sizes into offsets, and a vertex's dense id is its partition offset
plus its rank inside the partition. No global single-partition sort, no RDD zipWithIndex. The dense
order follows the raw id order, so integer ids that are already 0..n-1 keep their values.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def dense_ids(vertices: DataFrame, raw_col: str = "raw_id", num_partitions: int = 8) -> DataFrame:
    """Add a dense ``id`` (long, 0..n-1) to ``vertices`` ordered by ``raw_col`` (unique values).

    Order by the raw column in its own type: integers numerically (so 0..n-1 stay themselves),
    strings lexicographically.
    """
    ordered = vertices.repartitionByRange(num_partitions, raw_col).withColumn("_part", F.spark_partition_id())
    ordered = ordered.localCheckpoint(eager=True)  # fix partition ids: the offsets below must match them
    sizes = {r["_part"]: r["count"] for r in ordered.groupBy("_part").count().collect()}
    offsets, total = {}, 0
    for part in sorted(sizes):
        offsets[part] = total
        total += sizes[part]
    mapping = F.create_map(*[x for p, o in offsets.items() for x in (F.lit(p), F.lit(o))]) if offsets else None
    rank = F.row_number().over(Window.partitionBy("_part").orderBy(raw_col)) - 1
    base = mapping[F.col("_part")] if mapping is not None else F.lit(0)
    return ordered.withColumn("id", (base + rank).cast("long")).drop("_part")


def dense_ids_on_driver(vertices: DataFrame, raw_col: str = "raw_id") -> DataFrame:
    """:func:`dense_ids` for an id table small enough to be broadcast to the edges anyway (up to
    ``build.broadcast_ids_max`` vertices): the keys and raw ids are collected, ranked by the raw id
    with Arrow's sort (the same order: numbers numerically, strings by their UTF-8 bytes as Spark
    compares them) and come back as a local DataFrame ``(_key, id)``. At 1M vertices one collect job
    replaces the range partitioning, the per-partition counts and two checkpoints (5 s -> 2 s).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from lepton_spark import storage

    t = storage.collect_arrow(vertices.select("_key", raw_col))
    order = pc.sort_indices(t.column(raw_col)).to_numpy()
    ids = np.empty(t.num_rows, dtype=np.int64)
    ids[order] = np.arange(t.num_rows, dtype=np.int64)
    return storage.create_df(vertices.sparkSession, pa.table({"_key": t.column("_key"), "id": ids}))
