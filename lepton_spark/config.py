"""Typed configuration: dataclasses loaded from ``conf/*.yaml`` (``yaml.safe_load``) plus CLI overrides.

Every section is a dataclass with documented defaults (``conf/default.yaml`` mirrors them with
comments). Loading validates every key: an unknown key, a wrong type or a value outside its allowed
set raises :class:`ConfigError` naming the dotted key, so a typo never silently falls back to a default.
``--set section.key=value`` overrides are parsed as YAML scalars (``--set train.epochs=50``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_SAMPLE_DIR = PROJECT_DIR / "data" / "cora"


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending key."""


@dataclass
class SparkConfig:
    master: str = "local[*]"  # ignored when spark-submit / Databricks already set one
    remote: str = ""  # Spark Connect URL (sc://host:port); also taken from SPARK_REMOTE
    app_name: str = "lepton-spark"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    ui: bool = False
    checkpoint_dir: str = ""  # "" = <tmp>/lepton-spark-checkpoints-<pid>-* (removed at exit)
    log_level: str = "WARN"
    jit: Literal["auto", "tiered", "c1"] = "auto"  # local driver JVM's JIT compilers (session.jit_options)
    jit_c1_max_mb: int = 128  # jit auto: C1 only when the job's local input is at most this many MiB
    extra: dict[str, str] = field(default_factory=dict)  # any spark.* setting


@dataclass
class GraphConfig:
    engine: Literal["auto", "builtin", "graphframes"] = "auto"
    plan: Literal["auto", "broadcast", "partitioned"] = "auto"
    # per-vertex state size up to which the broadcast plan runs; 0 = auto (graph.broadcast_limit: 512 MiB,
    # in local mode a sixteenth of physical memory within [512 MiB, 2 GiB])
    broadcast_max_bytes: int = 0
    native_aggregate: Literal["auto", "on", "off"] = "auto"  # vector_sum/vector_avg on Spark >= 4.3
    checkpoint_interval: int = 1  # cut lineage every N rounds
    local_exchange: bool = True  # local mode: broadcast plan exchanges features via /dev/shm files
    num_partitions: int = 0  # 0 = spark.sql.shuffle.partitions
    block_max_bytes: int = 128 * 1024 * 1024  # partitioned plan: largest feature block one task holds
    broadcast_ids_max: int = 5_000_000  # partitioned plan: up to this many vertices, broadcast the id map
    one_job_rounds: bool = True  # local mode: the broadcast plan's vertex-program rounds all run in one job
    # partitioned plan: executors keep files between rounds (a vertex program's edge blocks, a propagation
    # block's partial for its own vertices) instead of receiving them from the JVM again
    worker_block_files: bool = True


@dataclass
class BuildConfig:
    vertices: str = ""
    edges: str = ""
    format: Literal["parquet", "csv", "json"] = "parquet"
    csv_delimiter: str = ","
    csv_header: bool = True
    id_col: str = "id"
    src_col: str = "src"
    dst_col: str = "dst"
    weight_col: str = "weight"  # optional in the input; 1.0 when absent
    features_col: str = "features"  # array column or string of numbers
    feature_cols: list[str] = field(default_factory=list)  # alternative: numeric columns, in order
    label_col: str = "label"
    split_col: str = "split"
    num_classes: int = 0  # 0 = infer from the labels
    self_loops: Literal["keep", "drop", "add"] = "drop"
    symmetrize: bool = True
    merge_duplicates: Literal["sum", "max", "first"] = "max"
    edge_norm: Literal["none", "row", "sym"] = "none"
    feature_norm: Literal["none", "row", "standard"] = "none"
    duplicate_vertices: Literal["fail", "keep_first"] = "keep_first"
    max_quarantine_fraction: float = 0.01
    require_edges: bool = True
    report_components_max_edges: int = 5_000_000  # connected-component count in the report up to this size
    broadcast_ids_max: int = 5_000_000  # up to this many vertices the id map is broadcast to the edges


@dataclass
class ModelConfig:
    type: Literal["gcn", "sage", "sgc", "sign", "appnp", "gae"] = "gcn"  # gae: link prediction
    # hyper-parameters passed to the model class; unset ones keep the paper defaults of each model
    # (e.g. gcn: hidden 16, dropout 0.5, lr 0.01, weight_decay 5e-4, epochs 200, patience 10)
    params: dict[str, Any] = field(default_factory=dict)
    preset: str = ""  # dataset preset from lepton_spark.models.trainer.PRESETS ("cora", "citeseer")


@dataclass
class TrainConfig:
    enabled: bool = True  # nightly: False = reuse pipeline.model_dir
    seed: int = 0
    local_max_nodes: int = 2_000_000  # above this, SGC/SIGN/APPNP train from Spark-propagated features


@dataclass
class AnalyticsConfig:
    pagerank_reset: float = 0.15
    pagerank_iters: int = 20
    pagerank_tol: float = 0.0
    lpa_iters: int = 5
    components: bool = True
    local_max_edges: int = 2_000_000


@dataclass
class EmbedConfig:
    walks_per_node: int = 5
    walk_length: int = 20
    p: float = 1.0
    q: float = 1.0
    dim: int = 64
    window: int = 5
    epochs: int = 1
    min_count: int = 0
    seed: int = 42
    max_degree_sample: int = 1000  # hubs: neighbours kept per vertex for walks


