"""databricks.yml (the Databricks Asset Bundle): structure, the job, and what the job passes the CLI.

No workspace is needed:

* the bundle's envelope (bundle, variables, artifacts, workspace, sync, targets) validates against
  the schema pinned in ``tests/schemas/databricks_bundle.schema.json`` (jsonschema);
* the job, as deployed by each target (the target's overrides merged in), loads into
  ``databricks.bundles.jobs.Job`` -- the job model Databricks generates from its own bundle schema
  and ships on PyPI (databricks-bundles): an unknown key or a wrong type anywhere in it fails;
* the task's parameters, with the bundle's variables and dynamic value references resolved as the
  job run would, parse with ``lepton-spark``'s own argument parser and config loader;
* every path the job reads or writes is a Unity Catalog volume, and no file in conf/, the README or
  the bundle names a DBFS-root path.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from .conftest import ROOT

BUNDLE = ROOT / "databricks.yml"
SCHEMA = ROOT / "tests" / "schemas" / "databricks_bundle.schema.json"
#: dynamic value references the job may use (Databricks' "dynamic value references" page); the
#: job parameters it defines are added per test
DYNAMIC_REFS = {"job.start_time.iso_date": "2026-11-30", "job.id": "123", "job.run_id": "456",
                "job.name": "lepton-spark-nightly", "task.name": "nightly"}
DBFS_ROOT = re.compile(r"dbfs:/|(?<![\w/])/dbfs/", re.IGNORECASE)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return yaml.safe_load(BUNDLE.read_text())


def _merge(base: Any, over: Any) -> Any:
    """A target's overrides on the top-level config (maps merge key by key, as the CLI does)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _resolved(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    """The configuration ``databricks bundle deploy -t target`` deploys (variables not yet substituted)."""
    spec = bundle["targets"][target] or {}
    merged = {k: v for k, v in bundle.items() if k != "targets"}
    for key in ("resources", "workspace", "artifacts", "sync", "bundle"):
        if key in spec:
            merged[key] = _merge(merged.get(key, {}), spec[key])
    variables = {name: v.get("default") for name, v in bundle.get("variables", {}).items()}
    variables.update(spec.get("variables") or {})
    merged["_variables"] = variables
    return merged


def _substitute(text: str, resolved: dict[str, Any], target: str) -> str:
    """``${var.x}``, ``${bundle.*}`` and ``${workspace.*}`` as the CLI would for this target.

    ``${workspace.file_path}`` (where the bundle's files are synced) maps to this checkout, so that
    the parameters' ``conf/`` file is the one in the repository."""
    known = {"bundle.name": resolved["bundle"]["name"], "bundle.target": target,
             "workspace.current_user.userName": "someone@example.com", "workspace.file_path": str(ROOT)}

    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        if key.startswith("var."):
            name = key[4:]
            assert name in resolved["_variables"], f"undefined variable {name}"
            return _substitute(str(resolved["_variables"][name]), resolved, target)
        assert key in known, f"unresolvable reference ${{{key}}}"
        return known[key]

    return re.sub(r"\$\{([^}]+)\}", one, text)


def _dynamic(text: str, job: dict[str, Any]) -> str:
    """``{{job.parameters.x}}`` and the other dynamic value references, as a job run fills them."""
    refs = dict(DYNAMIC_REFS)
    for p in job.get("parameters", []):  # a parameter's default may itself be a (non-parameter) reference
        refs[f"job.parameters.{p['name']}"] = _dynamic(p["default"], {})

    def one(m: re.Match[str]) -> str:
        key = m.group(1).strip()
        assert key in refs, f"unknown dynamic value reference {{{{{key}}}}}"
        return refs[key]

    return re.sub(r"\{\{([^}]+)\}\}", one, text)


def _job(bundle: dict[str, Any], target: str) -> tuple[dict[str, Any], dict[str, Any]]:
    resolved = _resolved(bundle, target)
    (job,) = resolved["resources"]["jobs"].values()
    return resolved, job


def test_bundle_matches_the_pinned_schema(bundle) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the test extras")
    jsonschema.validate(bundle, json.loads(SCHEMA.read_text()))


