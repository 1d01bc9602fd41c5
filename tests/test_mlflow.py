"""MLflow tracking of the nightly against a file store in a temp dir (``tracking.mlflow_uri=file://...``).

MLflow is optional (``pip install 'lepton-spark[mlflow]'``): without it these tests are skipped with
that reason, and CI runs them in a step of their own with the extra installed.

* a nightly built from raw tables (with dirt, so that rows are quarantined) logs one MLflow run
  tagged with its run id: the flattened config as params; accuracy and loss per epoch, stage and
  round seconds, quarantine counts and table rows as metrics; the report, the model card and the
  manifest as artifacts; the model as a pyfunc model whose driver-side predictions from pandas
  frames equal the nightly's predictions table; and a registered model version;
* a run that fails in propagate leaves its MLflow run FAILED; the rerun (same run id) resumes the
  pipeline and continues that same MLflow run to FINISHED (attempt 2, still one run for the id);
  ``--no-resume`` starts a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lepton_spark.cli import main

mlflow = pytest.importorskip(
    "mlflow", reason="MLflow is optional: pip install 'lepton-spark[mlflow]' (CI runs these tests in their own step)")

DATE = "2026-11-20"
# the pyfunc input is a dict of DataFrames, which MLflow's type-hint signatures cannot express
pytestmark = pytest.mark.filterwarnings("ignore:Add type hints to the `predict` method:UserWarning")


@pytest.fixture(autouse=True)
def _file_store(monkeypatch) -> None:
    # MLflow 3 keeps the file store only on request ("maintenance mode"); a temp dir needs no server
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def _raw_tables(out: Path, n: int = 240, classes: int = 3, dim: int = 8, seed: int = 3) -> tuple[Path, Path]:
    """Raw vertex and edge tables (planted communities) with 2 dangling edges and 3 self-loops."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % classes
    same = label[:, None] == label[None, :]
    adj = np.triu(rng.random((n, n)) < np.where(same, 0.06, 0.004), 1)
    src, dst = np.nonzero(adj)
    src = np.concatenate([src, [0, 1, 2, 5, 6]])
    dst = np.concatenate([dst, [0, 1, 2, n + 10, n + 11]])  # self-loops, then dangling endpoints
    feats = (np.eye(classes, dim)[label] + rng.normal(0, 0.8, (n, dim))).astype(np.float32)
    split = np.array(["train", "val", "test", "test", "test"])[np.arange(n) % 5]
    (out / "vertices").mkdir(parents=True)
    (out / "edges").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array(np.arange(n) * 7 + 1000, pa.int64()),
                             "features": pa.array(list(feats), pa.list_(pa.float32())),
                             "label": pa.array(label, pa.int32()), "split": pa.array(split)}),
                   out / "vertices" / "part-00000.parquet")
    pq.write_table(pa.table({"src": pa.array(src * 7 + 1000, pa.int64()), "dst": pa.array(dst * 7 + 1000, pa.int64())}),
                   out / "edges" / "part-00000.parquet")
    return out / "vertices", out / "edges"


def _args(tmp: Path, out: Path, vertices: Path, edges: Path, *extra: str) -> list[str]:
    sets = [f"build.vertices={vertices}", f"build.edges={edges}", "build.max_quarantine_fraction=0.1",
            "model.type=sgc", "model.params={K: 2}", f"tracking.mlflow_uri=file://{tmp}/mlruns",
            "tracking.experiment=lepton-test", *extra]
    return ["nightly", "--output", str(out), "--run-date", DATE, *[a for s in sets for a in ("--set", s)]]


