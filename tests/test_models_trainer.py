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


@pytest.mark.parametrize("mtype", ["sgc", "sign", "gcn"])
def test_evaluation_of_the_masked_rows_equals_the_full_forward_pass(mtype: str) -> None:
    """The trainer evaluates only the rows its masks name (per-row models compute just those); the
    accuracies and losses equal those computed from the full forward pass (scipy's softmax and log)."""
    import scipy.sparse as sp
    from scipy.special import log_softmax

    from lepton_spark.models.trainer import evaluate, train

    rng = np.random.default_rng(4)
    n, d = 120, 6
    A = sp.random(n, n, density=0.05, random_state=4, format="csr")
    A = (A + A.T).tocsr()
    X = rng.normal(size=(n, d))
    y = rng.integers(0, 3, n)
    order = rng.permutation(n)
    masks = {"train": np.zeros(n, bool), "val": np.zeros(n, bool), "test": np.zeros(n, bool)}
    masks["train"][order[:40]], masks["val"][order[40:60]], masks["test"][order[60:90]] = True, True, True
    model, _ = train(mtype, A, X, y, masks, {"epochs": 20})
    got = evaluate(model, A, X, y, masks)
    probs = model.predict_proba_local(A, X)
    for name, mask in masks.items():
        idx = np.flatnonzero(mask)
        assert got[f"{name}_acc"] == pytest.approx(float(np.mean(probs[idx].argmax(axis=1) == y[idx])), abs=1e-12)
        want_loss = -log_softmax(np.log(probs[idx]), axis=1)[np.arange(idx.size), y[idx]].mean()
        assert got[f"{name}_loss"] == pytest.approx(want_loss, rel=1e-9)
    sub = model.predict_proba_rows_local(A, X, np.array([5, 0, 77]))
    np.testing.assert_allclose(sub, probs[[5, 0, 77]], rtol=1e-12, atol=1e-15)