def test_the_pinned_schema_rejects_a_typo(bundle) -> None:
    """The schema is strict: a misspelt key anywhere in the envelope is an error, as in the CLI."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the test extras")
    schema = json.loads(SCHEMA.read_text())
    for path in (("artifacts", "lepton_spark"), ("targets", "prod"), ("bundle",)):
        bad = copy.deepcopy(bundle)
        node = bad
        for key in path:
            node = node[key]
        node["nmae"] = "typo"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_job_loads_into_databricks_job_model(bundle, target: str) -> None:
    jobs = pytest.importorskip("databricks.bundles.jobs", reason="databricks-bundles comes with the test extras")
    _, job = _job(bundle, target)
    model = jobs.Job.from_dict(copy.deepcopy(job))
    assert model.tasks[0].python_wheel_task.package_name == "lepton_spark"
    with pytest.raises((ValueError, TypeError)):  # the model is strict too (it can fail)
        jobs.Job.from_dict({**copy.deepcopy(job), "schedulle": job["schedule"]})


def test_targets_dev_and_prod(bundle) -> None:
    targets = bundle["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"].get("default") is True
    assert targets["prod"]["mode"] == "production"
    for name in ("dev", "prod"):
        resolved = _resolved(bundle, name)
        assert _substitute(resolved["workspace"]["artifact_path"], resolved, name).startswith("/Volumes/")
        assert _substitute(resolved["workspace"]["root_path"], resolved, name).startswith("/Workspace/")


def test_wheel_artifact_and_task_match_the_package(bundle) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and (BUNDLE.parent / artifact["path"]).resolve() == ROOT
    assert "build" in artifact["build"] and "--wheel" in artifact["build"]
    _, job = _job(bundle, "prod")
    (task,) = job["tasks"]
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == project["name"] and wheel["entry_point"] in project["scripts"]
    assert {"whl": "./dist/*.whl"} in task["libraries"]  # the artifact built above, uploaded by deploy
    assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] > 0
    cron = job["schedule"]["quartz_cron_expression"].split()
    assert len(cron) in (6, 7)  # quartz: seconds minutes hours day-of-month month day-of-week [year]
    assert job["schedule"]["timezone_id"] == "UTC" and job["max_concurrent_runs"] == 1


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_task_parameters_parse_with_the_cli(bundle, target: str) -> None:
    from lepton_spark.cli import build_parser
    from lepton_spark.config import load_config

    resolved, job = _job(bundle, target)
    params = [_dynamic(_substitute(str(p), resolved, target), job)
              for p in job["tasks"][0]["python_wheel_task"]["parameters"]]
    args = build_parser().parse_args(params)
    assert args.command == "nightly"
    assert args.run_date == DYNAMIC_REFS["job.start_time.iso_date"]
    assert Path(args.config) == ROOT / "conf" / "databricks.yaml"
    cfg = load_config(args.config, args.overrides)  # every --set names a real key with a valid value
    assert args.output.startswith("/Volumes/") and cfg.pipeline.graph_dir.startswith("/Volumes/")
    assert cfg.tracking.mlflow_uri == "databricks" and args.log_format == "json"
    spark_conf = job["job_clusters"][0]["new_cluster"]["spark_conf"]
    assert _substitute(spark_conf["spark.checkpoint.dir"], resolved, target).startswith("/Volumes/")
    # a backfill passes another date for the same parameter
    backfill = _dynamic(_substitute(" ".join(map(str, job["tasks"][0]["python_wheel_task"]["parameters"])),
                                    resolved, target), {"parameters": [{"name": "run_date",
                                                                        "default": "2026-01-15"}]})
    assert "--run-date 2026-01-15" in backfill
    assert dt.date.fromisoformat(args.run_date)


def test_no_dbfs_root_paths() -> None:
    files = [BUNDLE, ROOT / "README.md", *sorted((ROOT / "conf").iterdir())]
    hits = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files if f.is_file()
            for m in DBFS_ROOT.finditer(f.read_text())]
    assert not hits, hits
    assert not (ROOT / "conf" / "databricks-job.json").exists()  # replaced by the bundle