@dataclass
class LinksConfig:
    """The ``links`` stage (link models): top-k new links per vertex and a score for every edge."""

    k: int = 10  # new links per vertex in link_predictions
    candidates: Literal["two_hop", "lsh", "both"] = "two_hop"  # where candidate pairs come from
    max_neighbors: int = 32  # two_hop hub capping: neighbours kept per vertex (<= max_neighbors^2 candidates)
    lsh_bucket_length: float = 1.0  # lsh: bucket width on the unit sphere (>= 1: one sign bit per projection)
    lsh_num_tables: int = 16  # lsh: hash tables (more = more candidates, better recall)
    lsh_max_bucket: int = 64  # lsh: largest-norm items kept per bucket (<= tables x this candidates per vertex)
    lsh_projections: int = 3  # lsh: random projections ANDed into one bucket key per table
    seed: int = 0  # hub-capping and LSH choices
    broadcast_max_bytes: int = 64 * 1024 * 1024  # embeddings up to this size are broadcast to the joins


@dataclass
class PipelineConfig:
    graph_dir: str = ""  # "" = bundled sample (data/cora)
    output: str = "runs/local"
    stages: list[str] = field(default_factory=lambda: ["build", "train", "propagate", "analytics", "report"])
    model_dir: str = ""  # reused when train.enabled is false
    resume: bool = True


@dataclass
class LoggingConfig:
    format: Literal["text", "json"] = "text"  # json: one JSON object per line (--log-format wins)


@dataclass
class TrackingConfig:
    mlflow_uri: str = ""  # "" = off; e.g. databricks, file:///path/mlruns, http://host:5000
    experiment: str = "lepton-spark"  # MLflow experiment (on Databricks a workspace path: /Shared/...)
    registered_model: str = ""  # "" = do not register; else register each run's model under this name


_OBSERVATION_SECTIONS = ("logging", "tracking")


@dataclass
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    links: LinksConfig = field(default_factory=LinksConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """sha256 of the resolved config (stable JSON), recorded in manifests.

        ``logging`` and ``tracking`` only say how a run is observed, not what it computes: they are
        left out, so switching to JSON logs or turning MLflow on keeps the run id (and resume)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _OBSERVATION_SECTIONS}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _check_value(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_value(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} has the wrong type")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_check_value(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        if args and args[1] is Any:
            return {str(k): v for k, v in value.items()}
        return {str(k): str(v) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover


#: keys that existed once, with what replaced them (a clearer error than "unknown key")
_REMOVED = {"pipeline.fail_after": "fault injection is the environment variable LEPTON_FAIL_AFTER=<point> "
                                   "(tests only; see lepton_spark.pipeline.faults)"}


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        if f"{where}{unknown[0]}" in _REMOVED:
            raise ConfigError(f"config key {where}{unknown[0]} was removed: {_REMOVED[where + unknown[0]]}")
        raise ConfigError(f"unknown config key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_value(key, value, hints[name])
    obj = cls(**kwargs)
    _validate(obj, prefix)
    return obj


def _validate(obj: Any, prefix: str) -> None:
    """Range checks that types alone cannot express."""
    positive = {
        SparkConfig: ("shuffle_partitions",),
        GraphConfig: ("checkpoint_interval",),
        AnalyticsConfig: ("pagerank_iters", "lpa_iters"),
        EmbedConfig: ("walks_per_node", "walk_length", "dim", "window", "epochs", "max_degree_sample"),
        LinksConfig: ("k", "max_neighbors", "lsh_bucket_length", "lsh_num_tables", "lsh_max_bucket",
                      "lsh_projections"),
    }.get(type(obj), ())
    for name in positive:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{prefix}.{name}: must be > 0, got {getattr(obj, name)}")
    if isinstance(obj, ModelConfig):
        _validate_model_params(obj, prefix)
    if isinstance(obj, GraphConfig) and obj.broadcast_max_bytes < 0:
        raise ConfigError(f"{prefix}.broadcast_max_bytes: must be >= 0 (0 = auto), got {obj.broadcast_max_bytes}")
    if isinstance(obj, BuildConfig) and not 0.0 <= obj.max_quarantine_fraction <= 1.0:
        raise ConfigError(f"{prefix}.max_quarantine_fraction: must be in [0, 1]")
    if isinstance(obj, AnalyticsConfig) and not 0.0 < obj.pagerank_reset < 1.0:
        raise ConfigError(f"{prefix}.pagerank_reset: must be in (0, 1)")
    if isinstance(obj, EmbedConfig) and (obj.p <= 0 or obj.q <= 0):
        raise ConfigError(f"{prefix}.p/q: must be > 0")


def _validate_model_params(obj: ModelConfig, prefix: str) -> None:
    """Check model.params against the model class's constructor (names and values)."""
    from lepton_spark.models import create_model

    try:
        create_model(obj.type, **obj.params)
    except TypeError as exc:
        raise ConfigError(f"{prefix}.params: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{prefix}.params: {exc}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed value); the value is read as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.sub=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


_FREE_FORM = (("spark", "extra"), ("model", "params"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load defaults, then the YAML file (if any), then ``--set`` overrides; validate everything."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"config file {p} is not valid YAML: {first}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a mapping of sections")
        data = loaded
    for item in overrides:
        parts, value = parse_override(item)
        for mapping in _FREE_FORM:  # spark.extra.spark.executor.memory=8g: the rest is one key
            n = len(mapping)
            if tuple(parts[:n]) == mapping and len(parts) > n + 1:
                parts = [*parts[:n], ".".join(parts[n:])]
        node = data
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = nxt
        node[parts[-1]] = value
    return _build(Config, data, "")
