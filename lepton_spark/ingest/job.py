"""``lepton-spark build``: raw vertex and edge tables -> validated, normalised graph, atomically.

Validation rules (each has a name, a count in the build report, and a quarantine table
``quarantine/<rule>`` holding the rejected rows as read plus a ``reason`` column). A row is rejected by
the first rule it fails, in this order:

vertices: ``null_id`` (null or blank id) -> ``duplicate_vertex`` (the same id again: policy ``fail``
stops the build; ``keep_first`` keeps the first row in input order) -> ``bad_features`` (null, a length
other than the most common one, a NaN/inf/non-numeric entry) -> ``bad_label`` (not an integer, negative,
or >= ``build.num_classes`` when that is set) -> ``bad_split`` (not train/val/test; case-insensitive,
"validation"/"valid" mean val; blank means none).

edges: ``null_endpoint`` (null or blank src/dst) -> ``bad_weight`` (null, NaN, inf, negative or
non-numeric weight, when the input has a weight column) -> ``dangling_edge`` (src or dst is not an
accepted vertex: vertices rejected above take their edges with them).

If the rejected fraction of the vertex rows or of the edge rows exceeds
``build.max_quarantine_fraction``, the build fails (exit 3) naming the rule and its count, and
publishes nothing. Everything is written to a staging directory beside the output and renamed into
place at the end, so the output is the complete new build or the previous one, never a mix.

A build killed midway (no ``except`` clause runs on SIGKILL or a lost node) can leave, beside the
output, its staging directory ``.<name>.staging-<id>`` and, if it died between the two renames of the
swap, the previous output moved aside as ``.<name>.old-<id>`` with the output itself absent. The next
build of the same output cleans up first (:func:`remove_leftovers`): a staging directory is incomplete
and is deleted; an aside directory is a complete earlier build, so with no output in place the newest
one is moved back (readers get the last good graph while the new build runs), and the others are
deleted. One build at a time per output: a second concurrent build would delete the first one's staging.

Raw ids are compared in the type the inputs share (:func:`key_kind`): as longs when the id, src and
dst columns are all integral (no string casts on the hot path), as doubles when all are numeric (a
float id 1.0 matches an integer endpoint 1; a NaN id is a null id), otherwise as trimmed strings (so
``7`` in a CSV edge file matches the integer id 7). They are mapped to dense longs
(:mod:`lepton_spark.ingest.ids`); ``mapping/`` keeps ``(id, raw_id)``. Up to ``build.broadcast_ids_max``
vertices the id map is broadcast to the edge partitions, so the lookups shuffle no edge.
"""

from __future__ import annotations

import logging
import re
import string
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lepton_spark import storage
from lepton_spark.config import BuildConfig
from lepton_spark.errors import InvalidInputError, UsageError
from lepton_spark.ingest.features import FLOAT_ARRAY, features_column, try_float, try_int
from lepton_spark.ingest.ids import dense_ids, dense_ids_on_driver
from lepton_spark.ingest.transform import normalize_features, transform_edges
from lepton_spark.session import shuffle_partitions

log = logging.getLogger(__name__)

VERTEX_RULES = ("null_id", "duplicate_vertex", "bad_features", "bad_label", "bad_split")
EDGE_RULES = ("null_endpoint", "bad_weight", "dangling_edge")
SPLITS = ("train", "val", "test")
#: the edge merge's reducers hold their partition in numpy (~32 bytes a row): at most this many rows each
MERGE_ROWS_PER_PARTITION = 4_000_000


class BuildFailed(InvalidInputError):
    """The input failed validation (too much quarantined, duplicate ids under policy fail, ...)."""


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c.cast("string")) == "")


INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


def key_kind(*types: T.DataType) -> str:
    """How raw ids are compared: ``long`` when the id, src and dst columns are all integral, ``double``
    when all are numeric (so a float id 1.0 matches an integer endpoint 1), else ``string``."""
    if all(isinstance(t, INTEGRAL) for t in types):
        return "long"
    if all(isinstance(t, T.NumericType) for t in types):
        return "double"
    return "string"


def _key(c: Column, kind: str = "string") -> Column:
    """The comparable key of a raw id (null for a blank id); see :func:`key_kind`."""
    if kind == "long":
        return c.cast("long")
    if kind == "double":
        d = c.cast("double")
        return F.when(~F.isnan(d), d)
    return F.when(~_blank(c), F.trim(c.cast("string")))


def _count(df: DataFrame, what: str) -> int:
    try:
        return df.count()
    except Exception as exc:  # noqa: BLE001 - corrupt input surfaces as any Spark error at the first action
        raise InvalidInputError(f"{what}: cannot read: {storage.first_line(exc)}") from None


