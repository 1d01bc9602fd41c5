"""Optional MLflow tracking of pipeline runs (``tracking.mlflow_uri``; "" = off).

One MLflow run per pipeline run id, found again by its ``lepton_run_id`` tag:

* the command line opens the MLflow run before Spark starts (:func:`open_run`): it continues the
  unfinished MLflow run of the same run id (the nightly resumes: same id) or starts one, and logs
  the flattened config as params;
* a failed attempt marks the MLflow run FAILED (KILLED on Ctrl-C); the rerun that resumes the
  pipeline run continues that MLflow run (``lepton_attempts`` counts the attempts);
* when the pipeline has published, :meth:`MlflowTracker.finish` logs the metrics (accuracy and loss
  per epoch, final accuracies, stage and round seconds, quarantine counts, table rows, graph counts),
  the artifacts (the run report, the model card, the manifest), the model as a ``pyfunc`` model
  (:mod:`lepton_spark.mlflow_model`) and, with ``tracking.registered_model``, a new model version;
  then marks the run FINISHED.

A rerun of a run id whose MLflow run FINISHED (a finished date recomputed), or ``--no-resume``,
starts a new MLflow run: the finished one stays the record of its execution.

MLflow is an optional dependency (``pip install 'lepton-spark[mlflow]'``: mlflow-skinny). With the key
set and MLflow missing the command fails before any work with exit code 2 and one line saying so.
A tracking failure *after* the outputs were published is logged as an error and does not fail the
run: the tables are already public, and a retry would recompute the whole night.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from lepton_spark import storage
from lepton_spark.config import Config
from lepton_spark.errors import LeptonError, UsageError

log = logging.getLogger(__name__)

RUN_ID_TAG = "lepton_run_id"
INSTALL_HINT = "pip install 'lepton-spark[mlflow]' (or mlflow-skinny)"
_UNFINISHED = ("RUNNING", "SCHEDULED", "FAILED", "KILLED")
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
#: the pyfunc model's code (MLflow "models from code") and the name of its weights artifact
PYFUNC_CODE = Path(__file__).resolve().parent / "mlflow_model.py"
MODEL_ARTIFACT = "lepton_model"


class TrackingError(LeptonError):
    """The tracking server could not be used to open the run (exit code 1)."""


def require_mlflow() -> Any:
    """Import MLflow, or raise :class:`UsageError` (exit 2) saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise UsageError(f"tracking.mlflow_uri is set but MLflow is not installed: {INSTALL_HINT}") from None
    return mlflow


class NullTracker:
    """Tracking off: every hook does nothing."""

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def finish(self, manifest: Mapping[str, Any], output: str) -> None:
        """Nothing to log."""


def open_run(cfg: Config, *, run_id: str, run_date: str, command: str, resume: bool) -> NullTracker | MlflowTracker:
    """The tracker of one pipeline run: :class:`NullTracker` when ``tracking.mlflow_uri`` is "".

    Parameters
    ----------
    cfg : Config
        The resolved config (its ``tracking`` section, and the params to log).
    run_id, run_date : str
        The pipeline run's id and date.
    command : str
        The subcommand (nightly, propagate, ...), recorded as a tag.
    resume : bool
        Whether the pipeline continues an interrupted run id (then its unfinished MLflow run is
        continued; otherwise a new MLflow run starts).
    """
    if not cfg.tracking.mlflow_uri:
        return NullTracker()
    require_mlflow()
    return MlflowTracker(cfg, run_id=run_id, run_date=run_date, command=command, resume=resume)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"section.key": "value"}``; lists as JSON, empty mappings as ``{}``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, Mapping | list | tuple):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = str(value)
    return {k: v[:_MAX_PARAM_CHARS] for k, v in out.items()}


