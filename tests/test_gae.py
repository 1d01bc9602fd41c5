"""GAE/VGAE on the driver: metrics vs hand-computed values, the edge split, the loss against a naive
reference, gradients against finite differences, training on a planted graph, the artifact and the
trainer/CLI integration. No Spark (the Spark side is tests/test_links.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.links.metrics import average_precision, roc_auc
from lepton_spark.links.split import EdgeSplit, pair_codes, split_edges, undirected_pairs
from lepton_spark.models import create_model
from lepton_spark.models.artifact import load_model, save_model
from lepton_spark.models.gae import (
    GAE,
    ReconTarget,
    recon_loss_full,
    recon_loss_sampled,
    score_pairs,
    train_link_model,
)
from lepton_spark.models.layers import Adam


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def test_auc_and_ap_match_hand_computed_values() -> None:
    # scikit-learn's documented examples: roc_auc_score([0,0,1,1], [.1,.4,.35,.8]) = 0.75,
    # average_precision_score([0,1,1,0]... with y=[0,0,1,1]) = 0.8333...
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-12)
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6, abs=1e-12)
    # with ties. positives .9 .7 .7, negatives .8 .7 .1. AUC: .9 beats all (3); each .7 loses to .8,
    # ties .7 (1/2), beats .1 -> 1.5 each; 6/9. AP: thresholds .9 (TP1 FP0: P=1, R=1/3),
    # .8 (P=1/2, R=1/3), .7 (TP3 FP2: P=3/5, R=1), .1 (R=1) -> 1/3*1 + 2/3*3/5 = 11/15.
    y = [1, 0, 1, 1, 0, 0]
    s = [0.9, 0.8, 0.7, 0.7, 0.7, 0.1]
    assert roc_auc(y, s) == pytest.approx(2 / 3, abs=1e-12)
    assert average_precision(y, s) == pytest.approx(11 / 15, abs=1e-12)
    # order of the rows does not matter; uninformative scores give AUC 1/2 and AP = positive rate
    perm = [5, 2, 0, 4, 1, 3]
    assert average_precision(np.array(y)[perm], np.array(s)[perm]) == pytest.approx(11 / 15, abs=1e-12)
    assert roc_auc(y, np.ones(6)) == 0.5 and average_precision(y, np.ones(6)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="0 or 1"):
        average_precision([0, 2], [0.2, 0.3])


def test_auc_matches_pairwise_definition_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 2)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    want = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert roc_auc(y, s) == pytest.approx(want, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# the edge split
# --------------------------------------------------------------------------------------------------
def _random_graph(n: int, m: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, n, m), rng.integers(0, n, m)
    A = sp.csr_matrix((np.ones(m), (r, c)), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    return sp.csr_matrix(A)


def _codes(x: np.ndarray, n: int) -> set[int]:
    return set(pair_codes(x, n).tolist())


def test_split_is_disjoint_complete_and_seeded() -> None:
    n = 300
    A = sp.lil_matrix(_random_graph(n, 2000, 0))
    A[5, 5] = 1.0  # a self-loop is never a pair
    A = sp.csr_matrix(A)
    pairs = undirected_pairs(A)
    m = pairs.shape[0]
    s = split_edges(A, seed=7)
    parts = {k: _codes(getattr(s, k), n) for k in ("train", "val", "test", "val_neg", "test_neg")}
    assert s.val.shape[0] == m // 20 and s.test.shape[0] == m // 10
    assert s.val_neg.shape[0] == s.val.shape[0] and s.test_neg.shape[0] == s.test.shape[0]
    assert all(len(v) == getattr(s, k).shape[0] for k, v in parts.items())  # no duplicates inside a part
    assert parts["train"] | parts["val"] | parts["test"] == _codes(pairs, n)
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not parts[a] & parts[b], (a, b)
    edges = _codes(pairs, n)
    assert not (parts["val_neg"] | parts["test_neg"]) & edges
    for k in parts:
        p = getattr(s, k)
        assert (p[:, 0] < p[:, 1]).all(), k  # canonical u < v, so never a self pair
    # seeded: same seed -> same split, also when the edges come in another order; other seed differs
    coo = A.tocoo()
    order = np.random.default_rng(1).permutation(coo.nnz)
    shuffled = sp.coo_matrix((coo.data[order], (coo.row[order], coo.col[order])), shape=A.shape)
    again = split_edges(shuffled, seed=7)
    assert again.sha256() == s.sha256()
    assert all(np.array_equal(getattr(again, k), getattr(s, k)) for k in names)
    assert split_edges(A, seed=8).sha256() != s.sha256()


def test_train_adjacency_drops_held_out_pairs_in_both_directions() -> None:
    n = 60
    A = _random_graph(n, 300, 2)
    A = sp.lil_matrix(A)
    A[3, 3] = 2.0
    A = sp.csr_matrix(A)
    s = split_edges(A, seed=0)
    At = s.train_adjacency(A)
    held = np.vstack([s.val, s.test])
    assert np.all(np.asarray(At[held[:, 0], held[:, 1]]).ravel() == 0)
    assert np.all(np.asarray(At[held[:, 1], held[:, 0]]).ravel() == 0)
    assert np.all(np.asarray(At[s.train[:, 0], s.train[:, 1]]).ravel() == 1)
    assert At[3, 3] == 2.0  # self-loops are not pairs: kept
    assert At.nnz == A.nnz - 2 * held.shape[0]


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="too few"):
        split_edges(sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=float)))
    full = sp.csr_matrix(np.ones((6, 6)) - np.eye(6))  # complete graph: no negative pairs at all
    with pytest.raises(ValueError, match="unconnected pairs"):
        split_edges(full, val_frac=0.2, test_frac=0.2)


# --------------------------------------------------------------------------------------------------
# loss and gradients
# --------------------------------------------------------------------------------------------------
def _naive_loss(Z: np.ndarray, train_pairs: np.ndarray) -> float:
    """The reference's formula, written out on the dense n x n matrices (tf's
    weighted_cross_entropy_with_logits: y * -log(sig(x)) * pw + (1 - y) * -log(1 - sig(x)))."""
    n = Z.shape[0]
    adj = np.zeros((n, n))
    adj[train_pairs[:, 0], train_pairs[:, 1]] = 1
    adj = adj + adj.T
    pos_weight = (n * n - adj.sum()) / adj.sum()
    norm = n * n / ((n * n - adj.sum()) * 2)
    label = adj + np.eye(n)
    logits = Z @ Z.T
    p = 1 / (1 + np.exp(-logits))
    return float(norm * np.mean(label * -np.log(p) * pos_weight + (1 - label) * -np.log(1 - p)))


def _tiny(seed: int = 0, n: int = 9, d: int = 5):
    rng = np.random.default_rng(seed)
    A = _random_graph(n, 14, seed)
    X = rng.standard_normal((n, d))
    return A, X


def test_full_loss_equals_naive_reference_and_sampled_is_unbiased() -> None:
    A, _ = _tiny()
    n = A.shape[0]
    pairs = undirected_pairs(A)
    target = ReconTarget.from_pairs(pairs, n)
    Z = np.random.default_rng(1).standard_normal((n, 3))
    loss, _ = recon_loss_full(Z, target)
    assert loss == pytest.approx(_naive_loss(Z, pairs), rel=1e-12)
    rng = np.random.default_rng(0)
    est = [recon_loss_sampled(Z, target, rng, neg_ratio=4.0)[0] for _ in range(4000)]
    assert np.mean(est) == pytest.approx(loss, rel=0.02)  # std error of the mean is ~0.3 %


def _numeric_grad(f, params: dict[str, np.ndarray], eps: float = 1e-6) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            old = v[idx]
            v[idx] = old + eps
            up = f(params)
            v[idx] = old - eps
            down = f(params)
            v[idx] = old
            g[idx] = (up - down) / (2 * eps)
        out[k] = g
    return out


@pytest.mark.parametrize("variational,mode,weight_decay,encoder", [
    (False, "full", 0.0, "gcn"), (False, "sampled", 0.0, "gcn"), (True, "full", 0.01, "gcn"),
    (True, "sampled", 0.0, "gcn"), (False, "full", 0.0, "sgc"), (False, "pairs", 0.0, "sgc"),
    (True, "pairs", 0.0, "sgc")])
def test_gradients_match_finite_differences(variational: bool, mode: str, weight_decay: float,
                                            encoder: str) -> None:
    A, X = _tiny(4)
    n = A.shape[0]
    model = GAE(hidden=(4, 3), variational=variational, weight_decay=weight_decay, encoder=encoder)
    model.resolve_feature_norm(X)
    split = split_edges(A, val_frac=0.2, test_frac=0.2, seed=0)
    ctx = model._context(split.train_adjacency(A), X)
    assert (ctx.graph is None) == (encoder == "sgc")
    target = ReconTarget.from_pairs(split.train, n)
    if mode == "pairs":  # ordered positive pairs and some negatives, as fit_pairs passes them
        target = (np.vstack([split.train, split.train[:, ::-1]]), np.vstack([split.val_neg, split.test_neg]))
    layers = model._build_layers(X.shape[1], 0)
    params = model._init_params(layers, np.random.default_rng(0))
    noise = np.random.default_rng(5).standard_normal((n, 3))

    def f(p):  # a fresh rng per call: the sampled loss draws the same entries every time
        return model._objective(p, layers, ctx, target, np.random.default_rng(9), mode, noise=noise)[0]

    _, grads, _ = model._objective(params, layers, ctx, target, np.random.default_rng(9), mode, noise=noise)
    num = _numeric_grad(f, params)
    assert set(grads) == set(num) == {"gc0.W", "gc1.W"}
    for k in grads:
        scale = max(1e-3, float(np.abs(num[k]).max()))
        err = float(np.abs(grads[k] - num[k]).max()) / scale
        assert err < 1e-6, f"{k}: relative gradient error {err:.2e}"


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def planted_graph(n: int = 400, groups: int = 16, p_in: float = 0.2, p_out: float = 0.0005, d: int = 16,
                  seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Planted partition: dense inside groups, sparse across; features = noisy group indicators."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    same = g[:, None] == g[None, :]
    prob = np.where(same, p_in, p_out)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    A = sp.csr_matrix((upper | upper.T).astype(np.float64))
    X = rng.standard_normal((n, d)) * 0.5
    X[np.arange(n), g % d] += 1.0
    return A, X


@pytest.fixture(scope="module")
def planted():
    return planted_graph()


@pytest.fixture(scope="module")
def planted_gae(planted):
    A, X = planted
    return train_link_model("gae", A, X, {"epochs": 100}, seed=0)


def test_gae_learns_planted_links_and_reports_metrics(planted, planted_gae) -> None:
    model, metrics = planted_gae
    for key in ("val_auc", "val_ap", "test_auc", "test_ap"):
        assert metrics[key] > 0.85, (key, metrics[key])
    assert metrics["task"] == "link" and metrics["num_classes"] == 0 and metrics["loss_mode"] == "full"
    h = metrics["history"]
    assert len(h["train_loss"]) == metrics["epochs_run"] == 100
    assert h["train_loss"][-1] < 0.8 * h["train_loss"][0]
    assert metrics["edge_split"]["sha256"] == model.split_.sha256()
    # the reported metrics are those of the embedding on the TRAINING graph
    A, X = planted
    from lepton_spark.models.gae import link_metrics

    Z = model.embed_local(model.split_.train_adjacency(A), X)
    auc, ap = link_metrics(Z, model.split_.test, model.split_.test_neg)
    assert auc == pytest.approx(metrics["test_auc"], abs=1e-6) and ap == pytest.approx(metrics["test_ap"], abs=1e-6)
    # deterministic by seed
    again, _ = train_link_model("gae", A, X, {"epochs": 100}, seed=0)
    np.testing.assert_array_equal(again.params_["gc1.W"], model.params_["gc1.W"])


def test_vgae_and_sampled_loss_train(planted) -> None:
    A, X = planted
    _, mv = train_link_model("gae", A, X, {"epochs": 100, "variational": True}, seed=1)
    _, ms = train_link_model("gae", A, X, {"epochs": 100, "loss": "sampled"}, seed=1)
    assert ms["loss_mode"] == "sampled"
    for m in (mv, ms):
        assert m["test_auc"] > 0.85 and m["test_ap"] > 0.85, m


def test_twin_plan_matches_local_forward(planted, planted_gae) -> None:
    model, _ = planted_gae
    A, X = planted
    Z = model.embed_local(A, X)
    twin = model.forward_twin(A, X)
    assert twin.embedding.shape == Z.shape == (A.shape[0], 16)
    assert np.abs(twin.embedding - Z).max() < 1e-5
    v = GAE(hidden=(8, 4), variational=True, epochs=3).fit(A, X, seed=0)
    np.testing.assert_allclose(v.forward_twin(A, X).embedding, v.embed_local(A, X), atol=1e-5)
    assert v.embed_local(A, X).shape == (A.shape[0], 4)


def test_gae_artifact_round_trip(tmp_path, planted, planted_gae) -> None:
    model, metrics = planted_gae
    A, X = planted
    card = save_model(model, tmp_path / "gae", metrics=metrics, fingerprint={})
    assert card["model_type"] == "gae" and card["num_classes"] == 0
    assert card["param_shapes"] == {"gc0.W": [16, 32], "gc1.W": [32, 16]}
    final = card["metrics"]["final"]
    for key in ("val_auc", "val_ap", "test_auc", "test_ap"):
        assert final[key] == metrics[key]
    assert "inner product" in card["embedding"]
    loaded = load_model(tmp_path / "gae", num_features=16)
    np.testing.assert_array_equal(loaded.embed_local(A, X), model.embed_local(A, X))
    assert loaded.get_params() == model.get_params()
    on_disk = json.loads((tmp_path / "gae" / "model.json").read_text())
    assert on_disk["metrics"]["final"]["test_auc"] == metrics["test_auc"]


def test_gae_hyperparameters_and_errors(planted) -> None:
    m = create_model("gae")
    assert m.get_params()["hidden"] == [32, 16] and "monitor" not in m.get_params()
    assert create_model("gae", **json.loads(json.dumps(m.get_params()))).get_params() == m.get_params()
    for bad in ({"loss": "exact"}, {"early_stopping": "kipf"}, {"neg_ratio": 0}, {"hidden": [16, 0]}):
        with pytest.raises(ValueError):
            create_model("gae", **bad)
    A, X = planted
    with pytest.raises(TypeError, match="link model"):
        GAE(epochs=1).fit(A, X).predict_proba_local(A, X)
    with pytest.raises(ValueError, match="not a link model"):
        train_link_model("gcn", A, X)
    wrong = EdgeSplit(3, *(np.zeros((0, 2), np.int64),) * 5, seed=0)
    with pytest.raises(ValueError, match="for 3 vertices"):
        GAE(epochs=1).fit(A, X, split=wrong)


def test_sgc_encoder_and_pair_training(planted) -> None:
    """The large-graph path's model on the driver: fit_pairs on the rows S^K X of a planted graph, with
    sampled training pairs and a uniform negative pool, reaches the full fit's quality."""
    A, X = planted
    split = split_edges(A, seed=2)
    model = GAE(encoder="sgc", epochs=100)
    Zin = model.row_inputs(split.train_adjacency(A), X)
    pool = np.random.default_rng(0).choice(A.shape[0], 300, replace=False)
    model.fit_pairs(Zin, split.train, pool, val=(split.val, split.val_neg), test=(split.test, split.test_neg))
    assert model.loss_mode_ == "pairs" and model.link_metrics_["test_auc"] > 0.85
    # embed_local on the training graph = the MLP on the row inputs; the twin plan agrees
    np.testing.assert_allclose(model.embed_local(split.train_adjacency(A), X), model.embed_rows(Zin), atol=1e-12)
    np.testing.assert_allclose(model.forward_twin(A, X).embedding, model.embed_local(A, X), atol=1e-5)
    full = GAE(encoder="sgc", epochs=100).fit(A, X, split=split)
    assert full.link_metrics_["test_auc"] > 0.85
    with pytest.raises(TypeError, match="sgc encoder"):
        GAE().fit_pairs(Zin, split.train, pool, val=(split.val, split.val_neg), test=(split.test, split.test_neg))