def _count_edges(cfg: BuildConfig, raw_e: DataFrame) -> int:
    """The raw edge rows: a local Parquet table's from its footers (a Spark count cost a job and its
    planning, ~0.3-0.5 s of a cold build); other formats and file systems, and files pyarrow cannot
    read, through Spark (where an unreadable table is reported)."""
    if cfg.format == "parquet" and storage.is_local_path(cfg.edges):
        import pyarrow.dataset as ds

        try:
            fs, path = storage.filesystem(cfg.edges)
            return int(ds.dataset(path, filesystem=fs, format="parquet").count_rows())
        except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
            log.info("build: counting %s with pyarrow failed (%s); counting through Spark", cfg.edges,
                     storage.first_line(exc))
    return _count(raw_e, f"edges {cfg.edges}")


def _require(df: DataFrame, cols: list[str], where: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise InvalidInputError(f"{where}: required column {c!r} not found (columns: {', '.join(df.columns)})")


def _vertex_summary(v: DataFrame, cfg: BuildConfig, has_features: bool, where: str) -> dict[str, int | None]:
    """Everything the vertex validation needs to know, in one aggregate over the vertex rows.

    ``n`` rows; ``keys`` non-null keys and ``distinct`` distinct ones (``keys - distinct`` repeated ids);
    the shortest and longest feature length (null features left out), how many rows have null features
    and how many a null, NaN or infinite entry; and, per rule that reads neither the features nor the
    other rows (``null_id``, ``bad_label``, ``bad_split``), how many rows it rejects first. Those
    rule counts are the build's counts whenever no id repeats and no features are bad -- the usual
    night, which so reads the vertex table once here instead of four times (row count, feature
    lengths, repeated ids, rule counts: 9 of the 25 s a cold build took at 100k vertices).
    """
    f = F.col("_features")
    size = F.when(f.isNotNull(), F.size(f))
    one = F.lit(1)
    aggs = [F.count(one).alias("n"), F.count("_key").alias("keys"), F.count_distinct("_key").alias("distinct")]
    if has_features:
        aggs += [F.min(size).alias("min_dim"), F.max(size).alias("max_dim"),
                 F.count(F.when(f.isNull(), one)).alias("null_features"),
                 F.count(F.when(_nonfinite_entry(f), one)).alias("nonfinite")]
    r = F.col("_reason")
    aggs += [F.count(F.when(r == rule, one)).alias(rule) for rule in ("null_id", "bad_label", "bad_split")]
    try:
        row = _vertex_reasons(v, cfg, None, 0, has_duplicates=False).agg(*aggs).first()
    except Exception as exc:  # noqa: BLE001 - corrupt input surfaces as any Spark error at the first action
        raise InvalidInputError(f"{where}: cannot read: {storage.first_line(exc)}") from None
    return row.asDict()


def _vertex_reasons(v: DataFrame, cfg: BuildConfig, feats: Column | None, dim: int,
                    has_duplicates: bool = True) -> DataFrame:
    """Add ``_reason`` (first failed vertex rule, or null) and the cleaned columns.

    ``feats`` None leaves the ``bad_features`` rule out (no feature column, or :func:`_feature_stats`
    found no row that fails it: then the reasons never read the features)."""
    if has_duplicates:
        dup = F.row_number().over(Window.partitionBy("_key").orderBy("_order")) > 1
        v = v.withColumn("_dup", F.when(F.col("_key").isNull(), F.lit(False)).otherwise(dup))
    else:
        v = v.withColumn("_dup", F.lit(False))
    reason = F.when(F.col("_key").isNull(), F.lit("null_id")).when(F.col("_dup"), F.lit("duplicate_vertex"))
    if feats is not None:
        bad = (
            F.col("_features").isNull()
            | (F.size("_features") != F.lit(dim))
            | _nonfinite_entry(F.col("_features"))
        )
        reason = reason.when(bad, F.lit("bad_features"))
    if cfg.label_col in v.columns:
        raw = F.col(cfg.label_col)
        bad_label = ~_blank(raw) & (
            F.col("_label").isNull()
            | (F.col("_label") < 0)
            | ((F.lit(cfg.num_classes) > 0) & (F.col("_label") >= F.lit(cfg.num_classes)))
        )
        reason = reason.when(bad_label, F.lit("bad_label"))
    if cfg.split_col in v.columns:
        reason = reason.when(~_blank(F.col(cfg.split_col)) & F.col("_split").isNull(), F.lit("bad_split"))
    return v.withColumn("_reason", reason)


def _nonfinite_entry(features: Column) -> Column:
    """True when a (non-null) ``array<float>`` holds a null, NaN or infinite entry; null for a null array.

    Built from ``array_contains`` (NaN-safe equality: NaN is found; a null entry and no NaN give null),
    ``array_max`` (+inf) and ``array_min`` (-inf), which Spark compiles, instead of ``exists`` with a
    lambda, which it interprets entry by entry (1M x 64 features: ~0.4 s of the vertex pass)."""
    has_nan = F.array_contains(features, F.lit(float("nan")).cast("float"))
    inf = F.lit(float("inf")).cast("float")
    bad = has_nan.isNull() | has_nan | (F.array_max(features) == inf) | (F.array_min(features) == -inf)
    return F.when(features.isNotNull(), bad)


def _feature_stats(v: DataFrame) -> tuple[int, int]:
    """``(dim, bad)`` in one pass: the most common feature length (ties to the shorter one) and how
    many rows fail ``bad_features`` for it (null, another length, a null, NaN or infinite entry).

    Only run when the features have more than one length (:func:`_vertex_summary` settles the rest).
    With ``bad == 0`` the rule rejects nothing and is left out of the reasons, so neither the
    rejection count nor the vertices' write evaluates it again (1M x 64 features: about 2 s).
    """
    rows = v.groupBy(F.col("_features").isNull().alias("null"), F.size("_features").alias("d"),
                     F.coalesce(_nonfinite_entry(F.col("_features")), F.lit(False)).alias("bad")).count().collect()
    lengths: dict[int, int] = {}
    for r in rows:
        if not r["null"]:
            lengths[int(r["d"])] = lengths.get(int(r["d"]), 0) + int(r["count"])
    dim = max(lengths.items(), key=lambda kv: (kv[1], -kv[0]))[0] if lengths else 0
    return dim, sum(int(r["count"]) for r in rows if r["null"] or int(r["d"]) != dim or r["bad"])


def _write(df: DataFrame, path: str) -> None:
    df.write.mode("overwrite").parquet(path)


#: column types the vertex table's task writer takes as they are (other passthrough columns: Spark writes)
_TASK_WRITTEN = (T.NumericType, T.StringType, T.BooleanType, T.BinaryType, T.DateType, T.TimestampType)


def _write_vertices(spark: SparkSession, vertices: DataFrame, path: str) -> None:
    """Write the built vertices: on a local master to a local path, by the tasks that compute them
    with pyarrow (:func:`~lepton_spark.task_writes.write_in_tasks`); else with Spark's writer.

    Spark's Parquet writer goes through the feature arrays value by value: at 1M x 64 it took about
    5.5 s of a 9.3 s vertex pass that computed its rows in 3.8 s (100k: 1.1 s of 1.6 s); the task
    writer's Arrow batches cost about 3 s there (100k: 0.6 s)."""
    from lepton_spark import task_writes

    plain = all(isinstance(f.dataType, _TASK_WRITTEN) or (isinstance(f.dataType, T.ArrayType) and isinstance(
        f.dataType.elementType, T.FloatType | T.DoubleType)) for f in vertices.schema.fields)
    if not (plain and task_writes.tasks_share_disk(spark, path)):
        _write(vertices, path)
        return
    from pyspark.sql.pandas.types import to_arrow_schema

    empty = to_arrow_schema(vertices.schema).empty_table()
    task_writes.write_in_tasks(vertices, _batches, [task_writes.TaskOutput(path, _table)], empty)


def _write_mapping(mapped: DataFrame, path: str) -> None:
    """Write ``mapping/`` (id, raw_id): with pyarrow when the driver numbered the ids itself
    (:func:`~lepton_spark.ingest.ids.dense_ids_on_driver`: it holds the rows) and ``path`` is local,
    else with Spark (a job and its planning, ~0.3 s of a cold build, for rows already in memory)."""
    held = storage.local_rows(mapped)
    if held is not None and storage.is_local_path(path):
        storage.write_rows(held.select(["id", "_key"]).rename_columns(["id", "raw_id"]), path)
        return
    _write(mapped.select("id", F.col("_key").alias("raw_id")), path)


def _batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield from batches


def _table(t: pa.Table) -> pa.Table:
    return t


def build_graph(spark: SparkSession, cfg: BuildConfig, output: str) -> dict[str, Any]:
    """Run the whole build (see module docstring); returns the build report (also written as JSON)."""
    t0 = time.perf_counter()
    if not cfg.vertices or not cfg.edges:
        raise UsageError("build needs --vertices and --edges (or build.vertices / build.edges in the config)")
    if not output:
        raise UsageError("build needs --output")
    remove_leftovers(output)
    opts = {"csv_header": cfg.csv_header, "csv_delimiter": cfg.csv_delimiter}
    raw_v = storage.read_table(spark, cfg.vertices, cfg.format, what="vertices", **opts)
    raw_e = storage.read_table(spark, cfg.edges, cfg.format, what="edges", **opts)
    _require(raw_v, [cfg.id_col], f"vertices {cfg.vertices}")
    _require(raw_e, [cfg.src_col, cfg.dst_col], f"edges {cfg.edges}")
    if cfg.weight_col in raw_e.columns and not isinstance(
        raw_e.schema[cfg.weight_col].dataType, T.NumericType | T.StringType
    ):
        raise InvalidInputError(f"edges {cfg.edges}: weight column {cfg.weight_col!r} is "
                                f"{raw_e.schema[cfg.weight_col].dataType.simpleString()}, not numeric")
    feats = features_column(raw_v, cfg.features_col, cfg.feature_cols, f"vertices {cfg.vertices}")
    # ---- vertices
    kind = key_kind(raw_v.schema[cfg.id_col].dataType, raw_e.schema[cfg.src_col].dataType,
                    raw_e.schema[cfg.dst_col].dataType)
    v = raw_v.withColumn("_order", F.monotonically_increasing_id()).withColumn(
        "_key", _key(F.col(cfg.id_col), kind))
    v = v.withColumn("_features", feats if feats is not None else F.lit(None).cast(FLOAT_ARRAY))
    if cfg.label_col in raw_v.columns:
        v = v.withColumn("_label", try_int(F.col(cfg.label_col)))
    if cfg.split_col in raw_v.columns:
        # ASCII lower case: the accepted names are ASCII, and no other character lower-cases to one of
        # their letters, so this accepts what F.lower does -- without its first call's ICU set-up
        # (1.4 s of a cold JVM, for a handful of distinct values)
        s = F.translate(F.trim(F.col(cfg.split_col).cast("string")), string.ascii_uppercase, string.ascii_lowercase)
        s = F.when(s.isin("validation", "valid"), F.lit("val")).otherwise(s)
        v = v.withColumn("_split", F.when(s.isin(*SPLITS), s))
    summary = _vertex_summary(v, cfg, feats is not None, f"vertices {cfg.vertices}")
    n_in = int(summary["n"])
    if n_in == 0:
        raise InvalidInputError(f"vertices {cfg.vertices}: the table is empty")
    m_in = _count_edges(cfg, raw_e)
    if m_in == 0 and cfg.require_edges:
        raise InvalidInputError(f"edges {cfg.edges}: the table is empty (set build.require_edges: false to allow)")
    if feats is None:
        dim, bad_features = 0, 0
    elif summary["min_dim"] == summary["max_dim"]:  # one length (or none: every row's features are null)
        dim = int(summary["min_dim"] or 0)
        bad_features = int(summary["null_features"]) + int(summary["nonfinite"])
    else:  # rows of several lengths: the most common one is the graph's
        dim, bad_features = _feature_stats(v)
    duplicates = int(summary["keys"]) - int(summary["distinct"])
    v = _vertex_reasons(v, cfg, feats if bad_features else None, dim, has_duplicates=duplicates > 0)
    if duplicates:  # the window's choice is computed once and reused by every pass below
        v = v.localCheckpoint(eager=True)
    # the rejected rows are few (at most build.max_quarantine_fraction of a publishable build): they are
    # kept for the counts and the quarantine tables, and the accepted rows are read again where needed --
    # cheaper than caching the whole table with its features (10 of 60 s at 1M vertices). When no rule
    # that reads the features rejects anything, the reasons are counted without reading them, and a
    # clean table (the usual night) skips the rejected rows' pass altogether.
    if bad_features or duplicates:
        rejected_v = v.filter(F.col("_reason").isNotNull()).localCheckpoint(eager=True)
        v_counts = _reason_counts(rejected_v, n_in)
    else:  # no repeated id, no bad features: the summary counted every rule that can reject a row
        v_counts = {rule: int(summary[rule]) for rule in ("null_id", "bad_label", "bad_split") if summary[rule]}
        v_counts[None] = n_in - sum(v_counts.values())
        rejected = v.filter(F.col("_reason").isNotNull())
        rejected_v = rejected.localCheckpoint(eager=True) if len(v_counts) > 1 else rejected
    log.info("build: %d vertex rows validated in %.1fs", n_in, time.perf_counter() - t0)
    if v_counts.get("duplicate_vertex") and cfg.duplicate_vertices == "fail":
        example = rejected_v.filter(F.col("_reason") == "duplicate_vertex").select("_key").first()
        raise BuildFailed(f"vertices {cfg.vertices}: {v_counts['duplicate_vertex']} duplicate vertex ids "
                          f"(e.g. {example['_key']!r}); set build.duplicate_vertices: keep_first to quarantine them")
    good_v = v.filter(F.col("_reason").isNull())
    n_kept = v_counts.get(None, 0)
    if n_kept == 0:
        raise BuildFailed(f"vertices {cfg.vertices}: no valid vertex rows ({_describe(v_counts)})")

    # ---- edges
    e = raw_e.withColumn("_order", F.monotonically_increasing_id())
    has_w = cfg.weight_col in raw_e.columns
    w = try_float(F.col(cfg.weight_col)) if has_w else F.lit(1.0)
    e = e.withColumn("_w", w).withColumn("_src", _key(F.col(cfg.src_col), kind)) \
        .withColumn("_dst", _key(F.col(cfg.dst_col), kind))
    keyed = good_v.select("_key", F.col(cfg.id_col).alias("_raw"))
    if n_kept <= cfg.broadcast_ids_max and isinstance(raw_v.schema[cfg.id_col].dataType, (*INTEGRAL, T.StringType)):
        mapped = dense_ids_on_driver(keyed, "_raw")  # the map is broadcast to the edges below anyway
    else:
        mapped = dense_ids(keyed, "_raw", shuffle_partitions(spark))
    ks = mapped.select(F.col("_key").alias("_src"), F.col("id").alias("_sid"))
    kd = mapped.select(F.col("_key").alias("_dst"), F.col("id").alias("_did"))
    if n_kept <= cfg.broadcast_ids_max:  # the id map rides to every edge partition: no edge shuffle
        ks, kd = F.broadcast(ks), F.broadcast(kd)
    e = e.join(ks, "_src", "left").join(kd, "_dst", "left")
    reason = F.when(F.col("_src").isNull() | F.col("_dst").isNull(), F.lit("null_endpoint"))
    if has_w:
        bad_w = F.col("_w").isNull() | F.isnan("_w") | (F.abs("_w") == F.lit(float("inf"))) | (F.col("_w") < 0)
        reason = reason.when(bad_w, F.lit("bad_weight"))
    reason = reason.when(F.col("_sid").isNull() | F.col("_did").isNull(), F.lit("dangling_edge"))
    e = e.withColumn("_reason", reason)
    rejected_e = e.filter(F.col("_reason").isNotNull()).select(
        *[F.col(f"`{c}`") for c in raw_e.columns], "_reason").localCheckpoint(eager=True)
    e_counts = _reason_counts(rejected_e, m_in)
    log.info("build: ids mapped, %d edge rows validated at %.1fs", m_in, time.perf_counter() - t0)
    quarantine = {k: int(c) for k, c in {**v_counts, **e_counts}.items() if k is not None}
    _check_fraction(cfg, n_in, m_in, v_counts, e_counts)
    if e_counts.get(None, 0) == 0 and cfg.require_edges:
        raise BuildFailed(f"edges {cfg.edges}: no valid edge rows ({_describe(e_counts)})")

    # ---- graph
    passthrough = [c for c in raw_v.columns if c not in {cfg.id_col, cfg.features_col, cfg.label_col,
                                                         cfg.split_col, "id", *cfg.feature_cols}]
    ids = mapped.select("_key", "id")
    vertices = good_v.drop("id").join(F.broadcast(ids) if n_kept <= cfg.broadcast_ids_max else ids, "_key").select(
        "id",
        F.col("_features").alias("features"),
        (F.col("_label") if cfg.label_col in raw_v.columns else F.lit(None).cast("int")).alias("label"),
        (F.col("_split") if cfg.split_col in raw_v.columns else F.lit(None).cast("string")).alias("split"),
        *[F.col(c) for c in passthrough],
    )
    vertices = normalize_features(vertices, cfg.feature_norm, dim) if feats is not None else vertices
    edges_in = e.filter(F.col("_reason").isNull()).select(
        F.col("_sid").alias("src"), F.col("_did").alias("dst"), F.col("_w").cast("double").alias("weight"), "_order")
    edges = transform_edges(edges_in, vertices, self_loops=cfg.self_loops, symmetrize=cfg.symmetrize,
                            merge=cfg.merge_duplicates, edge_norm=cfg.edge_norm,
                            num_partitions=max(shuffle_partitions(spark), -(-m_in // MERGE_ROWS_PER_PARTITION)))

    # ---- write to staging, then publish
    staging = _staging_path(output)
    try:
        # written in the input's partitioning: every reader indexes vertices by id itself (a repartition
        # by id and sort cost 9 s of 60 at 1M vertices x 64 features and nothing read the files in order)
        _write_vertices(spark, vertices, storage.join_path(staging, "graph", "vertices"))
        log.info("build: vertices written at %.1fs", time.perf_counter() - t0)
        # written as the merge left them (partitioned by its shuffle); a sort by (src, dst) cost 7 s of 55 at
        # 10M edges and nothing reads the files in order
        _write(edges, storage.join_path(staging, "graph", "edges"))
        log.info("build: edges written at %.1fs", time.perf_counter() - t0)
        _write_mapping(mapped, storage.join_path(staging, "mapping"))
        for rule, count in quarantine.items():
            src = rejected_v if rule in VERTEX_RULES else rejected_e
            cols = raw_v.columns if rule in VERTEX_RULES else raw_e.columns
            rejected = src.filter(F.col("_reason") == rule).select(*[F.col(f"`{c}`") for c in cols],
                                                                    F.col("_reason").alias("reason"))
            _write(rejected.coalesce(1), storage.join_path(staging, "quarantine", rule))
            log.info("build: quarantined %d rows under %s", count, rule)
        log.info("build: mapping and quarantine written at %.1fs", time.perf_counter() - t0)
        gv = spark.read.parquet(storage.join_path(staging, "graph", "vertices"))
        ge = spark.read.parquet(storage.join_path(staging, "graph", "edges"))
        report = _report(spark, cfg, gv, ge, n_in, m_in, n_kept, quarantine, dim, t0,
                         graph_path=storage.join_path(staging, "graph"))
        storage.write_json(storage.join_path(staging, "graph", "_graph.json"), report["graph"])
        storage.write_json(storage.join_path(staging, "build_report.json"), report)
        # old output aside (hidden, beside it: remove_leftovers and the nightly's clean-up find it after a
        # crash), staging in, old removed
        storage.replace_dir(staging, output, aside=_sibling(output, "old"))
    except BaseException:
        if storage.path_exists(staging):
            storage.delete_path(staging)
        raise
    log.info("build: %d vertices, %d edges published to %s in %.1fs", report["graph"]["num_vertices"],
             report["graph"]["num_edges"], output, report["seconds"])
    return report


def _reason_counts(rejected: DataFrame, total: int) -> dict[str | None, int]:
    """Rows per rule (``None``: the accepted rows, ``total`` minus the rejected ones)."""
    counts: dict[str | None, int] = {r["_reason"]: int(r["count"]) for r in rejected.groupBy("_reason").count().collect()}
    counts[None] = total - sum(counts.values())
    return counts


def _describe(counts: dict[Any, int]) -> str:
    return ", ".join(f"{k}: {c}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]) if k is not None) or "none"


def _check_fraction(cfg: BuildConfig, n_in: int, m_in: int, v_counts: dict, e_counts: dict) -> None:
    for what, total, counts in (("vertex", n_in, v_counts), ("edge", m_in, e_counts)):
        bad = sum(c for k, c in counts.items() if k is not None)
        if total and bad / total > cfg.max_quarantine_fraction:
            worst = max(((k, c) for k, c in counts.items() if k is not None), key=lambda kv: kv[1])
            raise BuildFailed(
                f"{bad} of {total} {what} rows ({100 * bad / total:.2f}%) failed validation, above "
                f"build.max_quarantine_fraction={cfg.max_quarantine_fraction:g}; largest rule {worst[0]}: {worst[1]} "
                f"({_describe(counts)}); nothing was published")


def _parent_and_name(output: str) -> tuple[str, str]:
    parent, slash, name = output.rstrip("/").rpartition("/")
    return (parent or "/", name) if slash else (".", name)


def _sibling(output: str, kind: str) -> str:
    """A new hidden directory name beside ``output``: ``.<name>.<kind>-<random>``."""
    parent, name = _parent_and_name(output)
    return storage.join_path(parent, f".{name}.{kind}-{uuid.uuid4().hex[:12]}")


def _staging_path(output: str) -> str:
    return _sibling(output, "staging")


def remove_leftovers(output: str) -> list[str]:
    """Clean up what interrupted earlier builds of ``output`` left beside it (module docstring).

    Staging directories (``.<name>.staging-<12 hex digits>``) are deleted. Aside directories
    (``.<name>.old-<12 hex>``, and ``<name>.old-<12 hex>`` as builds before this naming left them) hold a complete earlier build: when
    ``output`` is absent the newest is moved back to ``output``, the rest are deleted. Returns what it
    did, one line per directory (also logged as warnings); nothing else beside ``output`` is touched.
    """
    import pyarrow.fs as pafs

    parent, name = _parent_and_name(output)
    if not storage.is_dir(parent):
        return []
    fs, p = storage.filesystem(parent)
    staging, aside = [], []
    ours = re.compile(rf"(\.?){re.escape(name)}\.(staging|old)-[0-9a-f]{{12}}")  # what _sibling names
    for info in fs.get_file_info(pafs.FileSelector(p, recursive=False)):
        m = ours.fullmatch(info.base_name)
        if info.type != pafs.FileType.Directory or m is None or (m[2] == "staging" and not m[1]):
            continue
        (staging if m[2] == "staging" else aside).append(info)
    done = []
    if aside and not storage.path_exists(output):
        newest = max(aside, key=lambda i: (i.mtime_ns or 0, i.base_name))
        aside.remove(newest)
        storage.move(storage.join_path(parent, newest.base_name), output)
        done.append(f"restored {output} from {newest.base_name} (an earlier build was interrupted while "
                    "swapping its output in)")
    for info in staging + aside:
        storage.delete_path(storage.join_path(parent, info.base_name))
        done.append(f"removed {storage.join_path(parent, info.base_name)} (left by an interrupted earlier build)")
    for line in done:
        log.warning("build: %s", line)
    return done


#: up to this many edges the build report counts degrees and components on the driver (numpy and scipy
#: over the written files, read with pyarrow): on a small graph the Spark jobs' overhead costs seconds for
#: milliseconds of work (the analytics' local_max_edges rule, same default)
LOCAL_COMPONENTS_MAX_EDGES = 2_000_000


def _local_structure(graph_path: str | None, n: int, m: int, symmetric: bool,
                     components: bool) -> tuple[list[tuple[int, int]], int | None] | None:
    """``(degree histogram, weakly connected components or None)`` of a small built graph from its
    written files (see :data:`LOCAL_COMPONENTS_MAX_EDGES`); None when the graph is larger or the files
    cannot be read with pyarrow (the Spark paths then count them)."""
    if not graph_path or m > LOCAL_COMPONENTS_MAX_EDGES:
        return None
    try:
        et = storage.read_parquet_arrow(storage.join_path(graph_path, "edges"), ["src", "dst"])
    except (OSError, ValueError, TypeError) as exc:  # no pyarrow file system for the URI: Spark instead
        log.info("build: reading %s with pyarrow failed (%s); counting degrees and components on Spark", graph_path,
                 storage.first_line(exc))
        return None
    src, dst = et.column("src").to_numpy(), et.column("dst").to_numpy()
    # the build's ids are dense 0..n-1; the degree is out + in (a symmetric graph: twice the out-degree,
    # as analytics.degrees.degree_histogram counts it)
    degree = 2 * np.bincount(src, minlength=n) if symmetric else np.bincount(src, minlength=n) + np.bincount(
        dst, minlength=n)
    values, counts = np.unique(degree, return_counts=True)
    histogram = [(int(d), int(c)) for d, c in zip(values, counts, strict=True)]
    if not components:
        return histogram, None
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    a = sp.coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return histogram, int(connected_components(a, directed=True, connection="weak")[0])


def _degree_histogram(spark: SparkSession, cfg: BuildConfig, vertices: DataFrame, edges: DataFrame, n: int,
                      graph_path: str | None) -> list[tuple[int, int]]:
    """The built graph's degree histogram on Spark: from its local edge files with numpy in the tasks
    (its ids are 0..n-1; :func:`~lepton_spark.analytics.degrees.degree_histogram_from_files`), else
    with the DataFrame aggregate."""
    from lepton_spark.analytics.degrees import degree_histogram, degree_histogram_from_files
    from lepton_spark.graph.blocks import EdgeFiles

    files = EdgeFiles(storage.join_path(graph_path, "edges"), weight=None) if graph_path else None
    if files is not None and files.usable():
        return degree_histogram_from_files(spark, files, n, symmetric=bool(cfg.symmetrize))
    return degree_histogram(vertices, edges, symmetric=bool(cfg.symmetrize))


def _split_counts(vertices: DataFrame, graph_path: str | None) -> tuple[int, dict[str, int], int | None]:
    """``(vertices, {split: vertices} without null/blank splits, largest label or None)`` of the built
    graph: from its vertex files' ``split`` and ``label`` columns read with pyarrow (two small columns;
    a Spark aggregate cost a job and its planning, ~0.3-0.5 s of a build), else with Spark."""
    if graph_path:
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            t = storage.read_parquet_arrow(storage.join_path(graph_path, "vertices"), ["split", "label"])
            top = pc.max(t.column("label")).as_py() if t.num_rows else None
            splits = {k: int(c) for k, c in storage.value_counts(t.column("split")).items() if k}
            return t.num_rows, splits, None if top is None else int(top)
        except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as exc:  # e.g. no pyarrow file system
            log.info("build: reading %s with pyarrow failed (%s); counting the splits on Spark", graph_path,
                     storage.first_line(exc))
    rows = vertices.groupBy("split").agg(F.count(F.lit(1)).alias("count"), F.max("label").alias("mx")).collect()
    top = max((int(r["mx"]) for r in rows if r["mx"] is not None), default=None)
    return sum(int(r["count"]) for r in rows), {r["split"]: int(r["count"]) for r in rows if r["split"]}, top


def _count_components(cfg: BuildConfig, vertices: DataFrame, edges: DataFrame) -> int:
    """Weakly connected components (isolated vertices count one each) on the Spark block engine."""
    from lepton_spark.graph.programs import BlockEngine, components_program, indexed_graph

    # a symmetrised graph's directed edge blocks serve as its undirected ones (no second packing)
    with BlockEngine(indexed_graph(vertices.select("id"), edges.select("src", "dst")),
                     symmetric=cfg.symmetrize) as engine:
        return engine.run(components_program(), 2**31 - 2).select("value").distinct().count()


def _report(spark: SparkSession, cfg: BuildConfig, vertices: DataFrame, edges: DataFrame, n_in: int, m_in: int,
            n_kept: int, quarantine: dict[str, int], dim: int, t0: float,
            graph_path: str | None = None) -> dict[str, Any]:
    from lepton_spark.analytics.degrees import stats_from_histogram

    n, splits, labels = _split_counts(vertices, graph_path)
    m = storage.count_parquet_rows(spark, storage.join_path(graph_path, "edges"))[0] if graph_path else edges.count()
    num_classes = cfg.num_classes or (labels + 1 if labels is not None else 0)
    want_components = m <= cfg.report_components_max_edges
    local = _local_structure(graph_path, n, m, bool(cfg.symmetrize), want_components)
    if local is not None:
        histogram, components = local
    else:
        histogram = _degree_histogram(spark, cfg, vertices, edges, n, graph_path)
        components = _count_components(cfg, vertices, edges) if want_components else None
    degrees = stats_from_histogram(histogram)
    return {
        "inputs": {"vertices": cfg.vertices, "edges": cfg.edges, "format": cfg.format},
        "counts": {"vertices_in": n_in, "vertices_out": n, "edges_in": m_in, "edges_out": m,
                   "vertices_valid": n_kept},
        "quarantine": {rule: quarantine.get(rule, 0) for rule in (*VERTEX_RULES, *EDGE_RULES)},
        "degree": degrees,
        "isolated_vertices": degrees["isolated"],
        "connected_components": components,
        "transforms": {"self_loops": cfg.self_loops, "symmetrize": cfg.symmetrize,
                       "merge_duplicates": cfg.merge_duplicates, "edge_norm": cfg.edge_norm,
                       "feature_norm": cfg.feature_norm},
        "graph": {"num_vertices": n, "num_edges": m, "num_features": dim, "num_classes": num_classes,
                  "split_counts": {k: splits.get(k, 0) for k in SPLITS},
                  # every (u, v) has its (v, u), each once (duplicates merged): analytics reuse the
                  # directed edge blocks as the undirected ones
                  "symmetric": bool(cfg.symmetrize),
                  # and with the same weight both ways (row normalisation divides (u, v) and (v, u) by
                  # different degrees): the partitioned propagation takes in-degrees as out-degrees
                  "symmetric_weights": bool(cfg.symmetrize) and cfg.edge_norm != "row",
                  # [[in-degree, vertices], ...] over the vertices with an in-edge (the run report's
                  # plot); a symmetric graph's in-degree is half its degree
                  **({"in_degree_histogram": [[d // 2, c] for d, c in histogram if d > 0]}
                     if cfg.symmetrize else {}),
                  # features (one length, finite) and weights (finite, >= 0) passed the build's rules
                  "validated": True,
                  # the vertex ids are exactly 0..n-1 (ingest.ids.dense_ids): the partitioned plan places
                  # vertices by arithmetic on their ids
                  "dense_ids": True},
        "seconds": round(time.perf_counter() - t0, 3),
        "spark_version": spark.version,
    }
