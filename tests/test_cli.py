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


def _tiny_model(tmp_path, dim: int = 3):
    """An SGC fitted on a 6-vertex graph (numpy, milliseconds), saved as an artifact."""
    import numpy as np
    import scipy.sparse as sp

    from lepton_spark.models import create_model
    from lepton_spark.models.artifact import save_model

    rng = np.random.default_rng(0)
    A = sp.csr_matrix(np.roll(np.eye(6), 1, axis=1))
    X = rng.normal(size=(6, dim))
    y = np.array([0, 1, 0, 1, 0, 1])
    model = create_model("sgc", epochs=2).fit(A, X, y, train_mask=np.ones(6, bool))
    save_model(model, tmp_path / "model", metrics={}, fingerprint={})
    return tmp_path / "model"


@pytest.mark.parametrize(
    ("features", "weights", "needle"),
    [
        ([[1.0, 2.0, 3.0], [1.0], [0.0, 0.0, 1.0]], [1.0, 1.0], "have null features or a length other than 3"),
        ([[1.0, 2.0, 3.0], None, [0.0, 0.0, 1.0]], [1.0, 1.0], "have null features or a length other than 3"),
        ([[1.0, 2.0, 3.0], [1.0, float("nan"), 0.0], [0.0, 0.0, 1.0]], [1.0, 1.0], "NaN or infinite features"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 0.0], [float("-inf"), 0.0, 1.0]], [1.0, 1.0], "NaN or infinite features"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], [1.0, None], "null, NaN or infinite weight"),
        ([[1.0, 2.0, 3.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], [float("nan"), 1.0], "null, NaN or infinite weight"),
    ],
)
def test_propagate_bad_graph_data_exits_3(spark, tmp_path, capsys, features, weights, needle) -> None:
    """A graph directory that did not come from build: bad features/weights are invalid data (exit 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = _tiny_model(tmp_path)
    graph = tmp_path / "graph"
    (graph / "vertices").mkdir(parents=True)
    (graph / "edges").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([0, 1, 2], pa.int64()),
                             "features": pa.array(features, pa.list_(pa.float32()))}),
                   graph / "vertices" / "part-0.parquet")
    pq.write_table(pa.table({"src": pa.array([0, 1], pa.int64()), "dst": pa.array([1, 2], pa.int64()),
                             "weight": pa.array(weights, pa.float32())}), graph / "edges" / "part-0.parquet")
    rc = main(["propagate", "--graph", str(graph), "--model", str(model), "--output", str(tmp_path / "out"),
               "--run-date", "2026-11-30"])
    err = capsys.readouterr().err
    assert rc == 3, err
    lines = [ln for ln in err.splitlines() if ln.startswith("lepton-spark")]
    assert len(lines) == 1 and needle in lines[0], err
    # in-process runs under capsys: a handler left from an earlier test may report "--- Logging error ---"
    # for its closed stream; that is the test harness, not the CLI's output
    ui = "\n".join(ln for ln in err.split("--- Logging error ---")[0].splitlines())
    assert "Traceback" not in ui
    assert not (tmp_path / "out" / "outputs").exists() or not any((tmp_path / "out" / "outputs").rglob("*.parquet"))


def test_pipeline_inputs_are_the_raw_tables_or_the_graph() -> None:
    """What spark.jit auto measures for a pipeline run: the raw tables when it builds from them, else
    the graph it reads (--graph, pipeline.graph_dir, or the bundled sample)."""
    import argparse

    from lepton_spark.cli import _pipeline_inputs
    from lepton_spark.config import DEFAULT_SAMPLE_DIR, load_config

    raw = load_config(None, ["build.vertices=/in/v", "build.edges=/in/e"])
    assert _pipeline_inputs(argparse.Namespace(graph=None), raw, None) == ["/in/v", "/in/e"]
    assert _pipeline_inputs(argparse.Namespace(graph="/g"), raw, ["analytics"]) == ["/g"]
    plain = load_config()
    assert _pipeline_inputs(argparse.Namespace(graph=None), plain, None) == [str(DEFAULT_SAMPLE_DIR)]
    assert _pipeline_inputs(argparse.Namespace(), load_config(None, ["pipeline.graph_dir=/gd"]), ["train"]) == ["/gd"]
