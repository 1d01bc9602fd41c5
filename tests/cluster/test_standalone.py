"""The nightly job on a real standalone cluster (master + 2 workers on 127.0.0.1), with faults.

One module-scoped cluster serves both tests (started once, torn down by pid at the end, also on
failure). Reference outputs come from the same job run undisturbed in local mode (the suite's local[2]
session): Cora for the first test, a small planted-partition graph for the fault flow.

* the undisturbed cluster run (spark-submit + the wheel) publishes the same rows as local mode;
* the driver killed (SIGKILL of the spark-submit process group) after round 1 is recorded: the
  previously published partition of that run date is intact, and a rerun with the same run id
  resumes from round 1 (the log says so) and publishes the undisturbed outputs;
* in that rerun an executor JVM is killed (SIGKILL, by pid) while round 2's tasks run: the job still
  completes with the undisturbed outputs. (One flow for both faults, on a small graph: each
  spark-submit on this 2-core box costs about a minute, and the CI budget is 20 minutes.)

Propagation tasks are slowed with ``LEPTON_FAULT_TASK_SLEEP`` (seconds per task, read by the driver
and shipped with each round) so that the kills land while a round is in flight.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from lepton_spark.config import load_config
from lepton_spark.pipeline import run_pipeline

from .conftest import ROOT, Cluster, Proc, wait_for

pytestmark = pytest.mark.cluster

DATE = "2026-11-20"
TABLES = ("embeddings", "predictions", "pagerank", "components", "communities")
SLEEP = "1.2"  # seconds per propagation task in the fault runs


def _planted_graph(out: Path, n: int = 240, classes: int = 3, dim: int = 8, seed: int = 5) -> Path:
    """A small labelled graph in the project's graph layout (planted communities, noisy features).

    The fault flow runs on it instead of Cora: every spark-submit on this 2-core machine costs about a
    minute of fixed overhead already, and the faults do not depend on the data size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    label = np.arange(n) % classes
    same = label[:, None] == label[None, :]
    adj = np.triu(rng.random((n, n)) < np.where(same, 0.06, 0.004), 1)
    src, dst = np.nonzero(adj | adj.T)
    feats = (np.eye(classes, dim)[label] + rng.normal(0, 0.8, (n, dim))).astype(np.float32)
    split = np.array(["train", "val", "test", "test", "test"])[np.arange(n) % 5]
    (out / "vertices").mkdir(parents=True)
    (out / "edges").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array(np.arange(n), pa.int64()),
                             "features": pa.array(list(feats), pa.list_(pa.float32())),
                             "label": pa.array(label, pa.int32()), "split": pa.array(split)}),
                   out / "vertices" / "part-00000.parquet")
    pq.write_table(pa.table({"src": pa.array(src, pa.int64()), "dst": pa.array(dst, pa.int64()),
                             "weight": pa.array(np.ones(len(src)), pa.float32())}),
                   out / "edges" / "part-00000.parquet")
    return out


def _config(tmp: Path) -> Path:
    path = tmp / "cluster-test.yaml"
    path.write_text(
        f"spark:\n  shuffle_partitions: 4\n  checkpoint_dir: {tmp / 'checkpoints'}\n"
        f"pipeline:\n  graph_dir: {ROOT / 'data' / 'cora'}\n  stages: [build, train, propagate, analytics]\n"
        "model:\n  type: sgc\n  params: {K: 2}\n  preset: cora\n"
    )
    return path


def _finish(proc: Proc, timeout: float = 300) -> str:
    try:
        rc = proc.popen.wait(timeout=timeout)
    except Exception:  # noqa: BLE001 - a hung job is a failure; the fixture kills it
        pytest.fail(f"{proc.name} did not finish in {timeout:.0f}s:\n{proc.text()[-4000:]}")
    text = proc.text()
    assert rc == 0, f"{proc.name} exited {rc}:\n{text[-4000:]}"
    return text


