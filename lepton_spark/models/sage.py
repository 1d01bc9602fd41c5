"""GraphSAGE-mean (Hamilton et al., NeurIPS 2017), full-batch: ``H' = act([H_v ‖ mean_{u→v} H_u] W)``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lepton_spark.models.base import GraphModel
from lepton_spark.models.gcn import _dims
from lepton_spark.models.layers import Dropout, L2Normalize, Layer, ReLU, SageMean
from lepton_spark.models.plan import ColumnSlice, Ops, SumBlocks

log = logging.getLogger(__name__)


class GraphSAGE(GraphModel):
    """GraphSAGE with the mean aggregator over in-neighbours, on the full neighbourhood (no sampling).

    Layers: ``[dropout → SageMean → ReLU (→ L2 normalise)] × len(hidden)`` then ``dropout → SageMean``
    to the classes and a softmax. ``normalize=True`` applies the paper's per-layer L2 normalisation
    to the hidden layers (off by default: it bounds the logits and costs accuracy on Planetoid).
    There is no paper number on the Planetoid split; the defaults follow common full-batch practice
    (hidden 64, dropout 0.5, lr 0.01, weight decay 5e-4 on all weights, patience 100 on validation
    accuracy with the best weights restored).

    Embedding: the output of the last hidden layer (after ReLU, and L2 normalisation if enabled).
    """

    model_type = "sage"

    def __init__(self, *, hidden: int | Sequence[int] = 64, dropout: float = 0.5, bias: bool = True,
                 normalize: bool = False, feature_norm: str = "auto", lr: float = 0.01,
                 weight_decay: float = 5e-4, weight_decay_on: str = "weights", epochs: int = 500,
                 early_stopping: str = "patience", patience: int = 100, monitor: str = "val_acc_loss",
                 restore_best: bool = True) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay,
                         weight_decay_on=weight_decay_on, epochs=epochs, early_stopping=early_stopping,
                         patience=patience, monitor=monitor, restore_best=restore_best)
        self.hidden = _dims(hidden)
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.normalize = bool(normalize)
        per = 4 if self.normalize else 3
        self._hidden_at = per * len(self.hidden) - 1

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        layers: list[Layer] = []
        dims = (d, *self.hidden, c)
        for i in range(len(dims) - 1):
            layers.append(Dropout(f"drop{i}", self.dropout))
            layers.append(SageMean(f"sage{i}", dims[i], dims[i + 1], bias=self.bias))
            if i < len(dims) - 2:
                layers.append(ReLU(f"relu{i}"))
                if self.normalize:
                    layers.append(L2Normalize(f"l2norm{i}"))
        return layers

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """Per layer with ``W = [W_self; W_neigh]``: when the layer shrinks the width, one batch matmul
        gives ``[x W_self ‖ x W_neigh]``, the second half is mean-propagated over the RAW edges and the
        halves are summed (``SumBlocks``); otherwise the raw ``x`` is mean-propagated, concatenated to
        ``x`` and multiplied by ``W``. Then bias + activation (+ ``l2`` for normalised hidden layers)."""
        self._check_fitted()
        p = self.params_
        edges = ops.raw_edges()
        t = self._input_table(ops)
        emb = None
        convs = [lay for lay in self.layers() if isinstance(lay, SageMean)]
        for i, conv in enumerate(convs):
            W = p[f"{conv.name}.W"]
            b = p.get(f"{conv.name}.b")
            last = i == len(convs) - 1
            act = "softmax" if last else "relu"
            k = conv.d_out
            if conv.weight_first:
                u = ops.dense(t, np.hstack([W[: conv.d_in], W[conv.d_in :]]), None, "identity")
                self_part = ops.map(u, ColumnSlice(0, k), k)
                neigh = ops.propagate(ops.map(u, ColumnSlice(k, 2 * k), k), edges, 1, agg="mean")
                summed = ops.map(ops.concat([self_part, neigh]), SumBlocks(k, 2), k)
                t = ops.dense(summed, None, b, act)
            else:
                neigh = ops.propagate(t, edges, 1, agg="mean")
                t = ops.dense(ops.concat([t, neigh]), W, b, act)
            if not last and self.normalize:
                t = ops.dense(t, None, None, "l2")
            if i == len(convs) - 2:
                emb = t
        return (emb if with_embedding else None), t
