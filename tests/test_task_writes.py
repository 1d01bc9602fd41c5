"""Tables written by the tasks that compute their rows (lepton_spark.task_writes) against Spark's own writer."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.testing import assertDataFrameEqual

from lepton_spark import task_writes
from lepton_spark.task_writes import TaskOutput, write_in_tasks


def _source(spark, keep: str):
    """4 partitions of ids 0..999 (partition 2 emptied by ``keep``), a group column and a float array."""
    return spark.range(0, 1000, numPartitions=4).filter(keep).select(
        "id", (F.col("id") % 7).cast("int").alias("g"),
        F.array(F.col("id").cast("float"), (F.col("id") * 0.5).cast("float")).alias("v"))


def _rows(batches):
    """The rows the tasks compute: the source's columns and ``sq`` = id * id."""
    for b in batches:
        yield pa.RecordBatch.from_arrays([*b.columns, pc.multiply(b.column(0), b.column(0))],
                                         names=[*b.schema.names, "sq"])


def _outputs(tmp_path, name: str) -> list[TaskOutput]:
    return [TaskOutput(str(tmp_path / name / "a"), lambda t: t.select(["id", "v"])),
            TaskOutput(str(tmp_path / name / "b"), lambda t: t.select(["id", "g", "sq"]), count_by="g")]


def test_write_in_tasks_equals_spark_write(spark, tmp_path) -> None:
    src = _source(spark, "id < 300 or id >= 800")  # partition 1 in part, partition 2 not at all
    want = src.withColumn("sq", F.col("id") * F.col("id"))
    empty = to_arrow_schema(want.schema).empty_table()
    (tmp_path / "tasks" / "a").mkdir(parents=True)
    (tmp_path / "tasks" / "a" / "stale.parquet").write_bytes(b"x")  # replaced, as mode("overwrite")
    written = write_in_tasks(src, _rows, _outputs(tmp_path, "tasks"), empty)
    want.select("id", "v").write.parquet(str(tmp_path / "spark" / "a"))
    want.select("id", "g", "sq").write.parquet(str(tmp_path / "spark" / "b"))
    for out in ("a", "b"):
        got = spark.read.parquet(str(tmp_path / "tasks" / out))
        ref = spark.read.parquet(str(tmp_path / "spark" / out))
        assert got.schema == ref.schema
        assertDataFrameEqual(got, ref)
    assert [w.rows for w in written] == [500, 500]
    by_g = {r["g"]: r["count"] for r in want.groupBy("g").count().collect()}
    assert written[1].groups == by_g and written[0].groups == {}
    # one file per task with rows (partition 2 had none), no temporary file, the stale file gone
    names = sorted(p.name for p in (tmp_path / "tasks" / "a").iterdir())
    assert names == ["part-00000.snappy.parquet", "part-00001.snappy.parquet", "part-00003.snappy.parquet"]


def test_write_in_tasks_of_no_rows_leaves_a_readable_empty_table(spark, tmp_path) -> None:
    src = _source(spark, "id < 0")
    want = src.withColumn("sq", F.col("id") * F.col("id"))
    written = write_in_tasks(src, _rows, _outputs(tmp_path, "tasks"), to_arrow_schema(want.schema).empty_table())
    assert [(w.rows, w.groups) for w in written] == [(0, {}), (0, {})]
    want.select("id", "g", "sq").write.parquet(str(tmp_path / "spark" / "b"))
    got = spark.read.parquet(str(tmp_path / "tasks" / "b"))
    assert got.schema == spark.read.parquet(str(tmp_path / "spark" / "b")).schema and got.count() == 0


def test_tasks_share_disk_only_for_a_local_master_and_local_paths(spark, tmp_path) -> None:
    assert task_writes.tasks_share_disk(spark, str(tmp_path), f"file://{tmp_path}")
    assert not task_writes.tasks_share_disk(spark, str(tmp_path), "s3://bucket/out")
