"""Weights artifact: ``model.npz`` (plain float arrays, loaded with ``allow_pickle=False``) + ``model.json``.

The JSON model card records: format/version, model type and class, hyper-parameters, input/output
dims, every learned array's shape (and the layer list), the normalisation used (features and
adjacency), what the embedding is, training metrics (per-epoch history, final train/val/test
accuracy, the majority-class rate and the ``underfit`` flag), the data fingerprint (vertex/edge
counts, feature dim, a sha256 of the split) and the sha256 + size of ``model.npz``.

Feature normalisation: ``hyperparameters.feature_norm`` is what was asked for (``auto`` by default);
``normalisation.feature_norm`` is what it resolved to at fit time (row | standard | none). For
``standard`` the fitted per-column statistics are two more arrays of ``model.npz``,
``feature_norm.mean`` and ``feature_norm.scale`` (so the sha256 covers them, and their shapes are in
``param_shapes``). Cards written before ``auto`` existed (format version 1) have no resolved mode;
their ``hyperparameters.feature_norm`` (row or none) is the resolved mode.

``card_sha256`` (format version 3) is a sha256 over every card field that changes predictions -- model
type, hyper-parameters (K, alpha, ...), input and output dims, array shapes, the resolved feature
normalisation -- and the weights' sha256, so editing the card is detected like editing the weights.

:func:`load_model` recomputes the npz sha256 and the card digest and refuses a mismatch, refuses
non-finite weights, loads without pickle, checks
every array's shape against both the card and the architecture the hyper-parameters imply, and –
when given – the graph's feature count and class count. Every refusal is a ``ValueError`` naming the
file and the mismatch. Both files are written atomically (:func:`lepton_spark.storage.atomic_write`: temp file, fsync,
rename), the card last.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lepton_spark import storage
from lepton_spark.models.base import GraphModel
from lepton_spark.models.registry import MODEL_TYPES, create_model

log = logging.getLogger(__name__)

NPZ_NAME = "model.npz"
CARD_NAME = "model.json"
CARD_FORMAT = "lepton-spark-model"
CARD_VERSION = 3
#: versions load_model reads (1: before feature_norm auto/standard; no resolved mode in the card;
#: 1 and 2: no card_sha256, loaded with a warning that the hyper-parameters are not covered)
READABLE_VERSIONS = (1, 2, 3)
#: the card fields that change predictions (covered by card_sha256, with weights.sha256)
PREDICTIVE_FIELDS = ("model_type", "hyperparameters", "num_features", "num_classes", "param_shapes")
#: npz names of the fitted feature statistics (feature_norm "standard")
FEATURE_MEAN, FEATURE_SCALE = "feature_norm.mean", "feature_norm.scale"
SPLIT_NAMES = ("train", "val", "test")

_ADJ_NORM = {
    "gcn": "sym: D^-1/2 (A+I) D^-1/2, D = weighted in-degree incl. one self-loop per vertex",
    "sgc": "sym: D^-1/2 (A+I) D^-1/2, D = weighted in-degree incl. one self-loop per vertex",
    "sign": "sym: D^-1/2 (A+I) D^-1/2, D = weighted in-degree incl. one self-loop per vertex",
    "appnp": "sym: D^-1/2 (A+I) D^-1/2, D = weighted in-degree incl. one self-loop per vertex",
    "sage": "mean over in-neighbours (raw edge weights), no self-loop; no in-edges -> zero",
    "gae": "sym: D^-1/2 (A+I) D^-1/2, D = weighted in-degree incl. one self-loop per vertex (training: "
           "held-out edges removed)",
}
_FEATURE_NORM = {
    "row": "row L1 normalisation (x / sum|x|; zero rows stay zero)",
    "standard": f"standard: (x - {FEATURE_MEAN}) / {FEATURE_SCALE} per column, statistics over all rows of "
                "the training features (scale = std, 1 for constant columns; mean all zero = scaled only, "
                "for sparse features)",
    "none": "none",
}
_EMBEDDING = {
    "gcn": "last hidden layer after ReLU",
    "sage": "last hidden layer after ReLU (and L2 normalisation if normalize)",
    "sgc": "propagated features S^K X (normalised X)",
    "sign": "hidden layer ReLU([X_0 W_0 || ... || X_r W_r] + b)",
    "appnp": "propagated logits Z_K (pre-softmax)",
    "gae": "encoder output Z (VGAE: mu); link score = sigmoid of the inner product z_u . z_v",
}
#: link models' metrics, reported in the card's "final" block next to the accuracies
LINK_METRICS = ("val_auc", "val_ap", "test_auc", "test_ap")


# --------------------------------------------------------------------------------------------------
# hashing / fingerprint
# --------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_hash(ids_by_split: Mapping[str, Any]) -> str:
    """sha256 over the sorted int64 vertex ids of each split, in the order train, val, test.

    Defined on ids (not row positions) so Spark (``id`` column) and local (row index = id) agree.
    """
    h = hashlib.sha256()
    for name in SPLIT_NAMES:
        ids = np.sort(np.asarray(ids_by_split.get(name, []), dtype=np.int64))
        h.update(f"{name}:{ids.size};".encode())
        h.update(ids.astype("<i8").tobytes())
    return h.hexdigest()


def data_fingerprint(A: Any, X: Any, masks: Mapping[str, np.ndarray] | None = None,
                     ids: np.ndarray | None = None) -> dict[str, Any]:
    """Fingerprint of the training data: vertex/edge counts, feature dim, split hash.

    ``num_edges`` counts directed entries of ``A`` (each undirected link twice, like the edge table).
    ``ids`` maps rows to vertex ids (default: row index).
    """
    n = int(A.shape[0])
    Acsr = sp.csr_matrix(A)
    Acsr.sum_duplicates()
    row_ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    by_split = {}
    for name in SPLIT_NAMES:
        if masks is not None and name in masks:
            m = np.asarray(masks[name])
            by_split[name] = row_ids[m] if m.dtype == bool else row_ids[m.astype(np.int64)]
    return {
        "num_vertices": n,
        "num_edges": int(Acsr.nnz),
        "num_features": int(X.shape[1]),
        "split_sizes": {k: len(v) for k, v in by_split.items()},
        "split_sha256": split_hash(by_split),
    }


# --------------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    hist = metrics.get("history") or {}
    final = {k: metrics.get(k) for k in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss")}
    final.update({k: metrics[k] for k in LINK_METRICS if k in metrics})
    out = {"final": final, "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
           "stopped_early": metrics.get("stopped_early"), "seed": metrics.get("seed"),
           "fit_seconds": metrics.get("fit_seconds"), "underfit": metrics.get("underfit"),
           "majority_rate": metrics.get("majority_rate"), "per_epoch": hist}
    extra = {k: v for k, v in metrics.items() if k not in out and k not in final and k != "history"}
    out["other"] = extra
    return out


def save_model(model: GraphModel, out_dir: str | Path, *, metrics: Mapping[str, Any],
               fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``out_dir/model.npz`` and ``out_dir/model.json``; return the card (as written)."""
    model._check_fitted()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz_path, card_path = out / NPZ_NAME, out / CARD_NAME
    arrays = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in model.params_.items()}
    norm = model._feature_transform()
    if norm.mode == "standard":
        arrays[FEATURE_MEAN] = np.ascontiguousarray(norm.mean, dtype=np.float64)
        arrays[FEATURE_SCALE] = np.ascontiguousarray(norm.scale, dtype=np.float64)
    storage.atomic_write(npz_path, lambda fh: np.savez(fh, **arrays))
    digest = sha256_file(npz_path)
    layers = []
    for layer in model.layers():
        layers.append({"name": layer.name, "type": type(layer).__name__,
                       "params": {k: list(s) for k, s in layer.param_shapes().items()}})
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "model_type": model.model_type,
        "class": type(model).__name__,
        "hyperparameters": model.get_params(),
        "num_features": model.n_features_in_,
        "num_classes": model.n_classes_,
        "param_shapes": {k: list(v.shape) for k, v in arrays.items()},
        "layers": layers,
        "normalisation": {
            "features": (f"{model.feature_norm} -> " if model.feature_norm != norm.mode else "")
            + _FEATURE_NORM[norm.mode],
            "feature_norm": norm.mode,
            "adjacency": _ADJ_NORM[model.model_type],
        },
        "embedding": _EMBEDDING[model.model_type],
        "metrics": _metrics_summary(metrics),
        "fingerprint": dict(fingerprint),
        "weights": {"file": NPZ_NAME, "sha256": digest, "bytes": npz_path.stat().st_size,
                    "dtype": "float64", "allow_pickle": False},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": _versions(),
    }
    card = _jsonable(card)
    card["card_sha256"] = card_digest(card)
    text = json.dumps(card, indent=2, sort_keys=False, allow_nan=False) + "\n"
    storage.atomic_write(card_path, lambda fh: fh.write(text.encode("utf-8")))
    log.info("saved %s model to %s (sha256 %s)", model.model_type, out, digest[:12])
    return card


