"""The engine and the nightly core path against a Spark Connect server (pyspark's own, on 127.0.0.1).

A Connect client cannot share a process with the suite's classic session, so both run as
subprocesses: the engine tests themselves (``-m engine`` of test_propagate / test_graph_api, a selection) with the
suite's ``spark`` fixture pointed at the server (``LEPTON_TEST_SPARK_REMOTE``), and ``jobs/nightly.py``
with ``spark.remote``. Its predictions are checked against the driver forward pass of the artifact it
trained, computed here in the local session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, ConnectServer, spark_env

pytestmark = pytest.mark.cluster

DATE = "2026-11-21"
ENGINE_TESTS = ["tests/test_propagate.py", "tests/test_graph_api.py"]
# Within the CI budget: propagation with 3 rounds on every plan for sum and max (mean differs from sum
# only in a numpy division; 0 and 1 round run the same code), resume from round state, SpMM, and from the
# GraphFrames API aggregateMessages (both directions, struct messages), triplets and the engine choice.
# The dense layer runs on Connect in test_nightly_core_path_on_spark_connect.
ENGINE_SELECTION = ("(matches_scipy and scipy[3- and not mean) or resume or spmm "
                    "or aggregate_messages_both or aggregate_messages_struct or triplets or resolve_engine")


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_engine_tests_pass_on_spark_connect(connect_server: ConnectServer) -> None:
    env = spark_env(LEPTON_TEST_SPARK_REMOTE=connect_server.url)
    r = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "engine", "-k", ENGINE_SELECTION,
              *ENGINE_TESTS],
             env, timeout=900)
    tail = (r.stdout + r.stderr)[-5000:]
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and " failed" not in r.stdout, tail


def test_nightly_core_path_on_spark_connect(spark, connect_server: ConnectServer, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "jobs" / "nightly.py"), "--run-date", DATE, "--output", str(out),
           "--set", f"spark.remote={connect_server.url}",
           "--set", "pipeline.stages=[build,train,propagate,analytics]",
           "--set", "model.type=sgc", "--set", "model.params={K: 2}", "--set", "model.preset=cora"]
    r = _run(cmd, spark_env(), timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]
    assert "session ready (connect" in log, log[-3000:]
    assert "partitioned plan" in log  # `auto` never ships the matrix through a Connect closure
    manifest = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    assert manifest["engine"] == "builtin"
    assert set(manifest["tables"]) == {"embeddings", "predictions", "pagerank", "components", "communities"}

    from lepton_spark.models.artifact import load_model
    from lepton_spark.pipeline.stages import local_graph

    model = load_model(out / "runs" / DATE / "model")
    graph = ROOT / "data" / "cora"
    data = local_graph(spark, spark.read.parquet(str(graph / "vertices")), spark.read.parquet(str(graph / "edges")))
    want = model.predict_proba_local(data["A"], data["X"])
    got = {r["id"]: r["probs"] for r in pq.read_table(out / "outputs" / "predictions" / f"run_date={DATE}").to_pylist()}
    assert len(got) == len(data["ids"]) == 2708
    np.testing.assert_allclose(np.array([got[i] for i in data["ids"]]), want, atol=1e-5)
    assert os.path.isdir(out / "outputs" / "pagerank" / f"run_date={DATE}")
