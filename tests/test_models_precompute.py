"""The large-graph training path (:mod:`lepton_spark.models.precompute`): ``train_from_ops`` on the
float32 numpy twin of the Spark path (only labelled rows collected)."""

from __future__ import annotations

import pytest

from lepton_spark.models import create_model
from lepton_spark.models.plan import LocalOps
from lepton_spark.models.precompute import train_from_ops
from lepton_spark.models.trainer import evaluate, train


@pytest.mark.parametrize("mtype", ["sgc", "sign", "appnp"])
def test_large_graph_path_with_float32_twin(cora, cora_inputs, mtype: str) -> None:
    """train_from_ops on the numpy twin = the Spark path's arithmetic (float32 propagated features,
    only labelled rows collected)."""
    A, X, y, masks = cora_inputs
    hp = {"sgc": {"weight_decay": 1e-5}, "sign": {"hops": 2, "epochs": 80, "patience": 20},
          "appnp": {"epochs": 200, "patience": 30}}[mtype]
    ops = LocalOps(A, X, labels=y, split=cora.split)
    model, metrics = train_from_ops(ops, create_model(mtype, **hp), seed=0)
    assert metrics["labelled_rows"] == 1640
    if mtype == "sgc":
        _, ref = train(mtype, A, X, y, masks, hp, seed=0)
        assert abs(metrics["test_acc"] - ref["test_acc"]) <= 0.005
        assert metrics["input_width"] == X.shape[1]
    if mtype == "sign":
        assert metrics["input_width"] == (model.hops + 1) * X.shape[1]
    assert metrics["test_acc"] >= 0.72
    # the fitted model is a normal model: its local forward pass agrees with the reported accuracy
    ev = evaluate(model, A, X, y, masks)
    assert abs(ev["test_acc"] - metrics["test_acc"]) <= 0.005


def test_large_graph_path_refuses_full_graph_models(cora) -> None:
    ops = LocalOps(cora.adjacency, cora.features, labels=cora.labels, split=cora.split)
    with pytest.raises(TypeError, match="full graph"):
        train_from_ops(ops, create_model("gcn"))
