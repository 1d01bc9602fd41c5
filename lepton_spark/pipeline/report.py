"""``lepton-spark report RUN_DIR``: an HTML page with PNG plots for one run.

Plots: training curve (loss/accuracy per epoch from the model card; validation AUC/AP for a link
model), degree distribution of the graph, seconds per propagation round and per stage, the class
distribution of the predictions and, for a link model, the histogram of the edge and link scores.
Everything is read from the run's manifest, model card and published outputs, so the report can be
regenerated at any time. When the model card (or, for older cards, the manifest's train counts) flags
the fit as ``underfit`` – final train accuracy near the majority-class rate, see
:func:`lepton_spark.models.trainer.underfit_check` – the page starts with a warning line naming both
numbers. Written with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from lepton_spark import storage
from lepton_spark.errors import InvalidInputError

log = logging.getLogger(__name__)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(spark: SparkSession, run_dir: str, output: str | None = None) -> str:
    """Write ``<run_dir>/report/index.html`` (+ PNGs); returns the page's path."""
    manifest_path = storage.join_path(run_dir, "_manifest.json")
    if not storage.path_exists(manifest_path):
        raise InvalidInputError(f"{run_dir}: no _manifest.json (not a completed run directory)")
    try:
        manifest = json.loads(storage.read_text(manifest_path))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{manifest_path}: not valid JSON ({exc})") from None
    output = output or manifest.get("config", {}).get("pipeline", {}).get("output") or ""
    plt = _plt()
    tmp = Path(tempfile.mkdtemp(prefix="lepton-report-"))
    figures: list[tuple[str, str]] = []
    try:
        card = _card(manifest)
        history = ((card or {}).get("metrics") or {}).get("per_epoch") or {}
        if history.get("epoch"):
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={**_MARGINS, "left": 0.07})
            for key in ("train_loss", "val_loss"):
                if history.get(key):
                    ax[0].plot(history["epoch"], history[key], label=key)
            for key in ("train_acc", "val_acc", "val_auc", "val_ap"):  # AUC/AP: link models
                if history.get(key):
                    ax[1].plot(history["epoch"], history[key], label=key)
            ax[0].set(title="loss", xlabel="epoch")
            ax[1].set(title="AUC / AP" if history.get("val_auc") else "accuracy", xlabel="epoch")
            ax[0].legend()
            ax[1].legend()
            figures.append((_save(fig, tmp, "training_curve.png", plt), "Training curve"))
        graph_dir = manifest.get("graph_dir")
        if graph_dir and storage.path_exists(graph_dir):
            # the build records the histogram in _graph.json (symmetric graphs); else one Spark job
            deg = storage.read_graph_meta(graph_dir).get("in_degree_histogram")
            if deg is None:
                _, edges = storage.read_graph(spark, graph_dir)
                deg = edges.groupBy("dst").count().groupBy("count").count().orderBy("count").collect()
            if deg:
                fig, ax = plt.subplots(figsize=(5, 3.5), gridspec_kw=_MARGINS)
                ax.loglog([r[0] for r in deg], [r[1] for r in deg], "o", markersize=3)
                ax.set(title="in-degree distribution", xlabel="degree", ylabel="vertices")
                figures.append((_save(fig, tmp, "degree_distribution.png", plt), "Degree distribution"))
        rounds = {k: v for k, v in (manifest.get("round_seconds") or {}).items() if v}
        stages = manifest.get("stage_seconds") or {}
        if rounds or stages:
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={**_MARGINS, "left": 0.06, "wspace": 0.3})
            for name, secs in rounds.items():
                ax[0].bar(range(1, len(secs) + 1), secs, label=name)
            ax[0].set(title="seconds per propagation round", xlabel="round")
            ax[1].barh(list(stages), list(stages.values()))
            ax[1].set(title="seconds per stage")
            figures.append((_save(fig, tmp, "timings.png", plt), "Timings"))
        links = (manifest.get("counts") or {}).get("links") or {}
        if links.get("edge_score_histogram"):  # link models: score histograms recorded by the links stage
            bins = int(links.get("histogram_bins") or len(links["edge_score_histogram"]))
            edges_x = [(i + 0.5) / bins for i in range(bins)]
            fig, ax = plt.subplots(figsize=(6, 3.5), gridspec_kw=_MARGINS)
            ax.bar(edges_x, links["edge_score_histogram"], width=0.9 / bins, alpha=0.6, label="edge_scores")
            ax.bar(edges_x, links.get("prediction_score_histogram") or [0] * bins, width=0.9 / bins, alpha=0.6,
                   label="link_predictions")
            ax.set(title="link scores", xlabel="score = sigmoid(z_u . z_v)", ylabel="pairs", yscale="log")
            ax.legend()
            figures.append((_save(fig, tmp, "link_scores.png", plt), "Link score histogram"))
        # the propagate stage counted its predictions per class; a manifest from before that: one Spark job
        classes = (manifest.get("counts") or {}).get("predictions_by_label")
        pred_path = storage.join_path(output, "outputs", "predictions", f"run_date={manifest['run_date']}") if output else ""
        if classes is None and pred_path and storage.path_exists(pred_path):
            classes = [[r["label"], r["count"]] for r in
                       spark.read.parquet(pred_path).groupBy("label").count().orderBy("label").collect()]
        if classes:
            fig, ax = plt.subplots(figsize=(5, 3.5), gridspec_kw=_MARGINS)
            ax.bar([str(v) for v, _ in classes], [c for _, c in classes])
            ax.set(title="predicted class distribution", xlabel="class", ylabel="vertices")
            figures.append((_save(fig, tmp, "prediction_classes.png", plt), "Predicted classes"))
        (tmp / "index.html").write_text(_html(manifest, card, figures))
        storage.upload_dir(tmp, storage.join_path(run_dir, "report"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    page = storage.join_path(run_dir, "report", "index.html")
    log.info("report written to %s (%d plots)", page, len(figures))
    return page


def _card(manifest: dict[str, Any]) -> dict[str, Any] | None:
    model_dir = (manifest.get("model") or {}).get("dir")
    if not model_dir:
        return None
    path = storage.join_path(model_dir, "model.json")
    if not storage.path_exists(path):
        return None
    return json.loads(storage.read_text(path))


def _fit_check(manifest: dict[str, Any], card: dict[str, Any] | None) -> dict[str, Any]:
    """``train_acc``, ``majority_rate``, ``underfit``, ``feature_norm`` of the run's model: from the
    model card's metrics, else from the manifest's train counts (empty when neither has them)."""
    metrics = (card or {}).get("metrics") or {}
    out: dict[str, Any] = {}
    if metrics.get("underfit") is not None:
        out = {"train_acc": (metrics.get("final") or {}).get("train_acc"), "underfit": metrics.get("underfit"),
               "majority_rate": metrics.get("majority_rate"),
               "feature_norm": ((card or {}).get("normalisation") or {}).get("feature_norm")}
    else:
        counts = (manifest.get("counts") or {}).get("train") or {}
        if counts.get("underfit") is not None:
            out = {k: counts.get(k) for k in ("train_acc", "underfit", "majority_rate", "feature_norm")}
    return out


#: fixed figure margins (fractions of the figure) with room for the tick and axis labels, instead of
#: ``tight_layout``, which measures every text in an extra draw (0.56 of the 1.2 s four plots took)
_MARGINS = {"left": 0.14, "right": 0.97, "bottom": 0.15, "top": 0.91, "wspace": 0.25}


def _save(fig: Any, folder: Path, name: str, plt: Any) -> str:
    fig.savefig(folder / name, dpi=90)
    plt.close(fig)
    return name


def _html(manifest: dict[str, Any], card: dict[str, Any] | None, figures: list[tuple[str, str]]) -> str:
    esc = html.escape
    rows = [("run id", manifest.get("run_id")), ("run date", manifest.get("run_date")),
            ("created", manifest.get("created")), ("spark", manifest.get("spark_version")),
            ("engine", manifest.get("engine")), ("seconds", manifest.get("seconds"))]
    if card:
        m = (card.get("metrics") or {}).get("final") or {}
        rows += [("model", card.get("model_type")), ("test accuracy", m.get("test_acc")),
                 ("val accuracy", m.get("val_acc")), ("train accuracy", m.get("train_acc")),
                 ("feature normalisation", (card.get("normalisation") or {}).get("feature_norm"))]
        rows += [(k.replace("_", " ").replace("auc", "AUC").replace("ap", "AP"), m[k])
                 for k in ("test_auc", "test_ap", "val_auc", "val_ap") if m.get(k) is not None]
    fit = _fit_check(manifest, card)
    if fit.get("majority_rate") is not None:
        rows.append(("majority-class rate (train)", fit["majority_rate"]))
    warning = ""
    if fit.get("underfit"):
        warning = (f'<p class="warn">WARNING: the model looks underfit: final train accuracy '
                   f'{esc(str(fit.get("train_acc")))} is near the majority-class rate '
                   f'{esc(str(fit.get("majority_rate")))}. Check model.params feature_norm '
                   f'(resolved: {esc(str(fit.get("feature_norm")))}), epochs and lr.</p>')
    table_rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    tables = "".join(f"<tr><td>{esc(t)}</td><td>{esc(str(i.get('rows')))}</td></tr>"
                     for t, i in (manifest.get("tables") or {}).items())
    imgs = "".join(f'<figure><img src="{esc(f)}" alt="{esc(c)}"><figcaption>{esc(c)}</figcaption></figure>'
                   for f, c in figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Lepton Spark run {esc(str(manifest.get('run_date')))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}}figure{{display:inline-block;margin:1em}}
.warn{{color:#a00;font-weight:bold;border:2px solid #a00;padding:6px 10px;background:#fee}}</style>
</head><body><h1>Lepton Spark run {esc(str(manifest.get('run_id')))}</h1>
{warning}<table>{table_rows}</table><h2>Published tables</h2><table><tr><th>table</th><th>rows</th></tr>{tables}</table>
<h2>Plots</h2>{imgs}</body></html>
"""
