"""What one nightly run carries from stage to stage (:class:`RunContext`) and how a stage stages a table.

Stages (:mod:`lepton_spark.pipeline.stages`) and the runner (:mod:`lepton_spark.pipeline.runner`) both
import this module; it imports neither, so the pipeline's dependencies point one way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lepton_spark import storage
from lepton_spark.config import Config
from lepton_spark.pipeline import publish
from lepton_spark.pipeline.faults import fail_after

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    spark: SparkSession
    cfg: Config
    output: str
    run_date: str
    run_id: str
    resume: bool
    graph_dir: str = ""
    model_dir: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    round_seconds: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)  # stages skipped: completed earlier with the same inputs
    recomputed: dict[str, list[str]] = field(default_factory=dict)  # stage -> inputs that changed
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its input fingerprint
    engine: str = "builtin"  # what the GraphFrame API resolves to in this session (graph.engine)
    # edge blocks packed by one stage and reused by the next (propagate -> analytics), keyed by graph dir
    operators: Any = None
    stages: list[str] = field(default_factory=list)  # the stages this run was asked for, in order
    #: ``(graph_dir, sorted ids, float32 features)`` the train stage read on the driver, kept for the
    #: propagate stage's forward pass (:func:`~lepton_spark.pipeline.stages.driver_features` takes and
    #: releases them): the same matrix is not read and sorted twice in one run
    held_features: tuple[str, Any, Any] | None = None
    _graphs: dict[str, tuple[DataFrame, DataFrame]] = field(default_factory=dict, repr=False)

    def graph(self) -> tuple[DataFrame, DataFrame]:
        """The run graph's ``(vertices, edges)`` DataFrames, read once per graph directory.

        Every ``spark.read`` lists the files and resolves their schema again (about 0.4 s each in a
        fresh JVM; the stages of a Cora nightly read the graph eight times). Only the build writes a
        graph, and it reads nothing through here before, so a memo keyed by the directory is current.
        """
        if self.graph_dir not in self._graphs:
            self._graphs[self.graph_dir] = storage.read_graph(self.spark, self.graph_dir)
        return self._graphs[self.graph_dir]

    def graph_meta(self) -> dict[str, Any]:
        """``_graph.json`` of the run's graph when ``validated`` (written by build or sample with the
        graph: counts that need no Spark job), else {}."""
        meta = storage.read_graph_meta(self.graph_dir)
        return meta if meta.get("validated") else {}

    @property
    def run_dir(self) -> str:
        return storage.join_path(self.output, "runs", self.run_date)

    @property
    def work_dir(self) -> str:
        return storage.join_path(self.output, "_work", self.run_id)

    def fault(self, point: str) -> None:
        """Test-only fault point (``LEPTON_FAIL_AFTER``, see :mod:`lepton_spark.pipeline.faults`)."""
        fail_after(point)


def held_rows(ctx: RunContext, df: DataFrame) -> Any:
    """``df``'s rows as a pyarrow Table when the driver wrote them itself
    (:func:`~lepton_spark.storage.local_rows`) and the run's output is local, so :func:`stage_rows` can
    write them; else None."""
    return storage.local_rows(df) if storage.is_local_path(ctx.output) else None


def stage_df(ctx: RunContext, df: DataFrame, table: str, count_by: str | None = None) -> None:
    """Stage one output table for this run (published only after all stages succeed).

    The staged files are counted (Parquet footers, :func:`~lepton_spark.storage.count_parquet_rows`);
    with ``count_by`` the count is per value of that column, kept in ``counts["<table>_by_<column>"]``
    (the predictions per class: the run report plots them without reading the table again). Rows the
    driver wrote itself (:func:`held_rows`) go through :func:`stage_rows`; rows unpacked from a
    partitioned result are written by the tasks that unpack them (:func:`stage_in_tasks`)."""
    rows = held_rows(ctx, df)
    if rows is not None:
        stage_rows(ctx, rows, table, count_by)
        return
    if stage_in_tasks(ctx, df, [(table, _as_is, count_by)]):
        return
    publish.stage_table(df, ctx.output, ctx.run_id, table, ctx.run_date)
    rows, groups = storage.count_parquet_rows(ctx.spark, publish.staged_dir(ctx.output, ctx.run_id, table, ctx.run_date),
                                              by=count_by)
    _staged(ctx, table, rows, groups, count_by)


def stage_rows(ctx: RunContext, rows: Any, table: str, count_by: str | None = None) -> None:
    """:func:`stage_df` for a pyarrow Table the driver holds, on a local output (see :func:`held_rows`):
    written with pyarrow (:func:`~lepton_spark.pipeline.publish.stage_rows`), counted from the table."""
    publish.stage_rows(rows, ctx.output, ctx.run_id, table, ctx.run_date)
    groups = storage.value_counts(rows.column(count_by)) if count_by is not None else {}
    _staged(ctx, table, rows.num_rows, groups, count_by)


def stage_in_tasks(ctx: RunContext, df: DataFrame, tables: list[tuple[str, Any, str | None]]) -> bool:
    """Stage ``tables`` (``(table, derive, count_by)``: ``derive`` a picklable function from a pyarrow
    Table of ``df``'s rows to the table's rows) in one pass of the tasks that compute ``df``'s rows,
    each writing its own files with pyarrow (:func:`~lepton_spark.task_writes.write_in_tasks`): when
    ``df`` is rows made from a partitioned propagation's packed result
    (:func:`~lepton_spark.graph.resident.lookup_packed_rows`) and the tasks share the driver's disk
    (a local master, a local output). Returns False, having staged nothing, otherwise."""
    from pyspark.sql.pandas.types import to_arrow_schema

    from lepton_spark import task_writes
    from lepton_spark.graph import resident

    hit = resident.lookup_packed_rows(df)
    if hit is None or not task_writes.tasks_share_disk(ctx.spark, ctx.output):
        return False
    packed, rows = hit
    empty = to_arrow_schema(df.schema).empty_table()
    outputs = [task_writes.TaskOutput(publish.staged_dir(ctx.output, ctx.run_id, table, ctx.run_date), derive, by)
               for table, derive, by in tables]
    written = task_writes.write_in_tasks(packed, rows, outputs, empty)
    for (table, _derive, by), w in zip(tables, written, strict=True):
        publish.mark_staged(ctx.output, ctx.run_id, table, ctx.run_date)
        _staged(ctx, table, w.rows, w.groups, by)
    log.info("%s: written by the tasks that computed the rows", ", ".join(t for t, _d, _b in tables))
    return True


def _as_is(rows: Any) -> Any:
    """The rows unchanged (a :func:`stage_in_tasks` derive function)."""
    return rows


def _staged(ctx: RunContext, table: str, rows: int, groups: dict[Any, int], count_by: str | None) -> None:
    if count_by is not None:
        ctx.counts[f"{table}_by_{count_by}"] = sorted([v, c] for v, c in groups.items() if v is not None)
    ctx.tables[table] = rows
    ctx.counts[f"{table}_rows"] = rows
    log.info("staged %s: %d rows", table, rows)