def test_patience_keeps_best_validation_weights(planted) -> None:
    A, X = planted
    _, m = train_link_model("gae", A, X, {"epochs": 60, "early_stopping": "patience", "patience": 5,
                                          "lr": 0.2}, seed=0)
    h = m["history"]
    best = int(np.argmax(np.array(h["val_auc"]) + np.array(h["val_ap"])))
    assert m["best_epoch"] == best and best < m["epochs_run"] - 1
    # the kept weights are the best epoch's: their validation metrics are that epoch's
    assert m["val_auc"] == pytest.approx(h["val_auc"][best], abs=1e-5)
    assert m["val_ap"] == pytest.approx(h["val_ap"][best], abs=1e-5)
    if m["stopped_early"]:
        assert m["epochs_run"] == best + 6


def test_trainer_dispatches_link_models(planted) -> None:
    from lepton_spark.models.trainer import train

    A, X = planted
    y = np.full(A.shape[0], -1)
    model, metrics = train("gae", A, X, y, {"train": np.zeros(A.shape[0], bool)}, {"epochs": 2}, seed=0)
    assert isinstance(model, GAE) and metrics["test_auc"] is not None and metrics["test_acc"] is None


def test_score_pairs_is_sigmoid_of_inner_product() -> None:
    Z = np.array([[1.0, 0.0], [2.0, -1.0], [0.0, 50.0]])
    got = score_pairs(Z, np.array([[0, 1], [1, 2], [0, 2]]))
    np.testing.assert_allclose(got, [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(50.0)), 0.5], rtol=1e-12)


