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

Resume is keyed by the inputs, not only by the run id. Every stage records, when it starts and when it
completes, a fingerprint of what it reads (:func:`stage_inputs`: the config digest, the listing of the
raw tables or of the graph directory, the model card's sha256). A rerun skips a completed stage, or
continues a started one (propagation rounds), only if that fingerprint is unchanged. Otherwise it
logs a WARNING naming what changed, discards that stage's state (marker, round state, staged tables)
and recomputes it; later stages then see changed inputs too and recompute as well. Discarding rather
than refusing was chosen because a scheduler's rerun after a fixed upstream table is exactly the case
it must handle without a person; the manifest lists what was recomputed and why (``recomputed``).

Fault injection for tests is ``LEPTON_FAIL_AFTER=<point>`` (:mod:`lepton_spark.pipeline.faults`).

Between two table swaps of one publish a reader of ``outputs/`` can see the new partition of one table
next to the previous run's partition of another. Each partition names the run that wrote it
(``_LEPTON_RUN``), and the manifest, written after the last swap, lists every table with its run id,
row count and content fingerprint: a reader that needs one consistent set of tables reads the
manifest first, or reads through :func:`read_output` with ``consistent=True``.

The manifest describes the date's outputs, not only the last command: a run that publishes some tables
of a date (a subcommand such as ``lepton-spark links``, or a nightly with fewer stages) keeps the
previous manifest's entries for the tables it did not publish, as long as those partitions are still
the ones that manifest named (same run id and write token); the manifest lists them under
``earlier_tables``. Without that, ``read_output(consistent=True)`` of the nightly's tables would fail
after any later single-stage command of the same date.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lepton_spark import logs, storage
from lepton_spark.config import DEFAULT_SAMPLE_DIR, Config
from lepton_spark.errors import InvalidInputError, UsageError
from lepton_spark.pipeline import publish
from lepton_spark.pipeline.context import RunContext, stage_df
from lepton_spark.pipeline.faults import InjectedFault
from lepton_spark.pipeline.fingerprint import inputs_fingerprint, table_fingerprint

log = logging.getLogger(__name__)

STAGES = ("build", "train", "propagate", "analytics", "embed", "links", "report")
STAGE_TABLES = {
    "propagate": ("embeddings", "predictions"),
    "analytics": ("pagerank", "components", "communities"),
    "embed": ("walk_embeddings",),
    "links": ("edge_scores", "link_predictions"),
}

__all__ = ["STAGES", "InjectedFault", "RunContext", "read_output", "run_pipeline", "stage_df", "stage_inputs"]


def default_run_id(cfg: Config, run_date: str) -> str:
    return f"{run_date}-{cfg.digest()[:10]}"


def run_pipeline(spark: SparkSession, cfg: Config, *, output: str, run_date: str, stages: list[str] | None = None,
                 run_id: str | None = None, resume: bool | None = None, graph_dir: str | None = None,
                 model_dir: str | None = None) -> dict[str, Any]:
    """Run ``stages`` for ``run_date``; returns the manifest (also written to runs/<d>/_manifest.json).

    Examples
    --------
    The analytics stage alone on the bundled Cora sample (the default ``pipeline.graph_dir``):

    >>> import shutil, tempfile
    >>> from lepton_spark.config import load_config
    >>> out = tempfile.mkdtemp()
    >>> manifest = run_pipeline(spark, load_config(), output=out, run_date="2026-01-01", stages=["analytics"])
    >>> sorted((t, info["rows"]) for t, info in manifest["tables"].items())
    [('communities', 2708), ('components', 2708), ('pagerank', 2708)]
    >>> shutil.rmtree(out)
    """
    stages = list(stages or cfg.pipeline.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown pipeline stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
    t_run = time.perf_counter()
    from lepton_spark.graph.engine import resolve_engine

    # checked before any stage: an unavailable `graph.engine: graphframes` is a configuration error
    # (exit 2) that must not surface only after tables were staged. The nightly's stages run on the
    # block engine either way; the manifest records what the GraphFrame API would use in this session.
    engine = resolve_engine(spark, cfg.graph.engine)
    ctx = RunContext(spark=spark, cfg=cfg, output=output.rstrip("/"), run_date=run_date,
                     run_id=run_id or default_run_id(cfg, run_date),
                     resume=cfg.pipeline.resume if resume is None else resume)
    ctx.graph_dir = graph_dir or cfg.pipeline.graph_dir or str(DEFAULT_SAMPLE_DIR)
    ctx.model_dir = model_dir or cfg.pipeline.model_dir
    ctx.engine = engine
    ctx.stages = stages
    if not ctx.resume and storage.path_exists(ctx.work_dir):
        storage.delete_path(ctx.work_dir)
        publish.clean_staging(ctx.output, ctx.run_id)
    log.info("run %s: date %s, stages %s, output %s", ctx.run_id, run_date, ",".join(stages), ctx.output)
    from lepton_spark.pipeline import stages as impl
    from lepton_spark.pipeline.links import links_stage

    handlers = {"build": impl.build_stage, "train": impl.train_stage, "propagate": impl.propagate_stage,
                "analytics": impl.analytics_stage, "embed": impl.embed_stage, "links": links_stage}
    from lepton_spark.graph.propagation import OperatorCache

    ctx.operators = OperatorCache()
    try:
        _run_stages(ctx, stages, handlers)
    finally:
        ctx.operators.close()

    # publish every staged table, then the manifest (last)
    logs.set_stage("publish")
    t0 = time.perf_counter()
    published = _publish(ctx, stages)
    ctx.stage_seconds["publish"] = round(time.perf_counter() - t0, 3)
    manifest = _manifest(ctx, stages, published, time.perf_counter() - t_run)
    earlier = _earlier_tables(ctx, published)
    manifest["tables"] = {**earlier, **manifest["tables"]}
    manifest["earlier_tables"] = sorted(earlier)
    storage.write_json(storage.join_path(ctx.run_dir, "_manifest.json"), manifest)
    publish.clean_staging(ctx.output, ctx.run_id)
    if storage.path_exists(ctx.work_dir):
        storage.delete_path(ctx.work_dir)
    storage.remove_if_empty(storage.join_path(ctx.output, "_work"))
    _remove_stale_temp(ctx.run_dir)
    if "report" in stages:
        logs.set_stage("report")
        t0 = time.perf_counter()
        from lepton_spark.pipeline.report import write_report

        write_report(spark, ctx.run_dir, output=ctx.output)
        manifest["report_seconds"] = round(time.perf_counter() - t0, 3)
    logs.set_stage(None)
    _log_summary(manifest)
    return manifest


def stage_inputs(ctx: RunContext, stage: str) -> dict[str, Any]:
    """Fingerprint of what ``stage`` reads: the config digest, and the data it starts from.

    build: the raw vertex and edge tables (or, without raw inputs, the graph directory); train: the
    graph (or, with training disabled, the model it reuses); propagate: the graph and the model card
    (whose weights sha256 and hyper-parameter digest it carries); links: the same; analytics, embed:
    the graph.
    """
    out: dict[str, Any] = {"config": ctx.cfg.digest()}
    b = ctx.cfg.build
    if stage == "build" and b.vertices and b.edges:
        out["raw_vertices"] = {"path": b.vertices, "sha256": inputs_fingerprint(b.vertices)}
        out["raw_edges"] = {"path": b.edges, "sha256": inputs_fingerprint(b.edges)}
    elif not (stage == "train" and not ctx.cfg.train.enabled):
        out["graph"] = {"path": ctx.graph_dir, "sha256": inputs_fingerprint(ctx.graph_dir)}
    if stage in ("propagate", "links") or (stage == "train" and not ctx.cfg.train.enabled):
        card = storage.join_path(ctx.model_dir, "model.json") if ctx.model_dir else ""
        sha = hashlib.sha256(storage.read_text(card).encode()).hexdigest() if card and storage.path_exists(card) else "missing"
        out["model"] = {"path": ctx.model_dir, "sha256": sha}
    return out


def _changed(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Names of the inputs whose fingerprint differs (all of them when nothing was recorded)."""
    if before is None:
        return sorted(now)
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


def _discard(ctx: RunContext, stage: str) -> None:
    """Remove a stage's state of an earlier attempt: its marker, its round state, its staged tables."""
    for path in (storage.join_path(ctx.work_dir, "stages", f"{stage}.json"), storage.join_path(ctx.work_dir, stage)):
        if storage.path_exists(path):
            storage.delete_path(path)
    for table in STAGE_TABLES.get(stage, ()):
        staged = publish.staged_dir(ctx.output, ctx.run_id, table, ctx.run_date)
        if storage.path_exists(staged):
            storage.delete_path(staged)


def _run_stages(ctx: RunContext, stages: list[str], handlers: dict[str, Any]) -> None:
    """Run (or, on resume with unchanged inputs, skip) every stage but report; see the module docstring."""
    for stage in [s for s in stages if s != "report"]:
        logs.set_stage(stage)
        marker = storage.join_path(ctx.work_dir, "stages", f"{stage}.json")
        started = storage.join_path(ctx.work_dir, "stages", f"{stage}.started.json")
        inputs = stage_inputs(ctx, stage)
        ctx.inputs[stage] = inputs
        if ctx.resume and (storage.path_exists(marker) or storage.path_exists(started)):
            done = json.loads(storage.read_text(marker)) if storage.path_exists(marker) else None
            before = (done or json.loads(storage.read_text(started))).get("inputs")
            changed = _changed(before, inputs)
            if changed:
                what = ", ".join(k if k == "config" else f"{k} {(inputs.get(k) or {}).get('path', '(no longer read)')}"
                                 for k in changed)
                log.warning("stage %s: inputs changed since run %s was interrupted: %s; discarding its "
                            "state and recomputing", stage, ctx.run_id, what)
                ctx.recomputed[stage] = changed
                _discard(ctx, stage)
            elif done is not None:
                ctx.stage_seconds[stage] = done.get("seconds", 0.0)
                ctx.counts.update(done.get("counts", {}))
                ctx.round_seconds.update(done.get("rounds", {}))
                ctx.graph_dir = done.get("graph_dir", ctx.graph_dir)
                ctx.model_dir = done.get("model_dir", ctx.model_dir)
                ctx.resumed.append(stage)
                log.info("stage %s: already completed in run %s with the same inputs, skipped (resume)",
                         stage, ctx.run_id)
                continue
        storage.write_json(started, {"inputs": inputs})
        t0 = time.perf_counter()
        log.info("stage %s: start", stage)
        handlers[stage](ctx)
        secs = round(time.perf_counter() - t0, 3)
        ctx.stage_seconds[stage] = secs
        storage.write_json(marker, {"seconds": secs, "counts": ctx.counts, "graph_dir": ctx.graph_dir,
                               "model_dir": ctx.model_dir, "inputs": inputs,
                               "rounds": {k: v for k, v in ctx.round_seconds.items() if k.startswith(stage)}})
        log.info("stage %s: done in %.2fs", stage, secs)
        ctx.fault(f"stage:{stage}")


def _publish(ctx: RunContext, stages: list[str]) -> list[str]:
    """Swap in every staged table of ``stages``; returns the tables this run published.

    A table whose stage was skipped on resume and whose partition already names this run (swapped in
    before the interruption) counts as published: the manifest must list it too.
    """
    published = []
    for stage in stages:
        for table in STAGE_TABLES.get(stage, ()):
            if publish.is_staged(ctx.output, ctx.run_id, table, ctx.run_date):
                publish.publish_table(ctx.output, ctx.run_id, table, ctx.run_date)
                published.append(table)
                ctx.fault(f"publish:{table}")
            elif stage in ctx.resumed and publish.published_by(ctx.output, table, ctx.run_date) == ctx.run_id:
                log.info("table %s: already published by run %s before the interruption", table, ctx.run_id)
                published.append(table)
    return published


def _remove_stale_temp(run_dir: str) -> None:
    """Hidden leftovers of interrupted writes under runs/<d>/ (a build's staging dir, temp files)."""
    if not storage.is_dir(run_dir):
        return
    for path in storage.listdir(run_dir):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") and (".staging-" in name or ".old-" in name or name.endswith(".tmp")):
            storage.delete_path(path)
            log.info("removed %s (left by an interrupted earlier attempt)", path)


def _manifest(ctx: RunContext, stages: list[str], published: list[str], seconds: float) -> dict[str, Any]:
    model = {}
    card_path = storage.join_path(ctx.model_dir, "model.json") if ctx.model_dir else ""
    if card_path and storage.path_exists(card_path):
        card = json.loads(storage.read_text(card_path))
        model = {"dir": ctx.model_dir, "sha256": (card.get("weights") or {}).get("sha256"),
                 "card_sha256": card.get("card_sha256"),
                 "type": card.get("model_type"), "test_acc": ((card.get("metrics") or {}).get("final") or {}).get("test_acc"),
                 "trained_by_this_run": "train" in stages and ctx.cfg.train.enabled}
    return {
        "run_id": ctx.run_id,
        "run_date": ctx.run_date,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": stages,
        # true rows and a content fingerprint read back from the published files (also after a resume)
        "tables": {t: _table_entry(ctx, t) for t in published},
        "resumed_stages": ctx.resumed,
        "recomputed": ctx.recomputed,
        "stage_inputs": ctx.inputs,
        "graph_dir": ctx.graph_dir,
        "model": model,
        "counts": ctx.counts,
        "stage_seconds": ctx.stage_seconds,
        "round_seconds": ctx.round_seconds,
        "seconds": round(seconds, 3),
        "config": ctx.cfg.to_dict(),
        "config_sha256": ctx.cfg.digest(),
        "spark_version": ctx.spark.version,
        "engine": ctx.engine,
    }


def _earlier_tables(ctx: RunContext, published: list[str]) -> dict[str, dict[str, Any]]:
    """The previous manifest's entries of this date for tables this run did not publish, where the
    published partition is still the one that manifest named (module docstring); a stale entry (the
    partition was replaced or removed since) is dropped with a warning."""
    path = storage.join_path(ctx.run_dir, "_manifest.json")
    if not storage.path_exists(path):
        return {}
    try:
        previous = json.loads(storage.read_text(path))
    except ValueError as exc:
        log.warning("the previous manifest %s is not valid JSON (%s): its tables are not carried over", path, exc)
        return {}
    kept = {}
    for table, entry in sorted((previous.get("tables") or {}).items()):
        if table in published:
            continue
        named = (entry.get("run_id"), entry.get("write_token"))
        if publish.publication(ctx.output, table, ctx.run_date) == named:
            kept[table] = entry
        else:
            log.warning("table %s: the previous manifest names run %s's partition, which is no longer the published "
                        "one; not carried over", table, named[0])
    if kept:
        log.info("manifest: %d tables of earlier runs of %s carried over (%s)", len(kept), ctx.run_date,
                 ", ".join(kept))
    return kept


def _table_entry(ctx: RunContext, table: str) -> dict[str, Any]:
    """A published table in the manifest: path, the run and write that published it, and its true rows
    and content fingerprint read back from the files (so also right after a resume)."""
    path = publish.partition_dir(ctx.output, table, ctx.run_date)
    run_id, token = publish.publication(ctx.output, table, ctx.run_date) or (None, "")
    return {"path": path, "run_id": run_id, "write_token": token, **table_fingerprint(path)}


def published_tables(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's table entries that its own run published (without ``earlier_tables``)."""
    earlier = set(manifest.get("earlier_tables") or ())
    return {t: info for t, info in (manifest.get("tables") or {}).items() if t not in earlier}


def _log_summary(manifest: dict[str, Any]) -> None:
    rows = [(s, f"{secs:8.2f}s") for s, secs in manifest["stage_seconds"].items()]
    width = max((len(s) for s, _ in rows), default=5)
    lines = [f"{'stage':<{width}}  seconds"] + [f"{s:<{width}}  {t}" for s, t in rows]
    lines.append(f"{'total':<{width}}  {manifest['seconds']:8.2f}s")
    for table, info in published_tables(manifest).items():
        lines.append(f"table {table}: {info['rows']} rows")
    log.info("run %s summary:\n%s", manifest["run_id"], "\n".join(lines))


def read_output(spark: SparkSession, output: str, table: str, run_date: str | None = None, *,
                consistent: bool = False) -> DataFrame:
    """Read a published output table (all run dates, or one).

    With ``consistent=True`` (needs ``run_date``) the partition must belong to the run that the
    date's manifest names: a reader that runs between two table swaps of a later run of the same
    date (even a rerun under the same run id: the write token differs), or after a crash in that
    window, gets an :class:`InvalidInputError` (retry later) instead
    of mixing one run's table with another run's.
    """
    path = publish.table_dir(output, table)
    if not storage.path_exists(path):
        raise InvalidInputError(f"no published table {table} under {output}")
    if consistent:
        if not run_date:
            raise UsageError("read_output(consistent=True) needs a run_date")
        manifest_path = storage.join_path(output, "runs", run_date, "_manifest.json")
        if not storage.path_exists(manifest_path):
            raise InvalidInputError(f"no manifest for {run_date} under {output}: the run did not complete")
        entry = json.loads(storage.read_text(manifest_path)).get("tables", {}).get(table) or {}
        have = publish.publication(output, table, run_date)
        if have is None or (entry.get("run_id"), entry.get("write_token")) != have:
            raise InvalidInputError(f"{table} for {run_date} is not the partition the manifest names (written by "
                                    f"{have[0] if have else 'no run'}): a run is being published; retry later")
    df = spark.read.parquet(path)
    return df.filter(F.col("run_date") == F.lit(run_date).cast("date")) if run_date else df
