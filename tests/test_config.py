"""Typed config: defaults, YAML loading, --set overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton_spark.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_matches_dataclass_defaults() -> None:
    assert load_config(ROOT / "conf" / "default.yaml") == Config()


def test_overrides_are_typed() -> None:
    cfg = load_config(None, ["train.seed=50", "model.type=sgc", "spark.extra.spark.foo=1",
                             "pipeline.stages=[build, train]", "model.params={lr: 0.2, K: 3}",
                             "analytics.pagerank_reset=0.2"])
    assert cfg.train.seed == 50 and cfg.model.type == "sgc" and cfg.model.params == {"lr": 0.2, "K": 3}
    assert cfg.pipeline.stages == ["build", "train"] and cfg.analytics.pagerank_reset == 0.2
    assert cfg.spark.extra == {"spark.foo": "1"}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochz=5", "unknown config key train.epochz"),
        ("model.type=gat", "model.type: 'gat' is not one of"),
        ("train.seed=many", "train.seed: expected an integer"),
        ("embed.walk_length=0", "embed.walk_length: must be > 0"),
        ("model.params={hiddn: 8}", "model.params: unknown hyper-parameter(s) ['hiddn'] for gcn"),
        ("bogus.x=1", "unknown config key bogus"),
        ("spark.ui=maybe", "spark.ui: expected true/false"),
        ("spark.jit=c2", "spark.jit: 'c2' is not one of 'auto', 'tiered', 'c1'"),
        ("noequals", "expected key.sub=value"),
    ],
)
def test_bad_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_digest_changes_with_config() -> None:
    assert Config().digest() == Config().digest()
    assert load_config(None, ["train.seed=1"]).digest() != Config().digest()


def test_task_slots_from_the_master_and_conf() -> None:
    """task_slots reads local[N] / local[*] / executor conf without a SparkContext."""
    import os
    import types

    from lepton_spark.session import task_slots

    def session(conf: dict[str, str]) -> object:
        return types.SimpleNamespace(conf=types.SimpleNamespace(get=lambda key, default=None: conf.get(key, default)))

    assert task_slots(session({"spark.master": "local[2]"})) == 2
    assert task_slots(session({"spark.master": "local[3, 4]"})) == 3  # local[N, maxFailures]
    assert task_slots(session({"spark.master": "local[*]"})) == (os.cpu_count() or 1)
    assert task_slots(session({"spark.master": "local"})) == 1
    assert task_slots(session({"spark.master": "local-cluster[2, 3, 1024]"})) == 6
    cluster = {"spark.master": "spark://m:7077", "spark.sql.shuffle.partitions": "12"}
    assert task_slots(session(cluster)) == 12
    assert task_slots(session(cluster | {"spark.executor.instances": "5", "spark.executor.cores": "4"})) == 20
    assert task_slots(session(cluster | {"spark.default.parallelism": "7"})) == 7
