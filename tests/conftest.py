"""Shared fixtures: one session-scoped local SparkSession for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLANETOID_DIR = Path(os.environ.get("LEPTON_PLANETOID_DIR", ROOT / "data" / "raw" / "planetoid"))
SAMPLE_GRAPH = ROOT / "data" / "cora"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """local[2], 4 shuffle partitions, UI off, checkpoint dir under pytest's tmp dir."""
    from lepton_spark.config import SparkConfig
    from lepton_spark.session import get_spark

    remote = os.environ.get("LEPTON_TEST_SPARK_REMOTE", "")
    if remote:  # the same tests against a Spark Connect server (tests/cluster/test_connect.py)
        session = get_spark(SparkConfig(remote=remote, app_name="lepton-spark-tests", shuffle_partitions=4,
                                         extra={"spark.sql.adaptive.enabled": "false"}))
        yield session
        session.stop()
        return
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = SparkConfig(
        master="local[2]",
        app_name="lepton-spark-tests",
        driver_memory="2g",
        shuffle_partitions=4,
        ui=False,
        checkpoint_dir=str(tmp_path_factory.mktemp("checkpoints")),
        extra={"spark.sql.adaptive.enabled": "false", "spark.default.parallelism": "4"},
    )
    session = get_spark(conf)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def planetoid_dir() -> Path:
    if not (PLANETOID_DIR / "ind.cora.x").is_file():
        pytest.fail(f"raw Planetoid files not found at {PLANETOID_DIR} (set LEPTON_PLANETOID_DIR)")
    return PLANETOID_DIR


@pytest.fixture(scope="session")
def cora(planetoid_dir: Path):
    from lepton_spark.datasets.planetoid import load_planetoid

    return load_planetoid("cora", planetoid_dir)
