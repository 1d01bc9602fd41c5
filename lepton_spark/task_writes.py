"""Parquet tables written by the tasks that compute their rows, when the tasks share the driver's disk.

Rows a Python function makes in a ``mapInArrow`` normally go back to the JVM, which converts them to
its rows and writes them with its Parquet writer: at 1M x 64 embeddings and 1M x 10 probabilities
(a partitioned propagation's result) two jobs and a cache took about 5 s on 2 cores, most of it the
JVM's conversion of the array columns. :func:`write_in_tasks` runs the same function in tasks that
write their rows with pyarrow themselves, every output table of one pass at once, and return only
counts. It applies where every task writes to the driver's file system: a local master and a local
output path (:func:`tasks_share_disk`); a cluster writes through Spark as before.

Each task writes one file per output, ``part-<partition>.snappy.parquet``, under a hidden temporary
name renamed when the file is complete, so a retried task replaces its own file and a failed one
leaves nothing Spark reads. The caller empties the directories first and marks them complete after
(the pipeline's staging, :mod:`lepton_spark.pipeline.publish`).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lepton_spark import storage
from lepton_spark.session import is_connect, is_local_master

#: ``rows``: Arrow batches in -> the table's rows out (the ``mapInArrow`` function that computes them)
RowsFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


@dataclass(frozen=True)
class TaskOutput:
    """One table a :func:`write_in_tasks` pass writes: the local Parquet directory ``path``, ``derive``
    (a picklable function from a pyarrow Table of the pass's rows to the table's rows) and, optionally,
    ``count_by``: an integer column whose rows are counted per value."""

    path: str
    derive: Callable[[pa.Table], pa.Table]
    count_by: str | None = None


@dataclass
class Written:
    """What a :func:`write_in_tasks` pass wrote into one output: its rows, and per value of ``count_by``."""

    rows: int
    groups: dict[Any, int]


def tasks_share_disk(spark: Any, *paths: str) -> bool:
    """True when the session's tasks run on this machine (a local master, a classic session) and every
    path is on the local file system, so a file a task writes is where the driver looks."""
    return not is_connect(spark) and is_local_master(spark) and all(storage.is_local_path(p) for p in paths)


def task_file_name() -> str:
    """This task's data file name stem, ``part-<partition>`` (a retried attempt gets the same name, so
    it replaces its own file); ``part-<random>`` outside a Spark task."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    return f"part-{tc.partitionId():05d}" if tc is not None else f"part-{uuid.uuid4().hex}"


#: bytes per row group of :func:`write_task_file` (Spark splits a file for its readers at row groups)
ROW_GROUP_BYTES = 32 << 20


def write_task_file(table: pa.Table, directory: str, compression: str = "snappy") -> str:
    """Write ``table`` as this task's one Parquet file in the local ``directory``
    (``<task_file_name()>.<compression>.parquet``, row groups of about :data:`ROW_GROUP_BYTES`),
    complete or not at all (a hidden temporary file renamed); returns its path."""
    import pyarrow.parquet as pq

    rows = max(1, table.num_rows * ROW_GROUP_BYTES // max(1, table.nbytes))
    final = os.path.join(directory, f"{task_file_name()}.{compression}.parquet")
    storage.atomic_write(final, lambda out: pq.write_table(table, out, compression=compression, row_group_size=rows,
                                                           use_dictionary=storage.dictionary_columns(table.schema)),
                         fsync=False)
    return final


class _WriteTask:
    """The ``mapInArrow`` function of :func:`write_in_tasks` (picklable when ``rows`` and the derive
    functions are): per output, one ``(output, total=True, null, rows)`` row and one ``(output, False,
    value, rows)`` row per counted value."""

    def __init__(self, rows: RowsFn, outputs: list[TaskOutput]) -> None:
        self.rows, self.outputs = rows, outputs

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        name = task_file_name()
        finals = [os.path.join(o.path, f"{name}.snappy.parquet") for o in self.outputs]
        temps = [os.path.join(o.path, f".{os.path.basename(f)}.{uuid.uuid4().hex}.tmp") for o, f in  # as atomic_write
                 zip(self.outputs, finals, strict=True)]
        writers: list[Any] = [None] * len(self.outputs)
        counts = [0] * len(self.outputs)
        groups: list[Counter] = [Counter() for _ in self.outputs]
        try:
            for batch in self.rows(batches):
                if batch.num_rows == 0:
                    continue
                t = pa.Table.from_batches([batch])
                for i, o in enumerate(self.outputs):
                    out = o.derive(t)
                    if writers[i] is None:
                        writers[i] = pq.ParquetWriter(temps[i], out.schema, compression="snappy",
                                                      use_dictionary=storage.dictionary_columns(out.schema))
                    writers[i].write_table(out, row_group_size=storage.WRITE_ROW_GROUP)
                    counts[i] += out.num_rows
                    if o.count_by is not None:
                        groups[i].update(storage.value_counts(out.column(o.count_by)))
            for w in writers:
                if w is not None:
                    w.close()
            for w, tmp, final in zip(writers, temps, finals, strict=True):
                if w is not None:
                    os.replace(tmp, final)
        finally:
            for tmp in temps:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        out = [(i, True, None, counts[i]) for i in range(len(self.outputs))]
        out += [(i, False, v, c) for i in range(len(self.outputs)) for v, c in groups[i].items()]
        yield pa.RecordBatch.from_arrays(
            [pa.array([r[0] for r in out], pa.int32()), pa.array([r[1] for r in out], pa.bool_()),
             pa.array([r[2] for r in out], pa.int64()), pa.array([r[3] for r in out], pa.int64())],
            names=["output", "total", "value", "rows"])


def write_in_tasks(source: Any, rows: RowsFn, outputs: list[TaskOutput], empty: pa.Table) -> list[Written]:
    """Write ``outputs`` from the rows ``rows`` makes of ``source``'s Arrow batches, in the tasks that make them.

    Every output directory is replaced (as ``mode("overwrite")``); ``empty`` (a table of the rows'
    schema with no rows) gives an output its one schema-only file when no task wrote any row, as
    Spark's writer does, so the table can be read. Only where :func:`tasks_share_disk`. Returns what
    each output got, in order. For example (the propagate stage, ``rows`` unpacking a partitioned
    result): ``write_in_tasks(packed, rows, [TaskOutput(emb_dir, embedding_rows), TaskOutput(pred_dir,
    prediction_rows, "label")], empty)``.
    """
    task_outputs = [TaskOutput(str(storage.local_dir(o.path, empty=True)), o.derive, o.count_by) for o in outputs]
    got = source.mapInArrow(_WriteTask(rows, task_outputs),
                            "output int, total boolean, value long, rows long").collect()
    written = [Written(0, {}) for _ in outputs]
    for r in got:
        w = written[int(r["output"])]
        if r["total"]:
            w.rows += int(r["rows"])
        else:
            v = None if r["value"] is None else int(r["value"])
            w.groups[v] = w.groups.get(v, 0) + int(r["rows"])
    for o, w in zip(task_outputs, written, strict=True):
        if w.rows == 0:
            write_task_file(o.derive(empty), o.path)
    return written
