"""The model contract: hyper-parameters, structure, forward/backward passes, local and Spark inference.

A model is a list of :mod:`~lepton_spark.models.layers` (propagation + dense transform + activation)
over a flat ``params_`` dict. Subclasses define

* ``_build_layers(d, c)`` – the layer list for ``d`` input features and ``c`` classes, and which layer
  output is the embedding (``_hidden_at``, ``-1`` = the model input, e.g. SGC's ``S^K X``);
* ``_prepare(A, X)`` – the training/inference context from the RAW graph (feature normalisation,
  propagation operators or precomputed hop features);
* ``forward_plan(ops, with_embedding)`` – the same forward pass as a propagation plan (see
  :mod:`lepton_spark.models.plan`), which ``forward_spark`` runs on Spark.

This class computes the training objective of a set of rows and its gradient
(``_loss_and_grads``: softmax cross-entropy plus ``weight_decay/2·||W||²`` on the parameters named by
``weight_decay_on``); the training loop itself – full-batch Adam, dropout, the early-stopping rules
``kipf`` / ``patience`` / ``none`` with ``monitor`` and ``restore_best`` – is
:mod:`lepton_spark.models.loop`, which ``fit`` and ``fit_precomputed`` call
(:func:`~lepton_spark.models.loop.fit_classifier`). Everything random (initialisation, dropout) comes
from ``np.random.default_rng(seed)``, so a fit is deterministic for a given seed.

Feature normalisation: the ``feature_norm`` hyper-parameter (``auto`` by default, or ``row``,
``standard``, ``none``) is resolved ONCE on the training features (rule in
:mod:`lepton_spark.models.normalize`) and kept as fitted attributes: ``feature_norm_`` (the concrete
mode) and, for ``standard``, ``feature_mean_``/``feature_scale_`` (float64, one per input column).
``get_params`` keeps reporting the hyper-parameter (``auto``); every later forward pass – local,
float32 twin or Spark (``ops.map`` with :class:`~lepton_spark.models.plan.Standardize` /
:class:`~lepton_spark.models.plan.RowNormalize`) – applies the fitted transform, never one
re-estimated from the inference graph.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from lepton_spark.graph.functional import softmax
from lepton_spark.models.layers import GraphOperators, Layer, Params, l2_penalty, softmax_cross_entropy
from lepton_spark.models.loop import EARLY_STOPPING, MONITORS, fit_classifier
from lepton_spark.models.normalize import (
    FEATURE_NORMS,
    FeatureNorm,
    FeatureSummary,
    Matrix,
    resolve_feature_norm,
)
from lepton_spark.models.plan import LocalForward, LocalOps, Ops, RowNormalize, SparkOps, Standardize

log = logging.getLogger(__name__)

DECAY_ON = ("first", "weights", "all")

_SKIPPED = object()


@dataclass
class Context:
    """Model input for one forward pass: ``x`` (matrix or list of hop matrices) and, for graph models,
    the propagation operators. ``graph is None`` means per-row inputs (rows can be subset)."""

    x: Any
    graph: GraphOperators | None
    _takes: dict[bytes, Context] = field(default_factory=dict, repr=False)

    @property
    def num_rows(self) -> int:
        first = self.x[0] if isinstance(self.x, list) else self.x
        return int(first.shape[0])

    @staticmethod
    def _rows_of(m: Any, rows: np.ndarray) -> Any:
        sub = m[rows]
        if sp.issparse(sub):
            # canonical form, so sparse dropout sees the same stored entries whatever produced ``m``
            sub = sp.csr_matrix(sub)
            sub.sum_duplicates()
            sub.eliminate_zeros()
            sub.sort_indices()
        if sp.issparse(sub) and sub.shape[0] * sub.shape[1] <= 2e7 and sub.nnz > 0.05 * sub.shape[0] * sub.shape[1]:
            return sub.toarray()  # small, fairly dense row blocks multiply faster dense
        if isinstance(sub, np.ndarray) and sub.dtype == np.float32:
            # float32 inputs (SGC's large propagated features) meet float64 weights: cast once here,
            # not in every epoch's products (the same values)
            return sub.astype(np.float64)
        return sub

    def take(self, rows: np.ndarray) -> Context:
        """The sub-context of ``rows`` (memoised: training takes the same rows every epoch)."""
        if self.graph is not None:
            raise ValueError("cannot take rows of a full-graph context")
        key = np.asarray(rows, dtype=np.int64).tobytes()
        if key not in self._takes:
            x = [self._rows_of(xi, rows) for xi in self.x] if isinstance(self.x, list) \
                else self._rows_of(self.x, rows)
            self._takes[key] = Context(x, None)
        return self._takes[key]


def _as_index(mask: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.zeros(0, dtype=np.int64)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        if mask.shape != (n,):
            raise ValueError(f"{what} mask has shape {mask.shape}, expected ({n},)")
        return np.flatnonzero(mask)
    return mask.astype(np.int64)


class GraphModel:
    """Common estimator machinery; see the module docstring."""

    model_type: ClassVar[str] = ""
    #: Which layer output is the embedding (index into the layer list; -1 = the model input).
    _hidden_at: int = -1

    def __init__(self, *, feature_norm: str = "auto", lr: float = 0.01, weight_decay: float = 5e-4,
                 weight_decay_on: str = "weights", epochs: int = 200, early_stopping: str = "patience",
                 patience: int = 100, monitor: str = "val_loss", restore_best: bool = True) -> None:
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {feature_norm!r}")
        if early_stopping not in EARLY_STOPPING:
            raise ValueError(f"early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}")
        if monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
        if weight_decay_on not in DECAY_ON:
            raise ValueError(f"weight_decay_on must be one of {DECAY_ON}, got {weight_decay_on!r}")
        self.feature_norm = feature_norm
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.weight_decay_on = weight_decay_on
        self.epochs = int(epochs)
        self.early_stopping = early_stopping
        self.patience = int(patience)
        self.monitor = monitor
        self.restore_best = bool(restore_best)

    # ---------------------------------------------------------------------------------------------
    # hyper-parameters
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if klass is object or "__init__" not in klass.__dict__:
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind == p.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as JSON-able values (what ``create_model(type, **params)`` takes)."""
        out: dict[str, Any] = {}
        for name in self._param_names():
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------------------------------------
    # structure (subclass hooks)
    # ---------------------------------------------------------------------------------------------
    def _build_layers(self, d: int, c: int) -> list[Layer]:
        raise NotImplementedError

    def _prepare(self, A: Any, X: Any) -> Context:
        """Default: graph model – normalised features + operators from the raw adjacency."""
        self._check_graph(A, X)
        return Context(self._normalized(X), GraphOperators(A))

    def _row_context(self, Z: Any) -> Context:
        """Context for per-row model inputs (``fit_precomputed``); graph models do not support it."""
        raise TypeError(f"{type(self).__name__} trains on the full graph only (no per-row training)")

    def _input_dim(self, ctx: Context) -> int:
        first = ctx.x[0] if isinstance(ctx.x, list) else ctx.x
        return int(first.shape[1])

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """The forward pass as a propagation plan: returns ``(embedding_table | None, probs_table)``."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------
    # helpers
    # ---------------------------------------------------------------------------------------------
    def layers(self) -> list[Layer]:
        """The layer list of the fitted model."""
        self._check_fitted()
        return self._build_layers(self.n_features_in_, self.n_classes_)

    def param_shapes(self, num_features: int, num_classes: int) -> dict[str, tuple[int, ...]]:
        """Expected learned-array shapes for a graph with these dimensions (artifact checks)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self._build_layers(num_features, num_classes):
            shapes.update(layer.param_shapes())
        return shapes

    def _decay_names(self, layers: list[Layer]) -> list[str]:
        names: list[str] = []
        for layer in layers:
            shapes = layer.param_shapes()
            if not shapes:
                continue
            weights = [k for k in shapes if not k.endswith(".b")]
            names.extend(list(shapes) if self.weight_decay_on == "all" else weights)
            if self.weight_decay_on == "first":
                break
        return names

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load_model() first")

    @staticmethod
    def _check_graph(A: Any, X: Any) -> None:
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"adjacency must be square, got {A.shape}")
        if X.shape[0] != A.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but the adjacency has {A.shape[0]} vertices")

    def _check_features(self, X: Any) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.n_features_in_} features, "
                             f"got {X.shape[1]}")

    def _input_table(self, ops: Ops) -> Any:
        """The backend's feature table with the fitted (or explicit) feature normalisation applied."""
        t = ops.features()
        norm = self._feature_transform()
        if norm.mode == "row":
            t = ops.map(t, RowNormalize(), getattr(self, "n_features_in_", None))  # keeps the length
        elif norm.mode == "standard":
            assert norm.mean is not None and norm.scale is not None
            t = ops.map(t, Standardize(norm.mean, norm.scale), int(norm.mean.shape[0]))
        return t

    # ---------------------------------------------------------------------------------------------
    # feature normalisation
    # ---------------------------------------------------------------------------------------------
    def resolve_feature_norm(self, features: Any) -> FeatureNorm:
        """Resolve the ``feature_norm`` hyper-parameter on the TRAINING features and keep the result.

        ``features`` is the raw feature matrix (dense or scipy sparse) or its
        :class:`~lepton_spark.models.normalize.FeatureSummary` (the large-graph path computes that on
        Spark). Sets the fitted attributes ``feature_norm_`` (row | standard | none) and
        ``feature_mean_``/``feature_scale_`` (float64 per column for ``standard``, else None).
        ``fit`` calls this; ``precompute_local`` and ``precompute.collect_labelled`` call it for an
        unfitted model. Explicit ``row``/``none`` need no statistics (``features`` may be None).
        """
        summary = None
        if self.feature_norm in ("auto", "standard"):
            if features is None:
                raise ValueError(f"feature_norm {self.feature_norm!r} needs the training features")
            summary = features if isinstance(features, FeatureSummary) else FeatureSummary.of(features)
        norm = resolve_feature_norm(self.feature_norm, summary)
        self._set_feature_norm(norm)
        return norm

    def _set_feature_norm(self, norm: FeatureNorm) -> None:
        self.feature_norm_ = norm.mode
        self.feature_mean_ = norm.mean
        self.feature_scale_ = norm.scale

    def _resolve_unless_fitted(self, features: Any) -> None:
        """Training-side helpers (``precompute_local``, ``collect_labelled``): an unfitted model
        resolves ``feature_norm`` from these features; a fitted one keeps its fitted statistics."""
        if not hasattr(self, "params_"):
            self.resolve_feature_norm(features)

    def _feature_transform(self) -> FeatureNorm:
        """The normalisation every forward pass applies: the fitted one, or an explicit ``row``/``none``
        (which need no statistics). ``auto``/``standard`` before resolution is an error."""
        mode = getattr(self, "feature_norm_", None)
        if mode is None:
            if self.feature_norm in ("row", "none"):
                return FeatureNorm(self.feature_norm)
            raise RuntimeError(f"{type(self).__name__}: feature_norm={self.feature_norm!r} is resolved from "
                               "the training features; call fit(), precompute_local() or "
                               "precompute.collect_labelled() first")
        return FeatureNorm(mode, self.feature_mean_, self.feature_scale_)

    def _normalized(self, X: Any) -> Matrix:
        """``X`` with the model's feature normalisation applied (float64; see ``_feature_transform``)."""
        return self._feature_transform().apply(X)

    # ---------------------------------------------------------------------------------------------
    # forward / backward
    # ---------------------------------------------------------------------------------------------
    def _run(self, params: Mapping[str, np.ndarray], layers: list[Layer], ctx: Context, *, training: bool,
             rng: np.random.Generator | None) -> tuple[np.ndarray, Any, list[Any]]:
        x = ctx.x
        hidden = x if self._hidden_at == -1 else None
        caches: list[Any] = []
        for i, layer in enumerate(layers):
            if layer.needs_graph and ctx.graph is None:
                caches.append(_SKIPPED)  # per-row training: the propagation is skipped (APPNP)
            else:
                x, cache = layer.forward(params, x, graph=ctx.graph, training=training, rng=rng)
                caches.append(cache)
            if i == self._hidden_at:
                hidden = x
        return x, hidden, caches

    def _backward(self, params: Mapping[str, np.ndarray], layers: list[Layer], caches: list[Any],
                  dlogits: np.ndarray) -> Params:
        grads: Params = {}
        first = next(i for i, lay in enumerate(layers) if lay.param_shapes())
        d: Any = dlogits
        for i in range(len(layers) - 1, first - 1, -1):
            if caches[i] is _SKIPPED:
                continue
            d = layers[i].backward(params, caches[i], d, grads, need_dx=i > first)
        return grads

    def _loss_and_grads(self, params: Mapping[str, np.ndarray], layers: list[Layer], ctx: Context,
                        y: np.ndarray, rows: np.ndarray, rng: np.random.Generator | None,
                        training: bool = True) -> tuple[float, Params, np.ndarray]:
        """Training objective on ``rows`` (CE + L2) and its gradient wrt every parameter."""
        if ctx.graph is None:
            logits, _, caches = self._run(params, layers, ctx.take(rows), training=training, rng=rng)
            loss, dl = softmax_cross_entropy(logits, y[rows])
            grads = self._backward(params, layers, caches, dl)
            out_logits = logits
        else:
            logits, _, caches = self._run(params, layers, ctx, training=training, rng=rng)
            loss, dl = softmax_cross_entropy(logits[rows], y[rows])
            full = np.zeros_like(logits)
            full[rows] = dl
            grads = self._backward(params, layers, caches, full)
            out_logits = logits[rows]
        loss += l2_penalty(params, self._decay_names(layers), self.weight_decay, grads)
        return loss, grads, out_logits

    def _eval_logits(self, params: Mapping[str, np.ndarray], layers: list[Layer], ctx: Context,
                     rows: np.ndarray) -> np.ndarray:
        if ctx.graph is None:
            return self._run(params, layers, ctx.take(rows), training=False, rng=None)[0]
        return self._run(params, layers, ctx, training=False, rng=None)[0][rows]

    # ---------------------------------------------------------------------------------------------
    # training
    # ---------------------------------------------------------------------------------------------
    def fit(self, A: Any, X: Any, y: np.ndarray, train_mask: np.ndarray, val_mask: np.ndarray | None = None,
            seed: int = 0, *, num_classes: int | None = None) -> GraphModel:
        """Train on the raw graph ``A`` (scipy sparse, ``A[u, v]`` = weight of ``u -> v``) and raw
        features ``X`` (n, d); ``y`` int labels (-1 = none); masks boolean (n,) or index arrays."""
        t0 = time.perf_counter()
        self._check_graph(A, X)
        self.resolve_feature_norm(X)  # statistics over ALL rows of X (labelled or not)
        ctx = self._prepare(A, X)
        n = int(X.shape[0])
        fit_classifier(self, ctx, np.asarray(y), _as_index(train_mask, n, "train"), _as_index(val_mask, n, "val"),
                       seed, num_classes)
        # the normalised inputs (for SGC: the propagated features) of this (A, X): a forward pass over
        # the same objects right after the fit (the trainer's evaluation) reuses them; release_inputs()
        self._inputs_cache = (A, X, ctx)
        log.info("%s fitted in %.2fs (%d epochs)", self.model_type, time.perf_counter() - t0,
                 len(self.history_["epoch"]))
        return self

    def precompute_local(self, A: Any, X: Any) -> Any:
        """The per-row model input ``fit_precomputed`` expects, computed locally (SGC/SIGN/APPNP)."""
        raise TypeError(f"{type(self).__name__} has no per-row input (it trains on the full graph)")

    def fit_precomputed(self, Z: Any, y: np.ndarray, train_mask: np.ndarray,
                        val_mask: np.ndarray | None = None, seed: int = 0, *,
                        num_classes: int | None = None) -> GraphModel:
        """Train from per-row inputs only (the large-graph path): ``Z`` holds one row per labelled
        vertex as produced by :meth:`precompute_local` or :func:`lepton_spark.models.precompute
        .collect_labelled`; ``y``/masks are aligned with the rows of ``Z``. ``Z`` is already
        normalised, so ``feature_norm`` auto/standard must have been resolved by the call that made
        ``Z`` (explicit ``row``/``none`` need nothing)."""
        if getattr(self, "feature_norm_", None) is None:
            if self.feature_norm in ("auto", "standard"):
                raise RuntimeError(f"fit_precomputed: feature_norm={self.feature_norm!r} is not resolved; "
                                   "compute Z with precompute_local() or precompute.collect_labelled()")
            self._set_feature_norm(FeatureNorm(self.feature_norm))
        ctx = self._row_context(Z)
        n = ctx.num_rows
        fit_classifier(self, ctx, np.asarray(y), _as_index(train_mask, n, "train"), _as_index(val_mask, n, "val"),
                       seed, num_classes)
        return self

    # ---------------------------------------------------------------------------------------------
    # inference
    # ---------------------------------------------------------------------------------------------
    def forward_local(self, A: Any, X: Any, return_hidden: bool = False
                      ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Reference forward pass with scipy/numpy in float64 from the RAW graph.

        Returns class probabilities (n, c), and with ``return_hidden`` also the embedding (the last
        hidden layer; per model, see its class docstring) as ``(probs, hidden)``.
        """
        self._check_fitted()
        self._check_features(X)
        ctx = self._inputs_context(A, X)
        logits, hidden, _ = self._run(self.params_, self.layers(), ctx, training=False, rng=None)
        probs = softmax(logits)
        if return_hidden:
            h = hidden.toarray() if sp.issparse(hidden) else np.asarray(hidden, dtype=np.float64)
            return probs, h
        return probs

    def predict_proba_rows_local(self, A: Any, X: Any, rows: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba_local` of the vertices ``rows`` only: a model with per-row inputs (SGC,
        SIGN) computes just those rows (the trainer's evaluation needs the labelled ones: at 1M
        vertices 200k rows instead of a float64 pass over all 1M), a graph model the whole pass."""
        self._check_fitted()
        self._check_features(X)
        rows = np.asarray(rows, dtype=np.int64)
        return softmax(self._eval_logits(self.params_, self.layers(), self._inputs_context(A, X), rows))

    def _inputs_context(self, A: Any, X: Any) -> Context:
        """The prepared inputs of ``(A, X)``: the last fit's when it ran on these very objects, else new."""
        cached = getattr(self, "_inputs_cache", None)
        return cached[2] if cached is not None and cached[0] is A and cached[1] is X else self._prepare(A, X)

    def release_inputs(self) -> None:
        """Drop the inputs kept from the last :meth:`fit` (see there)."""
        self._inputs_cache = None

    def predict_proba_local(self, A: Any, X: Any) -> np.ndarray:
        """Class probabilities (n, c) with the local reference path."""
        out = self.forward_local(A, X)
        assert isinstance(out, np.ndarray)
        return out

    def predict_proba_precomputed(self, Z: Any) -> np.ndarray:
        """Class probabilities from per-row inputs (``fit_precomputed``'s ``Z``). Exact for SGC/SIGN;
        for APPNP this is the MLP alone (no propagation)."""
        self._check_fitted()
        ctx = self._row_context(Z)
        logits = self._run(self.params_, self.layers(), ctx, training=False, rng=None)[0]
        return softmax(logits)

    def predict_local(self, A: Any, X: Any) -> np.ndarray:
        """Predicted class per vertex (argmax of :meth:`predict_proba_local`)."""
        return np.argmax(self.predict_proba_local(A, X), axis=1)

    def forward_twin(self, A: Any, X: Any, ids: np.ndarray | None = None,
                     with_embedding: bool = True) -> LocalForward:
        """Run :meth:`forward_plan` with the float32 numpy backend (what Spark computes, no Spark)."""
        self._check_fitted()
        self._check_features(X)
        ops = LocalOps(A, X, ids)
        emb, probs = self.forward_plan(ops, with_embedding=with_embedding)
        return ops.result(emb, probs)

    def forward_spark(self, g: Any, features: str = "features", weight: str = "weight",
                      with_embedding: bool = True, propagate_options: Mapping[str, Any] | None = None) -> Any:
        """Forward pass on Spark: propagation rounds with the learned weights applied per partition.

        ``g`` is a :class:`lepton_spark.graph.GraphFrame` over the RAW graph (vertices ``id`` +
        ``features``; edges ``src, dst, weight``): feature and edge normalisation happen inside, like
        :meth:`forward_local`. Returns ``DataFrame(id long, embedding array<float>, probs
        array<float>)`` (no ``embedding`` column when ``with_embedding`` is False, which lets SGC
        apply its weights before propagating). Lazy: nothing runs until the caller acts on it (APPNP
        runs one small ``min(id)`` job to check ids are >= 0). The embedding and the probabilities are
        joined on ``id``; cache the result if both are read more than once.

        ``propagate_options`` go to every :func:`lepton_spark.graph.propagate` call (``config``,
        ``on_round``; ``checkpoint`` is a base directory, each call gets its own ``step-<i>`` below it,
        so an interrupted forward pass resumes after its last completed round).
        """
        self._check_fitted()
        ops = SparkOps(g, features=features, weight=weight, propagate_options=propagate_options)
        try:
            emb, probs = self.forward_plan(ops, with_embedding=with_embedding)
            return ops.result(emb, probs)
        finally:
            ops.close()

    # ---------------------------------------------------------------------------------------------
    # (de)serialisation support
    # ---------------------------------------------------------------------------------------------
    def set_fitted(self, params: Mapping[str, np.ndarray], num_features: int, num_classes: int, *,
                   feature_norm: str | None = None, feature_mean: np.ndarray | None = None,
                   feature_scale: np.ndarray | None = None) -> GraphModel:
        """Install learned arrays (used by ``load_model``); shapes are checked against the structure.

        ``feature_norm`` is the resolved normalisation (row | standard | none; ``standard`` with its
        ``feature_mean``/``feature_scale``). It may be omitted when the hyper-parameter is already
        concrete (artifacts written before ``auto`` existed); for ``auto`` it is required.
        """
        if feature_norm is None:
            if self.feature_norm == "auto":
                raise ValueError("feature_norm='auto' needs its resolved mode (row | standard | none)")
            feature_norm = self.feature_norm
        elif self.feature_norm != "auto" and feature_norm != self.feature_norm:
            raise ValueError(f"resolved feature_norm {feature_norm!r} contradicts the hyper-parameter "
                             f"{self.feature_norm!r}")
        norm = FeatureNorm(feature_norm, feature_mean, feature_scale)
        if norm.mean is not None and norm.mean.shape[0] != int(num_features):
            raise ValueError(f"feature statistics have {norm.mean.shape[0]} columns, expected {num_features}")
        expected = self.param_shapes(num_features, num_classes)
        if set(expected) != set(params):
            missing = sorted(set(expected) - set(params))
            extra = sorted(set(params) - set(expected))
            raise ValueError(f"parameter names do not match {self.model_type}: missing {missing}, "
                             f"unexpected {extra}")
        for k, shape in expected.items():
            if tuple(params[k].shape) != tuple(shape):
                raise ValueError(f"parameter {k} has shape {tuple(params[k].shape)}, expected {shape}")
        self._set_feature_norm(norm)
        self.params_ = {k: np.asarray(params[k], dtype=np.float64) for k in expected}
        self.n_features_in_ = int(num_features)
        self.n_classes_ = int(num_classes)
        return self

    def clone(self) -> GraphModel:
        """An unfitted copy with the same hyper-parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))


def json_clean(v: Any) -> Any:
    """JSON-able floats: numpy scalars to Python, NaN/inf to None, 6 significant digits."""
    if isinstance(v, dict):
        return {k: json_clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if not math.isfinite(v) else float(f"{v:.6g}")
    return v