def run_metrics(manifest: Mapping[str, Any], card: Mapping[str, Any] | None) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` of everything numeric worth plotting from a manifest and model card.

    Accuracy and loss per epoch (``epoch_<name>``, step = epoch), final accuracies, stage seconds,
    propagation round seconds (``round_seconds.<stage>``, step = round), quarantine counts per rule,
    rows per published table and the graph counts.
    """
    out: list[tuple[str, float, int]] = []

    def add(name: str, value: Any, step: int = 0) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        out.append((name, float(value), int(step)))

    metrics = (card or {}).get("metrics") or {}
    per_epoch = metrics.get("per_epoch") or {}
    epochs = per_epoch.get("epoch") or []
    for name, values in per_epoch.items():
        if name == "epoch" or not isinstance(values, list):
            continue
        for i, value in enumerate(values):
            add(f"epoch_{name}", value, int(epochs[i]) if i < len(epochs) else i)
    for name, value in (metrics.get("final") or {}).items():
        add(name, value)
    for name in ("epochs_run", "best_epoch", "fit_seconds", "majority_rate"):
        add(name, metrics.get(name))
    for stage, secs in (manifest.get("stage_seconds") or {}).items():
        add(f"stage_seconds.{stage}", secs)
    add("seconds", manifest.get("seconds"))
    add("report_seconds", manifest.get("report_seconds"))
    for key, rounds in (manifest.get("round_seconds") or {}).items():
        for k, secs in enumerate(rounds or [], start=1):
            add(f"round_seconds.{key}", secs, k)
    counts = manifest.get("counts") or {}
    for rule, n in (counts.get("quarantine") or {}).items():
        add(f"quarantine.{rule}", n)
    for key in ("input_vertices", "input_edges", "graph_vertices", "graph_edges"):
        add(f"counts.{key}", counts.get(key))
    from lepton_spark.pipeline.runner import published_tables

    for table, info in published_tables(manifest).items():
        add(f"rows.{table}", (info or {}).get("rows"))
    return out


class MlflowTracker:
    """Tracks one pipeline run in MLflow (see the module docstring); a context manager around the run."""

    def __init__(self, cfg: Config, *, run_id: str, run_date: str, command: str, resume: bool) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.pipeline_run_id = run_id
        uri = cfg.tracking.mlflow_uri
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            self.mlflow_run_id = self._open(run_id, run_date, command, resume)
        except MlflowException as exc:
            raise TrackingError(f"MLflow tracking at {uri}: {storage.first_line(exc)}") from None
        self._finished = False

    # ------------------------------------------------------------------------------ open

    def _experiment_id(self) -> str:
        name = self.cfg.tracking.experiment
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else self.client.create_experiment(name)

    def _open(self, run_id: str, run_date: str, command: str, resume: bool) -> str:
        exp_id = self._experiment_id()
        found = self.client.search_runs([exp_id], filter_string=f"tags.{RUN_ID_TAG} = '{run_id}'",
                                        order_by=["attributes.start_time DESC"], max_results=50)
        unfinished = [r for r in found if r.info.status in _UNFINISHED]
        if resume and unfinished:
            run = unfinished[0]
            rid = run.info.run_id
            attempts = int(run.data.tags.get("lepton_attempts", "1")) + 1
            self.client.update_run(rid, status="RUNNING")
            self.client.set_tag(rid, "lepton_attempts", str(attempts))
            log.info("mlflow: continuing run %s of run id %s (attempt %d)", rid, run_id, attempts)
        else:
            for stale in unfinished:  # --no-resume: the pipeline run restarts, so does its MLflow run
                self.client.set_terminated(stale.info.run_id, status="KILLED")
            tags = {RUN_ID_TAG: run_id, "lepton_run_date": run_date, "lepton_command": command,
                    "lepton_config_sha256": self.cfg.digest(), "lepton_attempts": "1"}
            run = self.client.create_run(exp_id, run_name=run_id, tags=tags)
            rid = run.info.run_id
            log.info("mlflow: started run %s for run id %s (experiment %s)", rid, run_id,
                     self.cfg.tracking.experiment)
        self._log_params(rid, run.data.params)
        return rid

    def _log_params(self, rid: str, existing: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        params = flatten(self.cfg.to_dict())
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:  # MLflow params are immutable; a resumed run id has the same config anyway
            log.warning("mlflow: params %s differ from the run's logged values; kept the logged ones",
                        ", ".join(changed[:5]))
        new = [Param(k, v) for k, v in sorted(params.items()) if k not in existing]
        for i in range(0, len(new), 100):  # MLflow's batch limit for params
            self.client.log_batch(rid, params=new[i:i + 100])

    # ------------------------------------------------------------------------------ finish

    def __enter__(self) -> MlflowTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or self._finished:
            return
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            if exc is not None:
                self.client.set_tag(self.mlflow_run_id, "lepton_error", storage.first_line(exc)[:5000])
            self.client.set_terminated(self.mlflow_run_id, status=status)
            log.info("mlflow: run %s marked %s", self.mlflow_run_id, status)
        except Exception as err:  # noqa: BLE001 - never hide the pipeline's own error
            log.error("mlflow: could not mark run %s %s: %s", self.mlflow_run_id, status, storage.first_line(err))

    def finish(self, manifest: Mapping[str, Any], output: str) -> None:
        """Log metrics, artifacts and the model of a completed run; mark the MLflow run FINISHED.

        Parameters
        ----------
        manifest : Mapping
            The run's manifest (``run_pipeline``'s return value).
        output : str
            The pipeline's output root (the report is under ``runs/<run date>/report``).
        """
        try:
            self._finish(manifest, output)
        except Exception as exc:  # noqa: BLE001 - outputs are published; see the module docstring
            log.error("mlflow: tracking the finished run %s failed (outputs are published): %s",
                      self.pipeline_run_id, storage.first_line(exc))
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.mlflow_run_id, status="FAILED")
        self._finished = True

    def _finish(self, manifest: Mapping[str, Any], output: str) -> None:
        from mlflow.entities import Metric

        rid = self.mlflow_run_id
        model_dir = (manifest.get("model") or {}).get("dir") or ""
        card = None
        with storage.local_copy(storage.join_path(model_dir, "model.json") if model_dir else "") as card_path:
            if card_path is not None:
                card = json.loads(card_path.read_text())
                self.client.log_artifact(rid, str(card_path), "model_card")
        now = _now_ms()
        metrics = [Metric(name, value, now, step) for name, value, step in run_metrics(manifest, card)]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit for metrics
            self.client.log_batch(rid, metrics=metrics[i:i + 1000])
        tags = {"lepton_manifest_created": str(manifest.get("created", "")),
                "lepton_engine": str(manifest.get("engine", ""))}
        if card:
            tags["lepton_model_sha256"] = str((card.get("weights") or {}).get("sha256", ""))
            tags["lepton_model_type"] = str(card.get("model_type", ""))
        self.client.log_batch(rid, tags=[_tag(k, v) for k, v in tags.items()])
        run_dir = storage.join_path(output.rstrip("/"), "runs", str(manifest.get("run_date", "")))
        with storage.local_copy(storage.join_path(run_dir, "report")) as report:
            if report is not None:
                self.client.log_artifacts(rid, str(report), "report")
        with storage.local_copy(storage.join_path(run_dir, "_manifest.json")) as path:
            if path is not None:
                self.client.log_artifact(rid, str(path), "manifest")
        if model_dir:
            with storage.local_copy(model_dir) as local_model:
                if local_model is not None:
                    self._log_pyfunc(rid, local_model)
        self.client.set_terminated(rid, status="FINISHED")
        log.info("mlflow: run %s finished (%d metrics logged)", rid, len(metrics))

    def _log_pyfunc(self, rid: str, model_dir: Path) -> None:
        """Save the model as a pyfunc model (models from code, no pickle) and log it as ``model``."""
        import mlflow.pyfunc

        from lepton_spark import __version__

        with tempfile.TemporaryDirectory(prefix="lepton-pyfunc-") as tmpdir:
            weights = Path(tmpdir) / "weights"
            weights.mkdir()
            for name in ("model.npz", "model.json"):
                shutil.copy2(model_dir / name, weights / name)
            target = Path(tmpdir) / "model"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "add type hints": input is a dict of frames
                mlflow.pyfunc.save_model(
                    str(target), python_model=str(PYFUNC_CODE),
                    artifacts={MODEL_ARTIFACT: str(weights)},
                    pip_requirements=[f"lepton_spark=={__version__}", "numpy", "scipy", "pandas", "pyarrow"],
                )
            self.client.log_artifacts(rid, str(target), "model")
        if self.cfg.tracking.registered_model:
            self._register(rid)

    def _register(self, rid: str) -> None:
        from mlflow.exceptions import MlflowException

        name = self.cfg.tracking.registered_model
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        source = f"{self.client.get_run(rid).info.artifact_uri}/model"
        version = self.client.create_model_version(name, source, run_id=rid,
                                                   tags={RUN_ID_TAG: self.pipeline_run_id})
        log.info("mlflow: registered model %s version %s", name, version.version)


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value[:5000])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
