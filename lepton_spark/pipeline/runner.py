"""The nightly pipeline: build -> train -> propagate -> analytics/embed -> publish -> manifest -> report.

Layout under ``--output`` (local path or URI):

```
outputs/<table>/run_date=<d>/          published tables (embeddings, predictions, pagerank, ...)
runs/<d>/_manifest.json                the run's manifest, written LAST (a run without it did not happen)
runs/<d>/report/index.html             report with PNG plots
runs/<d>/graph/, runs/<d>/model/        the graph built and the model trained by that run
_work/<run_id>/                        resume state: stage markers, propagation round state
_staging/<run_id>/                     tables written but not yet published
```

The run id defaults to ``<run_date>-<config hash>``, so rerunning the same date with the same config
resumes an interrupted run: completed stages are skipped (their staged tables and artifacts reused)
and propagation continues after its last completed round. A successful run deletes its work state,
so a later rerun of the same date recomputes and republishes (same rows, new manifest).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lepton_spark import io, logs
from lepton_spark.config import DEFAULT_SAMPLE_DIR, Config
from lepton_spark.errors import InvalidInputError, UsageError
from lepton_spark.pipeline import publish

log = logging.getLogger(__name__)

STAGES = ("build", "train", "propagate", "analytics", "embed", "report")
STAGE_TABLES = {
    "propagate": ("embeddings", "predictions"),
    "analytics": ("pagerank", "components", "communities"),
    "embed": ("walk_embeddings",),
}


class InjectedFault(RuntimeError):
    """Raised by the ``pipeline.fail_after`` fault-injection hook (tests only)."""


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
    skipped: list[str] = field(default_factory=list)
    # edge blocks packed by one stage and reused by the next (propagate -> analytics), keyed by graph dir
    operators: Any = None

    @property
    def run_dir(self) -> str:
        return io.join_path(self.output, "runs", self.run_date)

    @property
    def work_dir(self) -> str:
        return io.join_path(self.output, "_work", self.run_id)

    def fault(self, point: str) -> None:
        """Raise if ``pipeline.fail_after`` names this point (e.g. ``stage:train``, ``table:embeddings``)."""
        if self.cfg.pipeline.fail_after and self.cfg.pipeline.fail_after == point:
            raise InjectedFault(f"fault injected after {point} (pipeline.fail_after)")


def default_run_id(cfg: Config, run_date: str) -> str:
    return f"{run_date}-{cfg.digest()[:10]}"


def run_pipeline(spark: SparkSession, cfg: Config, *, output: str, run_date: str, stages: list[str] | None = None,
                 run_id: str | None = None, resume: bool | None = None, graph_dir: str | None = None,
                 model_dir: str | None = None) -> dict[str, Any]:
    """Run ``stages`` for ``run_date``; returns the manifest (also written to runs/<d>/_manifest.json)."""
    stages = list(stages or cfg.pipeline.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown pipeline stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
    t_run = time.perf_counter()
    ctx = RunContext(spark=spark, cfg=cfg, output=output.rstrip("/"), run_date=run_date,
                     run_id=run_id or default_run_id(cfg, run_date),
                     resume=cfg.pipeline.resume if resume is None else resume)
    ctx.graph_dir = graph_dir or cfg.pipeline.graph_dir or str(DEFAULT_SAMPLE_DIR)
    ctx.model_dir = model_dir or cfg.pipeline.model_dir
    if not ctx.resume and io.path_exists(ctx.work_dir):
        io.delete_path(ctx.work_dir)
        publish.clean_staging(ctx.output, ctx.run_id)
    log.info("run %s: date %s, stages %s, output %s", ctx.run_id, run_date, ",".join(stages), ctx.output)
    from lepton_spark.pipeline import stages as impl

    handlers = {"build": impl.build_stage, "train": impl.train_stage, "propagate": impl.propagate_stage,
                "analytics": impl.analytics_stage, "embed": impl.embed_stage}
    from lepton_spark.graph.propagation import OperatorCache

    ctx.operators = OperatorCache()
    try:
        _run_stages(ctx, stages, handlers)
    finally:
        ctx.operators.close()

    # publish every staged table, then the manifest (last)
    logs.set_stage("publish")
    t0 = time.perf_counter()
    published = []
    for stage in stages:
        for table in STAGE_TABLES.get(stage, ()):
            if publish.is_staged(ctx.output, ctx.run_id, table, run_date):
                publish.publish_table(ctx.output, ctx.run_id, table, run_date)
                published.append(table)
                ctx.fault(f"publish:{table}")
    ctx.stage_seconds["publish"] = round(time.perf_counter() - t0, 3)
    manifest = _manifest(ctx, stages, published, time.perf_counter() - t_run)
    io.write_json(io.join_path(ctx.run_dir, "_manifest.json"), manifest)
    publish.clean_staging(ctx.output, ctx.run_id)
    if io.path_exists(ctx.work_dir):
        io.delete_path(ctx.work_dir)
    io.remove_if_empty(io.join_path(ctx.output, "_work"))
    if "report" in stages:
        logs.set_stage("report")
        t0 = time.perf_counter()
        from lepton_spark.pipeline.report import write_report

        write_report(spark, ctx.run_dir, output=ctx.output)
        manifest["report_seconds"] = round(time.perf_counter() - t0, 3)
    logs.set_stage(None)
    _log_summary(manifest)
    return manifest


def _run_stages(ctx: RunContext, stages: list[str], handlers: dict[str, Any]) -> None:
    """Run (or, on resume, skip) every stage but report, writing each completed stage's marker."""
    for stage in [s for s in stages if s != "report"]:
        logs.set_stage(stage)
        marker = io.join_path(ctx.work_dir, "stages", f"{stage}.json")
        if ctx.resume and io.path_exists(marker):
            done = json.loads(io.read_text(marker))
            ctx.stage_seconds[stage] = done.get("seconds", 0.0)
            ctx.counts.update(done.get("counts", {}))
            ctx.round_seconds.update(done.get("rounds", {}))
            ctx.graph_dir = done.get("graph_dir", ctx.graph_dir)
            ctx.model_dir = done.get("model_dir", ctx.model_dir)
            log.info("stage %s: already completed in run %s, skipped (resume)", stage, ctx.run_id)
            continue
        t0 = time.perf_counter()
        log.info("stage %s: start", stage)
        handlers[stage](ctx)
        secs = round(time.perf_counter() - t0, 3)
        ctx.stage_seconds[stage] = secs
        io.write_json(marker, {"seconds": secs, "counts": ctx.counts, "graph_dir": ctx.graph_dir,
                               "model_dir": ctx.model_dir,
                               "rounds": {k: v for k, v in ctx.round_seconds.items() if k.startswith(stage)}})
        log.info("stage %s: done in %.2fs", stage, secs)
        ctx.fault(f"stage:{stage}")


