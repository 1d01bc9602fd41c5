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

