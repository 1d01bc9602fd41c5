"""APPNP (Klicpera et al., ICLR 2019): ``H = MLP(X)``, then ``Z ← (1-α) Â Z + α H`` for K rounds."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lepton_spark.models.base import Context, GraphModel
from lepton_spark.models.gcn import _dims
from lepton_spark.models.layers import Dense, Dropout, Layer, PPRPropagation, ReLU
from lepton_spark.models.plan import Ops

log = logging.getLogger(__name__)


class APPNP(GraphModel):
    """Predict-then-propagate with approximate personalised PageRank on ``Â = D^-1/2 (A+I) D^-1/2``.

    Layers: ``[dropout → Dense → ReLU] × len(hidden)``, ``dropout → Dense`` to the classes (``H``),
    then K rounds of ``Z ← (1-α) Â Z + α H`` and a softmax. Paper settings: K=10, α=0.1, hidden 64,
    dropout 0.5, lr 0.01, L2 5e-3 on the first layer's weights; early stopping with patience on the
    validation accuracy/loss with the best weights restored (the paper uses patience 100 and up to
    10000 epochs; we cap at 1000 epochs). Not implemented: the paper's dropout on the adjacency
    matrix during propagation.

    Gradients flow through the propagation (the full-graph ``fit``). ``fit_precomputed`` – the
    large-graph path – instead trains the MLP on the labelled rows' features alone and applies the
    propagation only at inference (APPNP's "propagation only at inference" variant, which the paper
    reports as somewhat less accurate). That is an approximation, not the full-graph model.

    Embedding: the propagated logits ``Z_K`` (pre-softmax, c-dimensional): the graph-aware last
    representation, and what the Spark path produces anyway.
    """

    model_type = "appnp"

    def __init__(self, *, K: int = 10, alpha: float = 0.1, hidden: int | Sequence[int] = 64,
                 dropout: float = 0.5, bias: bool = True, feature_norm: str = "auto", lr: float = 0.01,
                 weight_decay: float = 5e-3, weight_decay_on: str = "first", epochs: int = 1000,
                 early_stopping: str = "patience", patience: int = 100, monitor: str = "val_acc_loss",
                 restore_best: bool = True) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay,
                         weight_decay_on=weight_decay_on, epochs=epochs, early_stopping=early_stopping,
                         patience=patience, monitor=monitor, restore_best=restore_best)
        if K < 0 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"need K >= 0 and 0 < alpha <= 1, got K={K}, alpha={alpha}")
        self.K = int(K)
        self.alpha = float(alpha)
        self.hidden = _dims(hidden)
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self._hidden_at = 3 * len(self.hidden) + 2  # the propagation layer (last)

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        layers: list[Layer] = []
        dims = (d, *self.hidden, c)
        for i in range(len(dims) - 1):
            layers.append(Dropout(f"drop{i}", self.dropout))
            layers.append(Dense(f"dense{i}", dims[i], dims[i + 1], bias=self.bias))
            if i < len(dims) - 2:
                layers.append(ReLU(f"relu{i}"))
        layers.append(PPRPropagation("ppr", self.K, self.alpha))
        return layers

    def precompute_local(self, A: Any, X: Any) -> Any:
        """Per-row input of the large-graph path: the normalised features (no propagation). An
        unfitted model first resolves ``feature_norm`` from ``X``."""
        self._check_graph(A, X)
        self._resolve_unless_fitted(X)
        return self._normalized(X)

    def _row_context(self, Z: Any) -> Context:
        """``Z``: already-normalised feature rows (from :meth:`precompute_local` or Spark)."""
        return Context(sp.csr_matrix(Z, dtype=np.float64) if sp.issparse(Z) else np.asarray(Z, dtype=np.float64),
                       None)

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """MLP per batch (``dense`` calls; the first one shrinks d → hidden before anything moves),
        then one ``teleport_propagate`` of K rounds on c-wide vectors, then softmax."""
        self._check_fitted()
        p = self.params_
        t = self._input_table(ops)
        denses = [lay for lay in self.layers() if isinstance(lay, Dense)]
        for i, dense in enumerate(denses):
            act = "identity" if i == len(denses) - 1 else "relu"
            t = ops.dense(t, p[f"{dense.name}.W"], p.get(f"{dense.name}.b"), act)
        z = ops.teleport_propagate(t, ops.gcn_edges(), self.K, self.alpha) if self.K else t
        return (z if with_embedding else None), ops.dense(z, None, None, "softmax")
