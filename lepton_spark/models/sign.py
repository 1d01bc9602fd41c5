"""SIGN (Frasca et al., 2020): ``[X, ÂX, Â²X, …, Â^r X]`` precomputed, then an inception MLP."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from lepton_spark.models.base import Context, GraphModel
from lepton_spark.models.layers import Dense, Dropout, HopLinear, Layer, ReLU
from lepton_spark.models.normalize import sym_propagation
from lepton_spark.models.plan import ColumnSlice, Ops

log = logging.getLogger(__name__)


class SIGN(GraphModel):
    """Scalable inception graph network with the GCN operator ``Â = D^-1/2 (A+I) D^-1/2``.

    Model: ``Z = ReLU([X_0 Θ_0 ‖ X_1 Θ_1 ‖ … ‖ X_r Θ_r] + b)``, ``Y = softmax(dropout(Z) Ω + c)`` with
    ``X_h = Â^h X̃`` (``X̃`` the normalised features) and optional dropout on the hop inputs. The hop
    features are per-row, so training uses the labelled rows only (same as the large-graph path).
    SIGN reports no Planetoid number; the defaults were chosen on Cora's *validation* accuracy from a
    small grid (hops 2-8, 32/64 units, input dropout 0-0.7, weight decay 5e-4-5e-3): r=5 hops,
    32 units per hop, input dropout 0.6, dropout 0.5, lr 0.01, weight decay 5e-4 on all weights,
    patience 100 on validation accuracy/loss with the best weights restored.

    Embedding: ``Z`` (the concatenated hidden layer, ``(r+1)·hidden`` wide).
    """

    model_type = "sign"
    _hidden_at = 2

    def __init__(self, *, hops: int = 5, hidden: int = 32, dropout: float = 0.5, input_dropout: float = 0.6,
                 bias: bool = True, feature_norm: str = "auto", lr: float = 0.01, weight_decay: float = 5e-4,
                 weight_decay_on: str = "weights", epochs: int = 500, early_stopping: str = "patience",
                 patience: int = 100, monitor: str = "val_acc_loss", restore_best: bool = True) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay,
                         weight_decay_on=weight_decay_on, epochs=epochs, early_stopping=early_stopping,
                         patience=patience, monitor=monitor, restore_best=restore_best)
        if hops < 0 or hidden <= 0:
            raise ValueError(f"need hops >= 0 and hidden > 0, got hops={hops}, hidden={hidden}")
        self.hops = int(hops)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.bias = bool(bias)

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        return [
            Dropout("drop_in", self.input_dropout),
            HopLinear("hops", d, self.hops, self.hidden, bias=self.bias),
            ReLU("relu"),
            Dropout("drop", self.dropout),
            Dense("out", (self.hops + 1) * self.hidden, c, bias=self.bias),
        ]

    def _input_dim(self, ctx: Context) -> int:
        return int(ctx.x[0].shape[1])

    def hop_features(self, A: Any, X: Any) -> list[Any]:
        """``[X̃, ÂX̃, …, Â^r X̃]`` in float64 (sparse stays sparse), ``X̃`` normalised with the
        model's resolved ``feature_norm``."""
        self._check_graph(A, X)
        P = sym_propagation(A)
        Z = self._normalized(X)
        blocks = [Z]
        for _ in range(self.hops):
            Z = P @ Z
            blocks.append(Z)
        return [sp.csr_matrix(b) if sp.issparse(b) else np.asarray(b) for b in blocks]

    def precompute_local(self, A: Any, X: Any) -> Any:
        """The concatenated hop features ``[X̃ ‖ ÂX̃ ‖ … ‖ Â^r X̃]`` (n, (r+1)·d). An unfitted model
        first resolves ``feature_norm`` from ``X`` (the input of ``fit_precomputed``)."""
        self._check_graph(A, X)
        self._resolve_unless_fitted(X)
        blocks = self.hop_features(A, X)
        return sp.hstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.hstack(blocks)

    def _prepare(self, A: Any, X: Any) -> Context:
        return Context(self.hop_features(A, X), None)

    def _row_context(self, Z: Any) -> Context:
        width = Z.shape[1]
        if width % (self.hops + 1):
            raise ValueError(f"SIGN with {self.hops} hops needs a multiple of {self.hops + 1} columns, "
                             f"got {width}")
        d = width // (self.hops + 1)
        if sp.issparse(Z):
            Z = sp.csc_matrix(Z, dtype=np.float64)
            blocks = [sp.csr_matrix(Z[:, h * d : (h + 1) * d]) for h in range(self.hops + 1)]
        else:
            Z = np.asarray(Z, dtype=np.float64)
            blocks = [np.ascontiguousarray(Z[:, h * d : (h + 1) * d]) for h in range(self.hops + 1)]
        return Context(blocks, None)

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """When ``hidden < d``: one batch matmul ``X [Θ_0 ‖ … ‖ Θ_r]``, then the hop-h block is
        propagated h rounds (blocks peel off one per round, so only ``(r-h+1)·hidden`` numbers per
        vertex move in round h); otherwise the raw hops ``X_h`` are propagated and multiplied by the
        block-diagonal ``Θ``. Then bias + ReLU (the embedding) and ``softmax(Z Ω + c)``."""
        self._check_fitted()
        p = self.params_
        r, k = self.hops, self.hidden
        d = self.n_features_in_
        Ws = [p[f"hops.W{h}"] for h in range(r + 1)]
        b = p.get("hops.b")
        edges = ops.gcn_edges()
        t = self._input_table(ops)
        if k < d:
            u = ops.dense(t, np.hstack(Ws), None, "identity")
            parts = [ops.map(u, ColumnSlice(0, k), k) if r else u]
            if r:
                cur = ops.map(u, ColumnSlice(k, (r + 1) * k), r * k)
                for hop in range(1, r + 1):
                    cur = ops.propagate(cur, edges, 1)
                    width = (r - hop + 1) * k
                    parts.append(ops.map(cur, ColumnSlice(0, k), k) if width > k else cur)
                    if hop < r:
                        cur = ops.map(cur, ColumnSlice(k, width), width - k)
            z = ops.dense(ops.concat(parts), None, b, "relu")
        else:
            hops_t = [t]
            for _ in range(r):
                hops_t.append(ops.propagate(hops_t[-1], edges, 1))
            z = ops.dense(ops.concat(hops_t), scipy.linalg.block_diag(*Ws), b, "relu")
        probs = ops.dense(z, p["out.W"], p.get("out.b"), "softmax")
        return (z if with_embedding else None), probs
