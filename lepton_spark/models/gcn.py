"""GCN (Kipf & Welling, ICLR 2017): ``H' = act(Â H W)``, ``Â = D^-1/2 (A+I) D^-1/2``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lepton_spark.models.base import GraphModel
from lepton_spark.models.layers import Dropout, GraphConv, Layer, ReLU
from lepton_spark.models.plan import Ops

log = logging.getLogger(__name__)


def _dims(hidden: int | Sequence[int]) -> tuple[int, ...]:
    dims = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    if any(h <= 0 for h in dims):
        raise ValueError(f"hidden sizes must be positive, got {dims}")
    return dims


class GCN(GraphModel):
    """Graph convolutional network.

    Layers: ``[dropout → GraphConv → ReLU] × len(hidden)`` then ``dropout → GraphConv`` to the classes
    and a softmax. Defaults are the paper's (docs/architecture.md §7): hidden 16, dropout 0.5 on each layer input
    (sparse dropout on the bag-of-words input), lr 0.01, weight decay 5e-4 on the first layer's
    weights only, 200 epochs, Kipf's early stopping (val loss above the mean of the previous 10
    epochs), no bias (the reference ``GraphConvolution`` has ``bias=False``), ``feature_norm="auto"``
    (Kipf's row normalisation for bag-of-words features, standardisation for real-valued ones).

    Embedding: the output of the last hidden layer (after ReLU), e.g. 16-d.
    """

    model_type = "gcn"

    def __init__(self, *, hidden: int | Sequence[int] = 16, dropout: float = 0.5, bias: bool = False,
                 feature_norm: str = "auto", lr: float = 0.01, weight_decay: float = 5e-4,
                 weight_decay_on: str = "first", epochs: int = 200, early_stopping: str = "kipf",
                 patience: int = 10, monitor: str = "val_loss", restore_best: bool = False) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay,
                         weight_decay_on=weight_decay_on, epochs=epochs, early_stopping=early_stopping,
                         patience=patience, monitor=monitor, restore_best=restore_best)
        self.hidden = _dims(hidden)
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self._hidden_at = 3 * len(self.hidden) - 1  # the last ReLU (-1 = input when no hidden layer)

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        layers: list[Layer] = []
        dims = (d, *self.hidden, c)
        for i in range(len(dims) - 1):
            layers.append(Dropout(f"drop{i}", self.dropout))
            layers.append(GraphConv(f"gc{i}", dims[i], dims[i + 1], bias=self.bias))
            if i < len(dims) - 2:
                layers.append(ReLU(f"relu{i}"))
        return layers

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """Per layer: ``dense(W)`` → 1 round → ``dense(bias, act)`` when the layer shrinks the width,
        else 1 round → ``dense(W, bias, act)``; the last layer's activation is the softmax."""
        self._check_fitted()
        p = self.params_
        edges = ops.gcn_edges()
        t = self._input_table(ops)
        emb = None
        convs = [lay for lay in self.layers() if isinstance(lay, GraphConv)]
        for i, conv in enumerate(convs):
            W = p[f"{conv.name}.W"]
            b = p.get(f"{conv.name}.b")
            act = "softmax" if i == len(convs) - 1 else "relu"
            if conv.weight_first:
                t = ops.dense(t, W, None, "identity")
                t = ops.propagate(t, edges, 1)
                t = ops.dense(t, None, b, act)
            else:
                t = ops.propagate(t, edges, 1)
                t = ops.dense(t, W, b, act)
            if i == len(convs) - 2:
                emb = t
        return (emb if with_embedding else None), t