def test_adam_epsilon_hat_is_tensorflow1_update_form() -> None:
    # tf.train.AdamOptimizer (the reference's optimizer): lr_t = lr sqrt(1 - b2^t) / (1 - b1^t),
    # w -= lr_t m_t / (sqrt(v_t) + eps). Step 1 with gradient g: m = (1 - b1) g, v = (1 - b2) g^2, so
    # the step is lr sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps); PyTorch's form: lr g / (|g| + eps).
    lr, b2, eps = 0.01, 0.999, 1e-8
    g = np.array([1e-7, -3e-9, 0.5, 0.0])
    tf1, torch = {"w": np.zeros(4)}, {"w": np.zeros(4)}
    Adam(lr, epsilon_hat=True).step(tf1, {"w": g})
    Adam(lr).step(torch, {"w": g})
    c = np.sqrt(1 - b2)
    np.testing.assert_allclose(tf1["w"], -lr * c * g / (c * np.abs(g) + eps), rtol=1e-12, atol=0)
    np.testing.assert_allclose(torch["w"], -lr * g / (np.abs(g) + eps), rtol=1e-12, atol=0)
    assert abs(tf1["w"][0]) < 0.3 * abs(torch["w"][0])  # tiny gradients: the forms differ ...
    assert tf1["w"][2] == pytest.approx(torch["w"][2], rel=1e-6)  # ... large ones: the same step
    # later steps, gradients far above eps: the same trajectory as PyTorch's form without eps
    rng = np.random.default_rng(0)
    a, b = Adam(lr, epsilon_hat=True), Adam(lr, eps=0.0)
    wa, wb = {"w": np.zeros(3)}, {"w": np.zeros(3)}
    for _ in range(5):
        grad = rng.normal(size=3)
        a.step(wa, {"w": grad})
        b.step(wb, {"w": grad})
    np.testing.assert_allclose(wa["w"], wb["w"], rtol=1e-5)