def _client(tmp: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{tmp}/mlruns", registry_uri=f"file://{tmp}/mlruns")
    exp = client.get_experiment_by_name("lepton-test")
    return client, exp.experiment_id


def _runs_of(client, exp_id: str, run_id: str) -> list:
    return client.search_runs([exp_id], filter_string=f"tags.lepton_run_id = '{run_id}'")


@pytest.fixture(scope="module")
def tracked(spark, tmp_path_factory):
    """One tracked nightly (build from raw tables, train, propagate, report), model registered."""
    tmp = tmp_path_factory.mktemp("mlflow")
    vertices, edges = _raw_tables(tmp / "raw")
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        code = main(_args(tmp, out, vertices, edges, "pipeline.stages=[build,train,propagate,report]",
                          "tracking.registered_model=lepton-nightly"))
    assert code == 0
    manifest = json.loads((out / "runs" / DATE / "_manifest.json").read_text())
    return tmp, out, manifest


def test_one_run_with_params_metrics_artifacts(tracked) -> None:
    tmp, out, manifest = tracked
    client, exp_id = _client(tmp)
    (run,) = _runs_of(client, exp_id, manifest["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == manifest["run_id"]
    assert run.data.tags["lepton_attempts"] == "1" and run.data.tags["lepton_run_date"] == DATE
    params = run.data.params
    assert params["model.type"] == "sgc" and params["model.params.K"] == "2"
    assert params["build.vertices"].endswith("raw/vertices") and params["pipeline.resume"] == "True"
    metrics = run.data.metrics
    card = json.loads((out / "runs" / DATE / "model" / "model.json").read_text())
    assert metrics["test_acc"] == pytest.approx(card["metrics"]["final"]["test_acc"])
    assert metrics["rows.predictions"] == manifest["tables"]["predictions"]["rows"] == 240
    assert sum(v for k, v in metrics.items() if k.startswith("quarantine.")) == sum(
        manifest["counts"]["quarantine"].values()) > 0
    for stage in ("build", "train", "propagate"):
        assert metrics[f"stage_seconds.{stage}"] == pytest.approx(manifest["stage_seconds"][stage])
    rounds = client.get_metric_history(run.info.run_id, "round_seconds.propagate")
    assert sorted(m.step for m in rounds) == [1, 2]
    epochs = client.get_metric_history(run.info.run_id, "epoch_val_acc")
    assert len(epochs) == card["metrics"]["epochs_run"] == len(card["metrics"]["per_epoch"]["epoch"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report", "model_card", "manifest", "model"} <= artifacts
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/index.html" in report
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model_card")} == {"model_card/model.json"}


def test_pyfunc_model_predicts_like_the_nightly(tracked) -> None:
    tmp, out, manifest = tracked
    client, exp_id = _client(tmp)
    (run,) = _runs_of(client, exp_id, manifest["run_id"])
    model = mlflow.pyfunc.load_model(f"{run.info.artifact_uri}/model")
    graph = out / "runs" / DATE / "graph" / "graph"
    vertices = pq.read_table(graph / "vertices", columns=["id", "features"]).to_pandas()
    edges = pq.read_table(graph / "edges").to_pandas()
    got = model.predict({"vertices": vertices, "edges": edges})
    want = pq.read_table(out / "outputs" / "predictions" / f"run_date={DATE}").to_pandas().sort_values("id")
    assert list(got["id"]) == list(want["id"])
    np.testing.assert_allclose(np.stack(got["probs"]), np.stack(want["probs"]), atol=1e-4)
    assert (got["label"].to_numpy() == want["label"].to_numpy()).mean() > 0.99
    # the registry has the run's model as a version of the registered model
    (version,) = client.search_model_versions("name = 'lepton-nightly'")
    assert version.run_id == run.info.run_id


def test_pyfunc_model_rejects_bad_input(tracked) -> None:
    from lepton_spark.errors import InvalidInputError

    tmp, _, manifest = tracked
    client, exp_id = _client(tmp)
    (run,) = _runs_of(client, exp_id, manifest["run_id"])
    model = mlflow.pyfunc.load_model(f"{run.info.artifact_uri}/model")
    import pandas as pd

    with pytest.raises(InvalidInputError, match="missing column"):
        model.predict({"vertices": pd.DataFrame({"id": [1]}), "edges": pd.DataFrame({"src": [1], "dst": [1]})})


def test_failed_run_is_continued_on_resume(spark, tmp_path, monkeypatch) -> None:
    from lepton_spark.pipeline import stages

    vertices, edges = _raw_tables(tmp_path / "raw")
    out = tmp_path / "out"
    args = _args(tmp_path, out, vertices, edges, "pipeline.stages=[build,train,propagate]")

    def boom(ctx) -> None:
        raise RuntimeError("executor lost (injected)")

    with monkeypatch.context() as mp:
        mp.setattr(stages, "propagate_stage", boom)
        assert main(args) == 1
    client, exp_id = _client(tmp_path)
    (failed,) = client.search_runs([exp_id])
    run_id = failed.data.tags["lepton_run_id"]
    assert failed.info.status == "FAILED" and "executor lost" in failed.data.tags["lepton_error"]
    assert main(args) == 0  # same run id: the pipeline resumes after train
    (run,) = _runs_of(client, exp_id, run_id)
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["lepton_attempts"] == "2"
    assert "rows.predictions" in run.data.metrics
    # --no-resume restarts the run id, and with it its MLflow run
    assert main([*args, "--no-resume"]) == 0
    runs = _runs_of(client, exp_id, run_id)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