def card_digest(card: Mapping[str, Any]) -> str:
    """sha256 over the card fields that change predictions and the weights' sha256 (canonical JSON)."""
    covered = {k: card.get(k) for k in PREDICTIVE_FIELDS}
    covered["feature_norm"] = (card.get("normalisation") or {}).get("feature_norm")
    covered["weights_sha256"] = (card.get("weights") or {}).get("sha256")
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import scipy

    from lepton_spark import __version__

    return {"lepton_spark": __version__, "numpy": np.__version__, "scipy": scipy.__version__}


# --------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------
def read_card(model_dir: str | Path) -> dict[str, Any]:
    """Parse ``model.json`` (ValueError naming the file if missing or malformed)."""
    card_path = Path(model_dir) / CARD_NAME
    if not card_path.is_file():
        raise ValueError(f"{card_path}: model card not found")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{card_path}: not a valid JSON model card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{card_path}: not a {CARD_FORMAT} card")
    if card.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"{card_path}: unsupported card version {card.get('format_version')!r} "
                         f"(this library reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    for key in ("model_type", "hyperparameters", "num_features", "num_classes", "param_shapes", "weights"):
        if key not in card:
            raise ValueError(f"{card_path}: card is missing {key!r}")
    if card["model_type"] not in MODEL_TYPES:
        raise ValueError(f"{card_path}: unknown model type {card['model_type']!r}")
    if not isinstance(card["hyperparameters"], dict) or not isinstance(card["weights"], dict):
        raise ValueError(f"{card_path}: 'hyperparameters' and 'weights' must be JSON objects")
    if card["format_version"] >= 3:
        if card.get("card_sha256") != card_digest(card):
            raise ValueError(f"{card_path}: card_sha256 does not match the card's model type, "
                             "hyper-parameters, shapes or weights digest; the card was edited")
    else:
        log.warning("%s: card format version %s has no card_sha256; its hyper-parameters are not "
                    "verified (retrain to get a version-3 card)", card_path, card["format_version"])
    return card


