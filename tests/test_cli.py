"""Command line: help, version, usage errors (exit 2, one line), describe on the bundled sample."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lepton_spark.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lepton_spark.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_lists_subcommands() -> None:
    r = _run("--help")
    assert r.returncode == 0
    for name in ("build", "train", "propagate", "analytics", "embed", "nightly", "report", "export"):
        assert name in r.stdout


def test_version() -> None:
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.startswith("lepton-spark ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        (["describe", "--set", "train.epochz=1"], "unknown config key train.epochz"),
        (["describe", "--config", "/nonexistent.yaml"], "config file not found"),
        (["nightly", "--run-date", "2026-13-45"], "invalid run date"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lepton-spark: error:"), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_missing_graph_is_invalid_input(spark, tmp_path, capsys) -> None:
    assert main(["describe", "--graph", str(tmp_path / "nope")]) == 3
    err = capsys.readouterr().err
    assert "no such directory" in err and "Traceback" not in err


def test_describe_sample(spark, capsys) -> None:
    assert main(["describe"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["vertices"] == 2708 and summary["edges"] == 10556
    assert summary["feature_dims"] == [1433]
    assert summary["split"] == {"train": 140, "val": 500, "test": 1000, "None": 1068}
    assert sum(summary["classes"].values()) == 2708 and len(summary["classes"]) == 7
    # Cora's undirected degree (counted in both directions) has no isolated vertex
    assert summary["degree"]["isolated"] == 0 and summary["degree"]["max"] == 2 * 168
