"""Training on Cora (:mod:`lepton_spark.models.trainer`): single-seed accuracy per model type and
GCN's Kipf & Welling early stopping and weight decay."""

from __future__ import annotations

import numpy as np
import pytest

from .model_helpers import (
    ALL_TYPES,
)

MIN_ACC = {"gcn": 0.78, "sgc": 0.78, "appnp": 0.80, "sign": 0.75, "sage": 0.75}


@pytest.mark.parametrize("mtype", ALL_TYPES)
def test_cora_single_seed_accuracy(cora_trained, mtype: str) -> None:
    _, metrics = cora_trained[mtype]
    assert metrics["test_acc"] >= MIN_ACC[mtype], metrics["test_acc"]
    assert metrics["train_acc"] > metrics["test_acc"] - 0.05
    assert len(metrics["history"]["val_loss"]) == metrics["epochs_run"]


def test_gcn_matches_kipf_early_stopping_and_decay(cora_trained) -> None:
    model, metrics = cora_trained["gcn"]
    assert model.get_params()["weight_decay_on"] == "first"
    names = model._decay_names(model.layers())
    assert names == ["gc0.W"]
    vl = metrics["history"]["val_loss"]
    if metrics["stopped_early"]:
        assert vl[-1] > np.mean(vl[-11:-1]) - 1e-6
