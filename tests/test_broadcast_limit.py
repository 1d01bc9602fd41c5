"""``graph.broadcast_max_bytes``: 0 (the default) is automatic -- 512 MiB on a cluster, a sixteenth of the
machine's memory within [512 MiB, 2 GiB] in local mode with the local exchange; a positive value is
taken as is. Both block engines (propagation, vertex programs) choose their plan by it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lepton_spark.config import ConfigError, GraphConfig, load_config
from lepton_spark.graph.broadcast_limit import (
    CLUSTER_BROADCAST_MAX_BYTES,
    auto_broadcast_max_bytes,
    broadcast_max_bytes,
    physical_memory,
)

MiB, GiB = 1 << 20, 1 << 30


def test_auto_limit_by_hand() -> None:
    assert 512 * MiB == CLUSTER_BROADCAST_MAX_BYTES
    assert auto_broadcast_max_bytes(False, 64 * GiB) == 512 * MiB  # no local exchange: a cluster's limit
    assert auto_broadcast_max_bytes(True, None) == 512 * MiB  # memory unknown
    assert auto_broadcast_max_bytes(True, 4 * GiB) == 512 * MiB  # 256 MiB, raised to the floor
    assert auto_broadcast_max_bytes(True, 8 * GiB) == 512 * MiB
    assert auto_broadcast_max_bytes(True, 24 * GiB) == 1536 * MiB
    assert auto_broadcast_max_bytes(True, 64 * GiB) == 2 * GiB  # capped


def test_session_limit_explicit_or_auto(spark) -> None:
    """The test session is local mode (local exchange on by default): auto is the local limit for this
    machine; a positive config value or a caller's value wins; without the local exchange, 512 MiB."""
    local = auto_broadcast_max_bytes(True, physical_memory())
    assert GraphConfig().broadcast_max_bytes == 0
    assert broadcast_max_bytes(spark, GraphConfig()) == local
    assert broadcast_max_bytes(spark, None) == local
    assert broadcast_max_bytes(spark, GraphConfig(broadcast_max_bytes=1234)) == 1234
    assert broadcast_max_bytes(spark, GraphConfig(), value=77) == 77
    assert broadcast_max_bytes(spark, GraphConfig(broadcast_max_bytes=1234), value=0) == local
    assert broadcast_max_bytes(spark, GraphConfig(local_exchange=False)) == 512 * MiB


def test_negative_limit_is_a_config_error() -> None:
    assert load_config(None, ["graph.broadcast_max_bytes=0"]).graph.broadcast_max_bytes == 0
    with pytest.raises(ConfigError, match=r"graph\.broadcast_max_bytes"):
        load_config(None, ["graph.broadcast_max_bytes=-1"])


@pytest.mark.parametrize("engine", ["propagate", "programs"])
def test_both_engines_choose_by_the_resolved_limit(spark, engine: str) -> None:
    """A state of exactly the limit is broadcast and one entry more is partitioned (sizes only: nothing
    of that size is built); an explicit 512 MiB sends a state of the local limit to the partitioned plan."""
    from lepton_spark.graph import programs
    from lepton_spark.graph.propagation import RunSpec, choose_plan

    local = auto_broadcast_max_bytes(True, physical_memory())

    def plan(size_bytes: int, cfg: GraphConfig) -> str:
        if engine == "programs":
            return programs.choose_plan(spark, size_bytes, cfg)
        assert size_bytes % 256 == 0  # 64 float32 features a vertex
        inp = SimpleNamespace(spark=spark, n=size_bytes // 256, dim=64)
        spec = RunSpec.resolve(cfg, rounds=1, agg="sum", plan=None, native_aggregate=None,
                               broadcast_max_bytes=None, checkpoint_interval=None)
        return choose_plan(inp, spec).name

    step = 256
    assert plan(local - local % step, GraphConfig()) == "broadcast"
    assert plan(local - local % step + step, GraphConfig()) == "partitioned"
    if local > 512 * MiB:
        assert plan(local - local % step, GraphConfig(broadcast_max_bytes=512 * MiB)) == "partitioned"
