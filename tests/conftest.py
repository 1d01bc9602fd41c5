"""Shared fixtures: one session-scoped local SparkSession for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Each test leaves the root logger's handlers and level as it found them.

    The CLI's ``setup_logging`` points the root logger at the ``sys.stderr`` of the test that ran it
    (pytest's capture stream, closed when that test ends): later tests' log lines then went to a closed
    stream ("--- Logging error ---" on stderr), and at INFO, which made what a test captured depend on
    which tests ran before it in the same process."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def planetoid_dir() -> Path:
    if not (PLANETOID_DIR / "ind.cora.x").is_file():
        pytest.fail(f"raw Planetoid files not found at {PLANETOID_DIR} (set LEPTON_PLANETOID_DIR)")
    return PLANETOID_DIR


@pytest.fixture(scope="session")
def cora(planetoid_dir: Path):
    from lepton_spark.datasets.planetoid import load_planetoid

    return load_planetoid("cora", planetoid_dir)


@pytest.fixture(scope="session")
def cora_inputs(cora):
    """Cora as the model tests use it: (adjacency, features, labels, {train, val, test} masks)."""
    masks = {s: cora.mask(s) for s in ("train", "val", "test")}
    return cora.adjacency, cora.features, cora.labels, masks


@pytest.fixture(scope="session")
def cora_trained(cora_inputs) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Every model type trained once on Cora (seed 0, single-seed settings ``model_helpers.FAST``).

    Session-scoped: the model tests of several modules (trainer, plan, artifact) share one training.
    """
    from lepton_spark.models.trainer import train

    from .model_helpers import ALL_TYPES, FAST

    A, X, y, masks = cora_inputs
    return {t: train(t, A, X, y, masks, FAST[t], seed=0) for t in ALL_TYPES}
