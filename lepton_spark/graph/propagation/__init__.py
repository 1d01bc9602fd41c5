"""Vector message passing over a whole graph: ``propagate`` and ``spmm`` (docs/architecture.md §2).

One round computes, for every vertex v, ``x'_v = AGG over edges (u -> v, w) of w * x_u`` with AGG in
sum | mean | max. Every vertex is in the result; a vertex that receives nothing gets a zero vector for
every aggregator. Edges whose src or dst is not a vertex are ignored (GraphFrames' triplets drop them).

This package is the public API and the choice of plan; each physical plan is a module of its own.
Two plans, chosen once per call by the size of the feature matrix (``n * d * 4`` bytes) against
``graph.broadcast_max_bytes`` (:mod:`lepton_spark.graph.broadcast_limit`; always partitioned on Spark
Connect), and logged:

- **broadcast** (:mod:`.broadcast_plan`): the feature matrix sits on the driver and every cached
  CSR block multiplies it in one mapInArrow per round; nothing is shuffled. The fastest plan on one
  machine.
- **partitioned** (:mod:`.partitioned_plan`): the features never sit in one process; vertices are
  hashed into one block per task slot and a round is one cogroup of the partials addressed to a
  block with its cached edge block. The plan for cluster-size graphs.

The inputs are cast and checked once (:mod:`.inputs`), the tables' Spark and Arrow schemas are
declared once (:mod:`.schemas`), and the round state (lineage cuts every ``checkpoint_interval``
rounds; with ``checkpoint`` a directory, each completed round written with a completion marker so
that a later call with the same inputs resumes after the last complete round) is :mod:`.rounds`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lepton_spark.config import GraphConfig
from lepton_spark.graph import kernels
from lepton_spark.graph.blocks import EdgeFiles
from lepton_spark.graph.broadcast_limit import broadcast_max_bytes
from lepton_spark.graph.propagation import broadcast_plan, partitioned_plan
from lepton_spark.graph.propagation.broadcast_plan import OperatorCache
from lepton_spark.graph.propagation.inputs import (
    Inputs,
    check_features,
    check_weights,
    prepare,
)
from lepton_spark.graph.propagation.partitioned_plan import num_partitioned_blocks
from lepton_spark.graph.propagation.rounds import LineagePolicy, RoundCallback, Rounds, RoundStore
from lepton_spark.graph.propagation.schemas import FEATURES_T
from lepton_spark.session import is_connect, task_slots

__all__ = [
    "PLANS", "OperatorCache", "RoundCallback", "check_features", "check_weights", "native_aggregate_available",
    "num_partitioned_blocks", "propagate", "spmm",
]

log = logging.getLogger(__name__)

PLANS = ("auto", "broadcast", "partitioned")


class _Graph(NamedTuple):
    """The two DataFrames :func:`propagate` reads (any object with these attributes will do)."""

    vertices: DataFrame
    edges: DataFrame


def _spark_version(spark: SparkSession) -> tuple[int, int]:
    major, minor = spark.version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def native_aggregate_available(spark: SparkSession) -> bool:
    """True when Spark has ``vector_sum``/``vector_avg`` on ``array<float>`` (Spark >= 4.3)."""
    return _spark_version(spark) >= (4, 3) and hasattr(F, "vector_sum")


@dataclass(frozen=True)
class RunSpec:
    """One :func:`propagate` call's settings with the config's defaults filled in, checked on creation."""

    rounds: int
    agg: str
    plan: str
    native_aggregate: str
    broadcast_max_bytes: int
    checkpoint_interval: int
    config: GraphConfig
    num_blocks: int | None = None
    checkpoint: str | None = None
    normalize: str | None = None
    on_round: RoundCallback | None = None
    operators: OperatorCache | None = None
    operator_key: Any = None
    symmetric: bool = False
    edge_files: EdgeFiles | None = None
    dense_ids: bool = False
    checked_features: bool = False

    @classmethod
    def resolve(cls, config: GraphConfig | None, *, plan: str | None, native_aggregate: str | None,
                broadcast_max_bytes: int | None, checkpoint_interval: int | None, **settings: Any) -> RunSpec:
        """The spec with every unset setting taken from ``config`` (default ``GraphConfig()``)."""
        cfg = config or GraphConfig()
        return cls(
            plan=plan or cfg.plan,
            native_aggregate=native_aggregate or cfg.native_aggregate,
            broadcast_max_bytes=cfg.broadcast_max_bytes if broadcast_max_bytes is None else broadcast_max_bytes,
            checkpoint_interval=checkpoint_interval or cfg.checkpoint_interval,
            config=cfg,
            **settings,
        )

    def __post_init__(self) -> None:
        if self.agg not in kernels.AGGS:
            raise ValueError(f"propagate: agg must be one of {', '.join(kernels.AGGS)}, got {self.agg!r}")
        if self.plan not in PLANS:
            raise ValueError(f"propagate: plan must be one of {', '.join(PLANS)}, got {self.plan!r}")
        if self.rounds < 0:
            raise ValueError(f"propagate: rounds must be >= 0, got {self.rounds}")
        if self.normalize not in (None, "sym") or (self.normalize == "sym" and self.agg != "sum"):
            raise ValueError(f"propagate: normalize must be None or 'sym' (with agg='sum'), got {self.normalize!r}")


def propagate(
    g: Any,
    features: str = "features",
    weight: str | None = "weight",
    rounds: int = 1,
    agg: str = "sum",
    *,
    plan: str | None = None,
    native_aggregate: str | None = None,
    num_blocks: int | None = None,
    broadcast_max_bytes: int | None = None,
    checkpoint: str | None = None,
    checkpoint_interval: int | None = None,
    on_round: RoundCallback | None = None,
    config: GraphConfig | None = None,
    operators: OperatorCache | None = None,
    normalize: str | None = None,
    operator_key: Any = None,
    num_vertices: int | None = None,
    num_features: int | None = None,
    symmetric: bool = False,
    edge_files: EdgeFiles | None = None,
    dense_ids: bool = False,
    checked_features: bool = False,
) -> DataFrame:
    """``rounds`` rounds of ``x'_v = agg_{(u -> v, w)} w * x_u``; returns DataFrame(id, features).

    Every vertex is in the result; a vertex that receives nothing gets a zero vector. Edges whose
    ``src`` or ``dst`` is not a vertex are ignored. The plan (broadcast or partitioned, see the module
    docstring and ``docs/architecture.md`` §2.1) is chosen once per call and logged.

    Parameters
    ----------
    g : GraphFrame
        The graph: ``g.vertices`` has ``id`` (long) and ``features`` (``array<float>``, one length),
        ``g.edges`` has ``src``, ``dst`` and optionally ``weight``.
    features : str, default "features"
        The vertex column holding the feature vectors.
    weight : str or None, default "weight"
        The edge weight column; ``None`` or a missing column means weight 1.0.
    rounds : int, default 1
        Number of propagation rounds (0 returns the input features).
    agg : {"sum", "mean", "max"}, default "sum"
        How the weighted messages ``w * x_u`` arriving at a vertex are combined.
    plan : {"auto", "broadcast", "partitioned"}, optional
        The physical plan; default ``config.plan``. ``auto`` picks broadcast when the feature matrix
        (``n * d * 4`` bytes) fits ``broadcast_max_bytes`` (always partitioned on Spark Connect).
    native_aggregate : {"auto", "on", "off"}, optional
        Partitioned plan: let Spark sum the partials with ``vector_sum`` (Spark >= 4.3); default
        ``config.native_aggregate``.
    num_blocks : int, optional
        Partitioned plan: the number of vertex blocks (default: one per task slot, more only when a
        block would exceed ``config.block_max_bytes``).
    broadcast_max_bytes : int, optional
        The ``auto`` plan's threshold; default ``config.broadcast_max_bytes``; 0 means automatic
        (:mod:`lepton_spark.graph.broadcast_limit`: 512 MiB, more in local mode).
    checkpoint : str, optional
        A directory for the round state: each completed round is written there, and a later call
        with the same inputs resumes after the last complete round.
    checkpoint_interval : int, optional
        Cut the lineage every this many rounds; default ``config.checkpoint_interval``.
    on_round : callable, optional
        ``on_round(k, info)`` after round ``k``; ``info`` has the round's row count, seconds and plan.
    config : GraphConfig, optional
        The ``graph.*`` settings the defaults above come from (default ``GraphConfig()``).
    operators : OperatorCache, optional
        Shared by several calls over the same edges DataFrame (a model's layers): the broadcast plan
        packs the edge blocks once and reuses them; the caller closes the cache.
    normalize : {None, "sym"}, default None
        ``"sym"`` propagates with GCN's ``D^-1/2 (A + I) D^-1/2`` of the given edges (D: weighted
        in-degree plus the self-loop; ``agg`` must be sum). The broadcast plan scales on the driver
        around ``(A + I) x`` and never builds normalised edges; the partitioned plan normalises the
        edge table first (:func:`~lepton_spark.graph.normalize.normalize_edges`).
    operator_key : object, optional
        Names the edges in ``operators`` instead of the DataFrame object (see :class:`OperatorCache`).
    num_vertices : int, optional
        The number of rows of ``g.vertices`` when the caller knows it (a validated graph's metadata):
        the plan is chosen from it and the first row's feature length, without the validation job and
        the features' cache; the broadcast plan checks the features on the driver as it collects them
        (the same errors), the partitioned plan checks them once it has them in its blocks.
    num_features : int, optional
        With ``num_vertices``: the feature length the caller knows (the graph's metadata, a dense
        layer's width); the plan is then chosen without reading the first row (a job of its own, which
        also runs every step that made the features). A wrong hint only misjudges the plan's size:
        the broadcast plan measures the length while it collects, and a mismatch is logged.
    symmetric : bool, default False
        The caller's promise that every edge ``(u, v, w)`` has its reverse ``(v, u, w)``, each once (a
        graph built with ``build.symmetrize``, whose ``_graph.json`` says ``symmetric_weights``): the
        partitioned plan then counts in-degrees (``agg="mean"``, ``normalize="sym"``) as out-degrees
        inside each block, with no aggregation over the edges. A false promise gives wrong degrees.
    edge_files : EdgeFiles, optional
        The caller's promise that ``g.edges`` holds exactly the edges of these local Parquet files
        (a validated graph's edge directory): in local mode the broadcast plan packs its blocks from
        the files, without shuffling the edges through Spark (:class:`~lepton_spark.graph.blocks.EdgeFiles`);
        the partitioned plan, with ``symmetric`` and ``dense_ids``, has one task per file read it and
        send each block its edges as binary arrays instead of shuffling them as rows.
    dense_ids : bool, default False
        The caller's promise that the vertex ids are exactly 0..n-1 (a graph written by ``build`` or
        ``sample``, whose ``_graph.json`` says ``dense_ids``): the partitioned plan then places vertex
        ``id`` in block ``id mod B`` by arithmetic instead of numbering the vertices and looking up
        every edge's endpoints. A block that receives an id it does not hold raises.
    checked_features : bool, default False
        With ``num_vertices``: the caller's promise that the features are already checked (one length,
        finite: a validated graph's, or what a model computed from them). The partitioned plan then
        skips its check of the features, and with ``dense_ids`` its first round reads them where they
        are made instead of from a cut copy (at 1M x 64 on 2 cores: the check's job and the copy cost
        about 3 s of the preparation). The broadcast plan checks them on the driver regardless (free).

    Returns
    -------
    DataFrame
        ``id`` (long), ``features`` (``array<float>``): one row per vertex.

    Raises
    ------
    ValueError
        For an unknown ``agg``, ``plan`` or ``normalize``, or negative ``rounds``.
    InvalidGraphError
        For null, ragged, NaN or infinite features, or null, NaN or infinite weights.

    Examples
    --------
    Vertex 0 receives nothing, 1 gets ``x_0``, and 2 gets ``0.5 x_1`` plus its self-loop ``2 x_2``:

    >>> from lepton_spark.graph import GraphFrame, propagate
    >>> v = spark.createDataFrame([(0, [1.0, 0.0]), (1, [0.0, 1.0]), (2, [1.0, 1.0])],
    ...                           "id long, features array<float>")
    >>> e = spark.createDataFrame([(0, 1, 1.0), (1, 2, 0.5), (2, 2, 2.0)], "src long, dst long, weight float")
    >>> out = propagate(GraphFrame(v, e), rounds=1, agg="sum")
    >>> sorted((r["id"], r["features"]) for r in out.collect())
    [(0, [0.0, 0.0]), (1, [1.0, 0.0]), (2, [2.0, 2.5])]
    """
    spec = RunSpec.resolve(
        config, rounds=rounds, agg=agg, plan=plan, native_aggregate=native_aggregate, num_blocks=num_blocks,
        broadcast_max_bytes=broadcast_max_bytes, checkpoint=checkpoint, checkpoint_interval=checkpoint_interval,
        on_round=on_round, operators=operators, normalize=normalize, operator_key=operator_key, symmetric=symmetric,
        edge_files=edge_files, dense_ids=dense_ids, checked_features=checked_features)
    inp = prepare(g, features, weight, num_vertices, num_features)
    try:
        return _run(inp, spec)
    finally:
        inp.x0.unpersist()


@dataclass(frozen=True)
class PlanChoice:
    """The physical plan of one call: its name, why it was chosen (logged) and its aggregation."""

    name: str  # "broadcast" | "partitioned"
    why: str
    native: bool = False  # partitioned: Spark sums the partials (vector_sum)


def choose_plan(inp: Inputs, spec: RunSpec) -> PlanChoice:
    """Broadcast when the feature matrix (``n * d * 4`` bytes) fits ``broadcast_max_bytes``, else partitioned.

    Spark Connect always gets the partitioned plan (a client closure cannot carry the features). A
    forced plan is taken as is. ``native_aggregate="on"`` needs Spark >= 4.3 (ValueError otherwise)
    and does not apply to ``max``.
    """
    size = inp.n * inp.dim * 4
    if spec.plan == "auto":
        if is_connect(inp.spark):
            chosen, why = "partitioned", "Spark Connect: the feature matrix never rides in a client closure"
        else:
            limit = broadcast_max_bytes(inp.spark, spec.config, spec.broadcast_max_bytes)
            chosen = "broadcast" if size <= limit else "partitioned"
            why = (f"feature matrix {size / 2**20:.1f} MiB {'<=' if chosen == 'broadcast' else '>'} "
                   f"{limit / 2**20:.0f} MiB")
    else:
        chosen, why = spec.plan, "forced"
    if chosen == "broadcast":
        return PlanChoice(chosen, why)
    if spec.native_aggregate == "on" and not native_aggregate_available(inp.spark):
        raise ValueError(f"propagate: native vector aggregation needs Spark >= 4.3 (running {inp.spark.version})")
    return PlanChoice(chosen, why, native=spec.native_aggregate == "on" and spec.agg != "max")


def _run(inp: Inputs, spec: RunSpec) -> DataFrame:
    """Choose the plan once, then delegate to it with the round state it resumes from and cuts by."""
    if spec.rounds == 0 or inp.n == 0:
        return inp.x0
    choice = choose_plan(inp, spec)
    log.info("propagate: %s plan (%s), %d rounds, agg=%s", choice.name, choice.why, spec.rounds, spec.agg)
    signature = {"n": inp.n, "dim": inp.dim, "rounds_plan": choice.name, "agg": spec.agg, "native": choice.native,
                 "normalize": spec.normalize}
    if choice.name == "partitioned" and spec.normalize == "sym":
        signature["sym_partials"] = "scaled in the blocks"  # the partials of older versions were not
    rounds = Rounds(spec.rounds, RoundStore(spec.checkpoint, signature),
                    LineagePolicy.for_session(inp.spark, spec.checkpoint_interval), spec.on_round)
    cfg = spec.config
    if choice.name == "broadcast":
        return broadcast_plan.run(inp, rounds, agg=spec.agg, parts=cfg.num_partitions or None,
                                  local_exchange=cfg.local_exchange, cache=spec.operators, normalize=spec.normalize,
                                  operator_key=spec.operator_key, edge_files=spec.edge_files)
    slots = cfg.num_partitions or task_slots(inp.spark)
    blocks = spec.num_blocks or num_partitioned_blocks(inp.n * inp.dim * 4, slots, cfg.block_max_bytes)
    return partitioned_plan.run(inp, rounds, agg=spec.agg, blocks=blocks, native=choice.native,
                                normalize=spec.normalize, broadcast_ids_max=cfg.broadcast_ids_max,
                                symmetric=spec.symmetric, cache=spec.operators, operator_key=spec.operator_key,
                                dense_ids=spec.dense_ids, checked_features=spec.checked_features,
                                edge_files=spec.edge_files, own_files=cfg.worker_block_files)


def spmm(entries: DataFrame, dense: DataFrame, *, row: str = "row", col: str = "col", value: str = "value",
         features: str = "features", **kwargs: Any) -> DataFrame:
    """C = A·B for sparse A as (row, col, value) entries and dense B as (id, features).

    One :func:`propagate` round (the same code) on the edges ``col -> row`` weighted by ``value``.

    Parameters
    ----------
    entries : DataFrame
        The non-zero entries of A, one row per (row, col); columns named by ``row``, ``col``, ``value``.
    dense : DataFrame
        B as ``id`` and ``features`` (arrays of one length); row ``id`` of B is column ``id`` of A.
    row, col, value : str, default "row", "col", "value"
        The column names in ``entries``.
    features : str, default "features"
        The array column of ``dense``.
    **kwargs
        Passed to :func:`propagate` (``plan``, ``config``, ...).

    Returns
    -------
    DataFrame
        ``id`` (long), ``features`` (``array<float>``): one row per id of B and per row id of A (a
        zero vector where A's row is empty).

    Examples
    --------
    ``A = [[2, 1], [0, 3]]`` times ``B = [[1, 2], [3, 4]]``:

    >>> from lepton_spark.graph import spmm
    >>> a = spark.createDataFrame([(0, 0, 2.0), (0, 1, 1.0), (1, 1, 3.0)], "row long, col long, value double")
    >>> b = spark.createDataFrame([(0, [1.0, 2.0]), (1, [3.0, 4.0])], "id long, features array<double>")
    >>> sorted((r["id"], r["features"]) for r in spmm(a, b).collect())
    [(0, [5.0, 8.0]), (1, [9.0, 12.0])]
    """
    b = dense.select(F.col("id").cast("long").alias("id"), F.col(features).cast(FEATURES_T).alias("features"))
    dim_row = b.select(F.size("features").alias("d")).first()
    extra_ids = entries.select(F.col(row).cast("long").alias("id")).distinct().join(b.select("id"), "id", "left_anti")
    if dim_row is not None:
        zeros = F.array_repeat(F.lit(0.0).cast("float"), int(dim_row["d"])).cast(FEATURES_T)
        b = b.unionByName(extra_ids.select("id", zeros.alias("features")))
    edges = entries.select(F.col(col).cast("long").alias("src"), F.col(row).cast("long").alias("dst"),
                           F.col(value).cast("float").alias("weight"))
    return propagate(_Graph(b, edges), features="features", weight="weight", rounds=1, agg="sum", **kwargs)