def _manifest(ctx: RunContext, stages: list[str], published: list[str], seconds: float) -> dict[str, Any]:
    from lepton_spark.graph.engine import resolve_engine

    model = {}
    card_path = io.join_path(ctx.model_dir, "model.json") if ctx.model_dir else ""
    if card_path and io.path_exists(card_path):
        card = json.loads(io.read_text(card_path))
        model = {"dir": ctx.model_dir, "sha256": (card.get("weights") or {}).get("sha256"),
                 "type": card.get("model_type"), "test_acc": ((card.get("metrics") or {}).get("final") or {}).get("test_acc"),
                 "trained_by_this_run": "train" in stages and ctx.cfg.train.enabled}
    return {
        "run_id": ctx.run_id,
        "run_date": ctx.run_date,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": stages,
        "tables": {t: {"path": publish.partition_dir(ctx.output, t, ctx.run_date), "rows": ctx.tables.get(t)}
                   for t in published},
        "graph_dir": ctx.graph_dir,
        "model": model,
        "counts": ctx.counts,
        "stage_seconds": ctx.stage_seconds,
        "round_seconds": ctx.round_seconds,
        "seconds": round(seconds, 3),
        "config": ctx.cfg.to_dict(),
        "config_sha256": ctx.cfg.digest(),
        "spark_version": ctx.spark.version,
        "engine": resolve_engine(ctx.spark, ctx.cfg.graph.engine),
    }


def _log_summary(manifest: dict[str, Any]) -> None:
    rows = [(s, f"{secs:8.2f}s") for s, secs in manifest["stage_seconds"].items()]
    width = max((len(s) for s, _ in rows), default=5)
    lines = [f"{'stage':<{width}}  seconds"] + [f"{s:<{width}}  {t}" for s, t in rows]
    lines.append(f"{'total':<{width}}  {manifest['seconds']:8.2f}s")
    for table, info in manifest["tables"].items():
        lines.append(f"table {table}: {info['rows']} rows")
    log.info("run %s summary:\n%s", manifest["run_id"], "\n".join(lines))


def stage_df(ctx: RunContext, df: DataFrame, table: str) -> None:
    """Stage one output table for this run (published only after all stages succeed)."""
    publish.stage_table(df, ctx.output, ctx.run_id, table, ctx.run_date)
    rows = ctx.spark.read.parquet(publish.staged_dir(ctx.output, ctx.run_id, table, ctx.run_date)).count()
    ctx.tables[table] = rows
    ctx.counts[f"{table}_rows"] = rows
    log.info("staged %s: %d rows", table, rows)
    ctx.fault(f"table:{table}")


def read_output(spark: SparkSession, output: str, table: str, run_date: str | None = None) -> DataFrame:
    """Read a published output table (all run dates, or one)."""
    path = publish.table_dir(output, table)
    if not io.path_exists(path):
        raise InvalidInputError(f"no published table {table} under {output}")
    df = spark.read.parquet(path)
    return df.filter(F.col("run_date") == F.lit(run_date).cast("date")) if run_date else df