def _assert_same_tables(spark, got: Path, want: Path, tables=TABLES) -> None:
    for table in tables:
        a = spark.read.parquet(str(got / "outputs" / table / f"run_date={DATE}"))
        b = spark.read.parquet(str(want / "outputs" / table / f"run_date={DATE}"))
        assert a.count() == b.count() > 0, table
        assertDataFrameEqual(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def setup(spark, tmp_path_factory, wheel, standalone: Cluster):
    """Config, the local-mode reference run, and the undisturbed cluster run (both full nightly)."""
    tmp = tmp_path_factory.mktemp("cluster-runs")
    cfg_path = _config(tmp)
    local_out = tmp / "local"
    run_pipeline(spark, load_config(cfg_path), output=str(local_out), run_date=DATE)
    cluster_out = tmp / "cluster"
    proc = standalone.submit("nightly-cluster", [str(ROOT / "jobs" / "nightly.py"), "--config", str(cfg_path),
                                                 "--run-date", DATE, "--output", str(cluster_out)],
                             py_files=wheel)
    log = _finish(proc)
    return {"tmp": tmp, "cfg": cfg_path, "local": local_out, "cluster": cluster_out, "log": log}


def test_nightly_on_cluster_equals_local_mode(spark, setup, wheel, standalone: Cluster) -> None:
    log = setup["log"]
    # the job ran on the standalone master, with the package from the wheel
    assert f"master {standalone.master_url}" in log
    assert re.search(r"lepton_spark \S+ from \S*" + re.escape(wheel.name), log), log[-3000:]
    manifest = json.loads((setup["cluster"] / "runs" / DATE / "_manifest.json").read_text())
    assert set(manifest["tables"]) == set(TABLES)
    _assert_same_tables(spark, setup["cluster"], setup["local"])


def test_driver_loss_resume_and_executor_loss(spark, setup, wheel, standalone: Cluster) -> None:
    """Driver killed after round 1 is recorded; the rerun (same run id) resumes from round 1 and,
    while its round 2 is in flight, loses an executor; it still completes with the undisturbed outputs
    (an undisturbed run of the same job; local mode, which the test above shows equals the cluster)."""
    tmp = setup["tmp"]
    graph = _planted_graph(tmp / "planted")
    undisturbed = tmp / "undisturbed"
    overrides = [f"pipeline.graph_dir={graph}", "pipeline.stages=[build,train,propagate]"]
    run_pipeline(spark, load_config(setup["cfg"], overrides), output=str(undisturbed), run_date=DATE)
    out = tmp / "faults"
    shutil.copytree(undisturbed, out)  # a previously published run of the same date
    before = {t: spark.read.parquet(str(out / "outputs" / t / f"run_date={DATE}")).collect()
              for t in ("embeddings", "predictions")}
    args = [str(ROOT / "jobs" / "nightly.py"), "--config", str(setup["cfg"]), "--run-date", DATE,
            "--output", str(out), *[a for o in overrides for a in ("--set", o)]]
    env = {"LEPTON_FAULT_TASK_SLEEP": SLEEP}

    # 1. driver loss: SIGKILL the whole spark-submit process group (JVM and Python driver) once round 1
    #    is recorded, while round 2's tasks are sleeping
    first = standalone.submit("nightly-driver-kill", args, py_files=wheel, env=env)
    wait_for("round 1 to be recorded", lambda: "propagate[broadcast] round 1/2" in first.text(), 300, proc=first)
    first.kill(signal.SIGKILL)
    assert first.popen.returncode != 0
    work = out / "_work"
    assert list(work.rglob("round-0001/_COMPLETE")), "round 1 was not recorded before the kill"
    assert not list(work.rglob("round-0002/_COMPLETE")), "round 2 finished before the kill"
    # the previously published partition is intact and readable, and no half partition appeared
    for table, rows in before.items():
        assertDataFrameEqual(spark.read.parquet(str(out / "outputs" / table / f"run_date={DATE}")), rows)
        assert sorted(p.name for p in (out / "outputs" / table).iterdir()) == [f"run_date={DATE}"]
    manifest = (out / "runs" / DATE / "_manifest.json").read_text()

    # 2. rerun with the same run id: resumes after round 1; kill one executor JVM mid round 2
    rerun = standalone.submit("nightly-resume", args, py_files=wheel, env=env)
    wait_for("the rerun to resume", lambda: "resuming after round 1/2" in rerun.text(), 300, proc=rerun)
    time.sleep(0.5)  # round 2's tasks are running (each sleeps SLEEP seconds)
    assert "round 2/2" not in rerun.text(), "round 2 finished before the executor kill"
    app = standalone.app_id(rerun)
    assert app, rerun.text()[-3000:]
    victims = standalone.executor_pids(app)
    assert len(victims) == 2, victims
    os.kill(victims[0], signal.SIGKILL)
    log = _finish(rerun)
    assert re.search(r"Lost executor \d+", log), log[-3000:]
    assert "propagate[broadcast] round 1/2" not in log  # round 1 was not recomputed
    assert "stage train: already completed" in log
    _assert_same_tables(spark, out, undisturbed, tables=("embeddings", "predictions"))
    assert (out / "runs" / DATE / "_manifest.json").read_text() != manifest  # a new manifest
    assert not work.exists() or not any(work.iterdir())


def test_packed_env_on_cluster(spark, tmp_path, packed_env: Path, standalone: Cluster) -> None:
    """The nightly submitted with ``--archives env.tar.gz#env`` and ``spark.pyspark.python=./env/bin/python``
    and no ``--py-files``: the executors' Python workers run the archive's interpreter (their
    ``sys.executable`` and ``sys.prefix`` lie in the archive unpacked in the executor's working
    directory), import numpy and scipy from it, and the job publishes what local mode publishes."""
    cfg = _config(tmp_path)
    graph = _planted_graph(tmp_path / "planted")
    overrides = [f"pipeline.graph_dir={graph}", "pipeline.stages=[build,train,propagate]"]
    local = tmp_path / "local"
    run_pipeline(spark, load_config(cfg, overrides), output=str(local), run_date=DATE)
    out, probe = tmp_path / "archive", tmp_path / "probe.json"
    python = "./env/bin/python"
    proc = standalone.submit(
        "nightly-archive",
        [str(ROOT / "tests" / "cluster" / "_archive_job.py"), str(probe), "--config", str(cfg), "--run-date", DATE,
         "--output", str(out), *[a for o in overrides for a in ("--set", o)]],
        archives=f"{packed_env}#env",
        conf={"spark.pyspark.python": python, "spark.pyspark.driver.python": sys.executable,
              "spark.executorEnv.PYSPARK_PYTHON": python},
        env={"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": sys.executable},
    )
    _finish(proc)
    rows = json.loads(probe.read_text())
    assert len(rows) == 4
    work = standalone.procs.root.resolve()
    for row in rows:
        exe = Path(os.path.normpath(row["executable"]))
        assert exe != Path(sys.executable) and exe.parts[-3:] == ("env", "bin", "python"), row
        assert exe.is_relative_to(work), row  # unpacked under a worker's work dir, not the driver's venv
        prefix = Path(row["prefix"])
        assert prefix == exe.parent.parent and (prefix / "pyvenv.cfg").is_file(), row
        for module in ("numpy", "scipy"):
            assert Path(row[module]).is_relative_to(prefix / "lib"), row
    _assert_same_tables(spark, out, local, tables=("embeddings", "predictions"))