def load_model(model_dir: str | Path, *, num_features: int | None = None,
               num_classes: int | None = None) -> GraphModel:
    """Load and verify a saved model; see the module docstring for the checks performed."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    npz_path = model_dir / str(card["weights"].get("file", NPZ_NAME))
    if not npz_path.is_file():
        raise ValueError(f"{npz_path}: weights file not found (named by {model_dir / CARD_NAME})")
    expected_sha = card["weights"].get("sha256")
    actual_sha = sha256_file(npz_path)
    if actual_sha != expected_sha:
        raise ValueError(f"{npz_path}: sha256 {actual_sha} does not match the model card "
                         f"({expected_sha}); the weights were modified or belong to another model")
    d, c = int(card["num_features"]), int(card["num_classes"])
    if num_features is not None and int(num_features) != d:
        raise ValueError(f"{npz_path}: model expects {d} input features but the graph has {num_features}")
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"{npz_path}: model predicts {c} classes but the graph has {num_classes}")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
    except ValueError as exc:  # object arrays need pickle -> refused
        raise ValueError(f"{npz_path}: cannot load without pickle ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{npz_path}: not a readable npz file ({exc})") from None
    for k, v in params.items():
        if v.dtype.kind != "f":
            raise ValueError(f"{npz_path}: array {k!r} has dtype {v.dtype}, expected floating point")
        if not np.isfinite(v).all():
            raise ValueError(f"{npz_path}: array {k!r} has {int((~np.isfinite(v)).sum())} NaN or infinite "
                             "values")
        card_shape = card["param_shapes"].get(k)
        if card_shape is None or tuple(card_shape) != tuple(v.shape):
            raise ValueError(f"{npz_path}: array {k!r} has shape {tuple(v.shape)} but the card says "
                             f"{None if card_shape is None else tuple(card_shape)}")
    resolved = (card.get("normalisation") or {}).get("feature_norm")  # None: version-1 card
    stats = {k: params.pop(k) for k in (FEATURE_MEAN, FEATURE_SCALE) if k in params}
    if (resolved == "standard") != bool(stats) or (stats and len(stats) != 2):
        raise ValueError(f"{npz_path}: feature normalisation {resolved!r} in the card does not match the "
                         f"feature statistics in the weights ({sorted(stats) or 'none'})")
    try:
        model = create_model(card["model_type"], **card["hyperparameters"])
        model.set_fitted(params, d, c, feature_norm=resolved, feature_mean=stats.get(FEATURE_MEAN),
                         feature_scale=stats.get(FEATURE_SCALE))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{npz_path}: does not match a {card['model_type']} model with "
                         f"{d} features and {c} classes: {exc}") from None
    log.info("loaded %s model from %s (sha256 verified)", card["model_type"], model_dir)
    return model
