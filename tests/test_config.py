"""Typed config: defaults, YAML loading, --set overrides, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton_spark.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_matches_dataclass_defaults() -> None:
    assert load_config(ROOT / "conf" / "default.yaml") == Config()


def test_overrides_are_typed() -> None:
    cfg = load_config(None, ["train.epochs=50", "model.type=sgc", "spark.extra.spark.foo=1",
                             "pipeline.stages=[build, train]", "train.lr=0.2"])
    assert cfg.train.epochs == 50 and cfg.model.type == "sgc" and cfg.train.lr == 0.2
    assert cfg.pipeline.stages == ["build", "train"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.epochz=5", "unknown config key train.epochz"),
        ("model.type=gat", "model.type: 'gat' is not one of"),
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("train.epochs=0", "train.epochs: must be > 0"),
        ("model.dropout=1.5", "model.dropout: must be in [0, 1)"),
        ("bogus.x=1", "unknown config key bogus"),
        ("spark.ui=maybe", "spark.ui: expected true/false"),
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
