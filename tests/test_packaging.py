"""Cluster packaging artefacts: the Airflow DAG (import-checked with stubs), jobs/ (the bundle: test_bundle.py)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_airflow_dag_imports_with_stub_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[dict] = []

    class DAG:
        def __init__(self, **kw):
            self.kw = kw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class SparkSubmitOperator:
        def __init__(self, **kw):
            created.append(kw)

    mods = {
        "airflow": types.ModuleType("airflow"),
        "airflow.providers": types.ModuleType("airflow.providers"),
        "airflow.providers.apache": types.ModuleType("airflow.providers.apache"),
        "airflow.providers.apache.spark": types.ModuleType("airflow.providers.apache.spark"),
        "airflow.providers.apache.spark.operators": types.ModuleType("airflow.providers.apache.spark.operators"),
        "airflow.providers.apache.spark.operators.spark_submit": types.ModuleType("spark_submit"),
    }
    mods["airflow"].DAG = DAG
    mods["airflow.providers.apache.spark.operators.spark_submit"].SparkSubmitOperator = SparkSubmitOperator
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("airflow_nightly", ROOT / "conf" / "airflow_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.dag.kw["dag_id"] == "lepton_spark_nightly"
    (op,) = created
    assert op["application"].endswith("jobs/nightly.py") and op["py_files"].endswith(".whl")
    assert "--run-date" in op["application_args"]


@pytest.mark.parametrize("job", ["build_graph", "train", "propagate", "analytics", "embed", "nightly"])
def test_jobs_are_thin_entry_points(job: str) -> None:
    spec = importlib.util.spec_from_file_location(f"job_{job}", ROOT / "jobs" / f"{job}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--help"]) == 0
