"""SGC (Wu et al., ICML 2019): ``softmax(S^K X Θ)`` – K parameter-free rounds, then logistic regression."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from lepton_spark.graph.kernels import threaded_spmm
from lepton_spark.models.base import Context, GraphModel
from lepton_spark.models.layers import Dense, Layer
from lepton_spark.models.normalize import sym_propagation
from lepton_spark.models.plan import Ops

log = logging.getLogger(__name__)


#: from this many entries of ``S`` on (``A``'s stored entries plus one self-loop per vertex), dense
#: features are propagated in float32: the precision the Spark plans propagate in, and the product's
#: memory traffic halved (1M rows x 19M entries x 64 dims on 2 cores: 1.8-2.4 s -> 0.75 s a round;
#: 100k rows x 2M entries: 0.14 -> 0.065 s a round, 0.64 -> ~0.3 s of a nightly's train stage with
#: the first touch of the output); the fit itself stays float64. Smaller graphs (Cora, Citeseer: tens
#: of thousands of entries) stay float64 throughout, where it costs milliseconds
FLOAT32_MIN_NNZ = 1_000_000


def _as_rows(Z: Any) -> Any:
    return sp.csr_matrix(Z, dtype=np.float64) if sp.issparse(Z) else np.asarray(Z, dtype=np.float64)


class SGC(GraphModel):
    """Simplified graph convolution: ``S = D^-1/2 (A+I) D^-1/2``, features ``S^K X`` precomputed once,
    then multinomial logistic regression (one Dense layer with bias) trained on the labelled rows only.

    Defaults are the paper's: K=2, lr 0.2, 100 epochs, no dropout, no early stopping, weight decay on
    all parameters (PyTorch ``Adam(weight_decay=…)``, tuned per dataset on the validation set – see
    ``lepton_spark.models.trainer.PRESETS``), ``feature_norm="auto"`` (row-normalised bag-of-words
    features as in the paper; standardised real-valued features).

    Because the model input is per-row (``S^K X``), ``fit`` and ``fit_precomputed`` train on exactly
    the same rows; the large-graph path computes ``S^K X`` with Spark and collects only labelled rows.

    Embedding: the propagated features ``S^K X`` (d-dimensional; with ``with_embedding=False`` the
    Spark path instead applies ``Θ`` before propagating, which is much cheaper).
    """

    model_type = "sgc"
    _hidden_at = -1

    def __init__(self, *, K: int = 2, bias: bool = True, feature_norm: str = "auto", lr: float = 0.2,
                 weight_decay: float = 5e-5, weight_decay_on: str = "all", epochs: int = 100,
                 early_stopping: str = "none", patience: int = 10, monitor: str = "val_loss",
                 restore_best: bool = False) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay,
                         weight_decay_on=weight_decay_on, epochs=epochs, early_stopping=early_stopping,
                         patience=patience, monitor=monitor, restore_best=restore_best)
        if K < 0:
            raise ValueError(f"K must be >= 0, got {K}")
        self.K = int(K)
        self.bias = bool(bias)

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        return [Dense("linear", d, c, bias=self.bias)]

    def precompute_local(self, A: Any, X: Any) -> Any:
        """``S^K X̃`` with ``X̃`` the normalised features (sparse stays sparse), float64. An unfitted
        model first resolves ``feature_norm`` from ``X`` (the input of ``fit_precomputed``)."""
        self._check_graph(A, X)
        self._resolve_unless_fitted(X)
        return self._propagated(A, X)

    def _propagated(self, A: Any, X: Any, rows64: bool = True) -> Any:
        """``S^K X̃``; float64 rows, or with ``rows64=False`` the float32 product as computed when the
        float32 path is taken (the per-row fit takes its rows in float64: the same values)."""
        large = self.K > 0 and A.nnz + A.shape[0] >= FLOAT32_MIN_NNZ
        # X̃ first: dense features (or sparse ones a centring standard made dense) of a large graph are
        # propagated in float32, with S and X̃ computed in float64 and rounded once, without whole
        # float64 copies of either (~1.5 s of page faults and casts at 1M x 64, 19M entries)
        Z = self._feature_transform().apply_f32(np.asarray(X)) if large and not sp.issparse(X) \
            else self._normalized(X)
        f32 = large and not sp.issparse(Z)
        P = sym_propagation(A, dtype=np.float32 if f32 else np.float64)
        if f32:
            Z = np.asarray(Z, dtype=np.float32)
        for _ in range(self.K):
            Z = P @ Z if sp.issparse(Z) else threaded_spmm(P, Z)  # dense rows: split over the driver's cores
        return _as_rows(Z) if rows64 or sp.issparse(Z) else Z

    def _prepare(self, A: Any, X: Any) -> Context:
        self._check_graph(A, X)
        return Context(self._propagated(A, X, rows64=False), None)

    def _row_context(self, Z: Any) -> Context:
        return Context(_as_rows(Z), None)

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """With the embedding: K rounds on the d-wide features, then ``softmax(Z Θ + b)``. Without it
        and when ``Θ`` shrinks the width: ``X Θ`` first, K rounds on c-wide vectors, then bias+softmax
        (exact because the rounds are linear)."""
        self._check_fitted()
        W = self.params_["linear.W"]
        b = self.params_.get("linear.b")
        edges = ops.gcn_edges()
        t = self._input_table(ops)
        if not with_embedding and W.shape[1] < W.shape[0]:
            t = ops.propagate(ops.dense(t, W, None, "identity"), edges, self.K) if self.K else \
                ops.dense(t, W, None, "identity")
            return None, ops.dense(t, None, b, "softmax")
        z = ops.propagate(t, edges, self.K) if self.K else t
        return (z if with_embedding else None), ops.dense(z, W, b, "softmax")
