"""The installed ``lepton-spark`` console script and the ``jobs/`` entry points, run for real.

build -> train -> propagate -> analytics -> embed -> report on a small raw graph through the
``jobs/*.py`` spark-submit entry points in-process (each calls ``cli.main`` with its subcommand:
the documented JSON last line on stdout, parsed and checked against the files written); the first
two steps through the installed console script, each in its own process (the entry point, exit 0,
the JSON last line of a real process); and the exit-1 contract of an internal error: one line on
stderr, the traceback only under ``--debug``. (The console script ran all six steps until the CI
run neared its 30-minute budget: six JVMs, 70-94 s, for the same ``cli.main`` the in-process chain
runs; ``tests/test_logs.py`` and ``tests/test_crash.py`` run whole nightlies as processes.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import ROOT
from .rawgraph import DANGLING, NIGHTLY_OVERRIDES, N, write_raw_graph

CLI = Path(sys.executable).parent / "lepton-spark"
DATE = "2026-11-03"
MODEL_SETS = [s for s in NIGHTLY_OVERRIDES if s.startswith(("model.", "embed."))]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not CLI.is_file():
        pytest.fail(f"console script {CLI} not installed (pip install -e .)")
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})})


def _last_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def _rows(out: Path, table: str) -> int:
    return pq.read_table(out / "outputs" / table / f"run_date={DATE}").num_rows


def _chain(run, tmp: Path) -> dict[str, dict]:
    """Run the six steps with ``run(command, *args) -> summary``; return the summaries by command."""
    v, e = write_raw_graph(tmp / "raw")
    g, m, o = tmp / "graph", tmp / "model", tmp / "out"
    common = [*_sets(MODEL_SETS), "--set", "spark.shuffle_partitions=4"]
    dated = ["--graph", str(g / "graph"), "--output", str(o), "--run-date", DATE, *common]
    return {
        "build": run("build", "--vertices", v, "--edges", e, "--output", str(g), *common),
        "train": run("train", "--graph", str(g / "graph"), "--output", str(m), *common),
        "propagate": run("propagate", *dated, "--model", str(m)),
        "analytics": run("analytics", *dated),
        "embed": run("embed", *dated),
        "report": run("report", str(o / "runs" / DATE), *common),
    }


def _check_chain(s: dict[str, dict], tmp: Path) -> None:
    g, m, o = tmp / "graph", tmp / "model", tmp / "out"
    b = s["build"]
    assert b["command"] == "build" and b["vertices_out"] == N and b["quarantine"]["dangling_edge"] == DANGLING
    assert b["edges_out"] == pq.read_table(g / "graph" / "edges").num_rows > 0
    assert json.loads((g / "build_report.json").read_text())["counts"]["edges_out"] == b["edges_out"]
    t = s["train"]
    card = json.loads((m / "model.json").read_text())
    assert t["command"] == "train" and t["model_type"] == "sgc"
    assert t["test_acc"] == card["metrics"]["final"]["test_acc"] and 0.5 < t["test_acc"] <= 1.0
    assert s["propagate"]["tables"] == {"embeddings": N, "predictions": N} == {
        k: _rows(o, k) for k in ("embeddings", "predictions")}
    assert s["analytics"]["tables"] == {k: N for k in ("pagerank", "components", "communities")} == {
        k: _rows(o, k) for k in ("pagerank", "components", "communities")}
    assert s["embed"]["tables"] == {"walk_embeddings": N} == {"walk_embeddings": _rows(o, "walk_embeddings")}
    for cmd in ("propagate", "analytics", "embed"):
        assert s[cmd]["run_date"] == DATE and s[cmd]["command"] == cmd and s[cmd]["seconds"] >= 0
    page = Path(s["report"]["report"])
    assert page.is_file() and page.parent == o / "runs" / DATE / "report" and "<html" in page.read_text().lower()


def test_console_script_runs_build_and_train(tmp_path) -> None:
    def run(cmd: str, *args: str) -> dict:
        r = _cli(cmd, *args)
        assert r.returncode == 0, (cmd, r.stderr[-2000:])
        summary = _last_json(r.stdout)
        assert summary["command"] == cmd
        return summary

    v, e = write_raw_graph(tmp_path / "raw")
    g, m = tmp_path / "graph", tmp_path / "model"
    common = [*_sets(MODEL_SETS), "--set", "spark.shuffle_partitions=4"]
    b = run("build", "--vertices", v, "--edges", e, "--output", str(g), *common)
    assert b["vertices_out"] == N and b["quarantine"]["dangling_edge"] == DANGLING
    assert b["edges_out"] == pq.read_table(g / "graph" / "edges").num_rows > 0
    t = run("train", "--graph", str(g / "graph"), "--output", str(m), *common)
    card = json.loads((m / "model.json").read_text())
    assert t["model_type"] == "sgc" and t["test_acc"] == card["metrics"]["final"]["test_acc"]


def test_job_scripts_run_every_stage(spark, tmp_path, capsys) -> None:
    jobs = {"build": "build_graph", "train": "train", "propagate": "propagate", "analytics": "analytics",
            "embed": "embed"}

    def run(cmd: str, *args: str) -> dict:
        if cmd == "report":
            from lepton_spark.cli import main
            rc = main([cmd, *args])
        else:
            spec = importlib.util.spec_from_file_location(f"job_{cmd}", ROOT / "jobs" / f"{jobs[cmd]}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            rc = module.main(list(args))
        captured = capsys.readouterr()
        assert rc == 0, (cmd, captured.err[-2000:])
        return _last_json(captured.out)

    _check_chain(_chain(run, tmp_path), tmp_path)


def test_internal_error_is_one_line_exit_1_traceback_only_with_debug(tmp_path) -> None:
    args = ["analytics", "--output", str(tmp_path / "o"), "--run-date", DATE]
    env = {"LEPTON_FAIL_AFTER": "stage:analytics"}
    r = _cli(*args, env=env)
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("lepton-spark:")]
    assert errors == ["lepton-spark: error: InjectedFault: fault injected after stage:analytics "
                      "(LEPTON_FAIL_AFTER)"], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stdout.strip() == ""
    assert not (tmp_path / "o" / "outputs").exists()
    # (a rerun into the same output would resume the crashed run id and succeed: another output)
    d = _cli("analytics", "--output", str(tmp_path / "o2"), "--run-date", DATE, "--debug", env=env)
    assert d.returncode == 1 and "Traceback (most recent call last)" in d.stderr
