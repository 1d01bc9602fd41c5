"""JSON log lines (``--log-format json`` / ``logging.format``): every stderr line parses, with context.

* the formatter and context filter on their own (no Spark): keys, run_id/stage/round scoping, a
  traceback and a multi-line message each stay on one line;
* a config error under ``--log-format json`` is one JSON object with ``exit_code`` 2;
* the nightly as a subprocess (its own JVM, so the JVM's log4j lines are JSON too): every stderr line
  is a JSON object -- except the JVM launcher's own start-up notice, which no logging framework
  writes -- stage lines carry run_id and stage, round lines carry the round, and some lines come
  from Spark's JVM loggers.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from lepton_spark import logs
from lepton_spark.cli import main

from .conftest import ROOT

#: printed by the JVM itself (module system) before log4j starts; not a log record
JVM_NOTICE = "WARNING: Using incubator modules"


@pytest.fixture(autouse=True)
def _text_logging_after():
    """In-process CLI calls configure the root logger; leave it as the rest of the suite expects."""
    yield
    logs.setup_logging(False, "text")


def _capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("lepton_spark.test_logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_formatter_lines_and_context() -> None:
    logger, stream = _capture()
    logger.info("outside %s", "any run")
    with logs.run_context("2026-11-01-abc"):
        logs.set_stage("propagate")
        logger.info("stage line")
        logs.set_round(2)
        logger.warning("round line\nwith a second line")
        logs.set_round(None)
        logs.set_stage("publish")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    logger.info("after the run")
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(docs) == 5
    for d in docs:
        assert {"time", "level", "logger", "message"} <= set(d)
        assert d["time"].endswith("Z") and d["logger"] == "lepton_spark.test_logs"
    assert "run_id" not in docs[0] and "stage" not in docs[0]
    assert docs[1] == {**docs[1], "run_id": "2026-11-01-abc", "stage": "propagate", "message": "stage line"}
    assert "round" not in docs[1]
    assert docs[2]["round"] == 2 and docs[2]["level"] == "WARNING"
    assert docs[2]["message"] == "round line\nwith a second line"
    assert docs[3]["stage"] == "publish" and "round" not in docs[3]
    assert "ValueError: boom" in docs[3]["exc"] and docs[3]["level"] == "ERROR"
    assert "run_id" not in docs[4] and "stage" not in docs[4]  # the context ended with the block


def test_setup_logging_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="log format 'xml'"):
        logs.setup_logging(False, "xml")


def test_config_error_is_one_json_line(capsys) -> None:
    assert main(["describe", "--log-format", "json", "--set", "train.epochz=1"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    doc = json.loads(lines[0])
    assert doc["level"] == "ERROR" and doc["exit_code"] == 2
    assert doc["message"].startswith("lepton-spark: error: unknown config key train.epochz")


def test_text_stays_the_default(capsys) -> None:
    assert main(["describe", "--set", "train.epochz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lepton-spark: error: unknown config key")


def test_logging_format_config_key(tmp_path) -> None:
    from lepton_spark.config import ConfigError, load_config

    assert load_config(None, ["logging.format=json"]).logging.format == "json"
    with pytest.raises(ConfigError, match=r"logging\.format"):
        load_config(None, ["logging.format=xml"])
    # observing a run differently must not change what it computes, hence not its run id
    assert load_config(None, ["logging.format=json", "tracking.mlflow_uri=file:///x"]).digest() \
        == load_config().digest()


@pytest.fixture(scope="module")
def nightly_json(tmp_path_factory):
    """The nightly (SGC on Cora, build/train/propagate) in its own process with logging.format json."""
    out = tmp_path_factory.mktemp("json-logs")
    cfg = out / "json.yaml"
    # spark.log.level INFO: the JVM logs at start-up whatever the run does (its JSON lines are checked);
    # a JVM option of the user's (a GC log file) goes beside the project's ones (checked below)
    cfg.write_text("logging:\n  format: json\nspark:\n  driver_memory: 2g\n  shuffle_partitions: 4\n"
                   f"  extra:\n    spark.log.level: INFO\n    spark.driver.extraJavaOptions: -Xlog:gc:file={out}/gc.log\n"
                   "model:\n  type: sgc\n  params: {K: 2}\npipeline:\n  stages: [build, train, propagate]\n")
    r = subprocess.run([sys.executable, "-m", "lepton_spark.cli", "nightly", "--config", str(cfg),
                        "--output", str(out / "run"), "--run-date", "2026-11-01"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    r.gc_log = out / "gc.log"
    return r


def test_nightly_stderr_is_json_lines(nightly_json) -> None:
    lines = [ln for ln in nightly_json.stderr.splitlines() if ln.strip()]
    docs = []
    for line in lines:
        if line.startswith(JVM_NOTICE):
            continue
        docs.append(json.loads(line))  # every other line is one JSON object
    assert len(docs) >= 10
    assert all({"time", "level", "logger", "message"} <= set(d) for d in docs)
    run_id = json.loads(nightly_json.stdout.strip().splitlines()[-1])["run_id"]
    stages = {d.get("stage") for d in docs if d["logger"].startswith("lepton_spark")}
    assert {"build", "train", "propagate", "publish"} <= stages
    assert all(d["run_id"] == run_id for d in docs if d.get("stage"))
    rounds = [d for d in docs if "round " in d["message"] and "propagate[" in d["message"]]
    assert [d["round"] for d in rounds] == [1, 2]
    staged = [d for d in docs if d["message"].startswith("staged ")]
    assert staged and all("round" not in d for d in staged)  # the round ends with the loop
    # the JVM's own log4j lines are JSON too
    assert any(d["logger"].startswith("org.apache.spark") for d in docs), lines[:5]


def test_small_nightly_runs_its_jvm_with_c1_only(nightly_json) -> None:
    """spark.jit auto: the nightly's input (the bundled sample graph, well under jit_c1_max_mb) makes
    its local JVM run the client compiler only; the session line reads that from the JVM's own
    arguments, not from the config."""
    ready = [json.loads(ln)["message"] for ln in nightly_json.stderr.splitlines() if "session ready" in ln]
    assert len(ready) == 1 and "jit c1" in ready[0], ready


def test_user_java_options_join_the_project_ones(nightly_json) -> None:
    """spark.extra's spark.driver.extraJavaOptions reaches the local JVM (it wrote the GC log the
    option asked for) without replacing the project's options: the JVM ran the project's collector,
    its log4j configuration (the JVM's lines are JSON, test above) and its JIT choice (test above)."""
    assert "Using Parallel" in nightly_json.gc_log.read_text()
