"""MLflow tracking without MLflow: the key set but MLflow missing is a usage error (exit 2, one line),
and the pure helpers that shape what is logged (flattened params, metrics from a manifest and card).
The MLflow round trip itself is tests/test_mlflow.py (run by CI with the [mlflow] extra installed)."""

from __future__ import annotations

import sys

from lepton_spark.cli import main
from lepton_spark.config import load_config
from lepton_spark.tracking import flatten, run_metrics


def test_mlflow_missing_is_exit_2_with_install_hint(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError, as when not installed
    code = main(["nightly", "--output", str(tmp_path / "out"), "--run-date", "2026-11-01",
                 "--set", f"tracking.mlflow_uri=file://{tmp_path}/mlruns"])
    assert code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines == ["lepton-spark: error: tracking.mlflow_uri is set but MLflow is not installed: "
                     "pip install 'lepton-spark[mlflow]' (or mlflow-skinny)"]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_tracking_off_by_default_needs_no_mlflow(monkeypatch) -> None:
    from lepton_spark.tracking import NullTracker, open_run

    monkeypatch.setitem(sys.modules, "mlflow", None)
    tracker = open_run(load_config(), run_id="r", run_date="2026-11-01", command="nightly", resume=True)
    assert isinstance(tracker, NullTracker)


def test_flatten_config_params() -> None:
    cfg = load_config(None, ["model.type=sgc", "model.params={K: 2, lr: 0.2}", "spark.extra.spark.executor.memory=8g"])
    params = flatten(cfg.to_dict())
    assert params["model.type"] == "sgc" and params["model.params.K"] == "2" and params["model.params.lr"] == "0.2"
    assert params["spark.extra.spark.executor.memory"] == "8g"
    assert params["pipeline.stages"] == '["build", "train", "propagate", "analytics", "report"]'
    assert params["tracking.mlflow_uri"] == "" and params["build.feature_cols"] == "[]"
    assert all(isinstance(v, str) for v in params.values())


def test_run_metrics_from_manifest_and_card() -> None:
    manifest = {"stage_seconds": {"build": 2.5, "train": 1.0}, "seconds": 9.0, "report_seconds": 0.5,
                "round_seconds": {"propagate": [0.4, 0.3]},
                "counts": {"quarantine": {"dangling_edge": 3, "self_loop": 0}, "input_vertices": 10,
                           "train": {"test_acc": 0.5}},
                "tables": {"predictions": {"rows": 10}, "embeddings": {"rows": 10}}}
    card = {"metrics": {"final": {"test_acc": 0.81, "val_acc": 0.79, "train_loss": None},
                        "epochs_run": 3, "underfit": False,
                        "per_epoch": {"epoch": [1, 2, 3], "train_acc": [0.3, 0.6, 0.9], "val_loss": [1.0, 0.8, 0.7]}}}
    got = {(name, step): value for name, value, step in run_metrics(manifest, card)}
    assert got[("epoch_train_acc", 1)] == 0.3 and got[("epoch_train_acc", 3)] == 0.9
    assert got[("epoch_val_loss", 2)] == 0.8
    assert got[("test_acc", 0)] == 0.81 and ("train_loss", 0) not in got and ("underfit", 0) not in got
    assert got[("stage_seconds.build", 0)] == 2.5 and got[("seconds", 0)] == 9.0
    assert got[("round_seconds.propagate", 1)] == 0.4 and got[("round_seconds.propagate", 2)] == 0.3
    assert got[("quarantine.dangling_edge", 0)] == 3 and got[("quarantine.self_loop", 0)] == 0
    assert got[("rows.predictions", 0)] == 10 and got[("counts.input_vertices", 0)] == 10
    assert run_metrics({}, None) == []
