"""The weights artifact (:mod:`lepton_spark.models.artifact`): round trips, and refusals of tampered,
mis-shaped, non-finite or pickled weights and of edited or broken cards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lepton_spark.models.artifact import (
    CARD_NAME,
    NPZ_NAME,
    card_digest,
    data_fingerprint,
    load_model,
    save_model,
    split_hash,
)

from .model_helpers import (
    ALL_TYPES,
    _random_fitted,
    hand_graph,
)


@pytest.fixture()
def saved_gcn(tmp_path, cora_trained, cora_inputs):
    A, X, _, masks = cora_inputs
    model, metrics = cora_trained["gcn"]
    fp = data_fingerprint(A, X, masks)
    card = save_model(model, tmp_path / "gcn", metrics=metrics, fingerprint=fp)
    return tmp_path / "gcn", model, card


def test_artifact_round_trip(saved_gcn, cora_inputs) -> None:
    out, model, card = saved_gcn
    A, X, _, masks = cora_inputs
    on_disk = json.loads((out / CARD_NAME).read_text())
    assert on_disk == card
    assert card["model_type"] == "gcn" and card["num_features"] == 1433 and card["num_classes"] == 7
    assert card["param_shapes"] == {"gc0.W": [1433, 16], "gc1.W": [16, 7]}
    assert card["hyperparameters"]["hidden"] == [16]
    assert "D^-1/2 (A+I) D^-1/2" in card["normalisation"]["adjacency"]
    assert card["fingerprint"]["num_vertices"] == 2708 and card["fingerprint"]["num_edges"] == 10556
    assert card["fingerprint"]["split_sha256"] == split_hash(
        {s: np.flatnonzero(masks[s]) for s in ("train", "val", "test")})
    final = card["metrics"]["final"]
    assert set(final) >= {"train_acc", "val_acc", "test_acc"} and final["test_acc"] > 0.78
    assert len(card["metrics"]["per_epoch"]["val_acc"]) == card["metrics"]["epochs_run"]
    with np.load(out / NPZ_NAME, allow_pickle=False) as z:
        assert sorted(z.files) == ["gc0.W", "gc1.W"]
    loaded = load_model(out, num_features=1433, num_classes=7)
    np.testing.assert_array_equal(loaded.forward_local(A, X), model.forward_local(A, X))
    assert loaded.get_params() == model.get_params()


def test_artifact_every_model_type_round_trips(tmp_path) -> None:
    A, X = hand_graph()
    for t in ALL_TYPES:
        m = _random_fitted(t, 4, 3)
        save_model(m, tmp_path / t, metrics={"test_acc": float("nan")}, fingerprint={})
        got = load_model(tmp_path / t)
        np.testing.assert_array_equal(got.forward_local(sp.csr_matrix(A), X), m.forward_local(sp.csr_matrix(A), X))


def test_artifact_refuses_tampered_weights(saved_gcn) -> None:
    out, _, _ = saved_gcn
    data = bytearray((out / NPZ_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / NPZ_NAME).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.npz: sha256 .* does not match"):
        load_model(out)


def test_artifact_refuses_shape_mismatch(saved_gcn, tmp_path) -> None:
    out, _, _ = saved_gcn
    with pytest.raises(ValueError, match=r"model\.npz: model expects 1433 input features but the graph has 500"):
        load_model(out, num_features=500)
    with pytest.raises(ValueError, match="predicts 7 classes but the graph has 3"):
        load_model(out, num_classes=3)
    # weights of another shape with a consistent sha256 (e.g. copied from another run): shapes refused
    other = _random_fitted("gcn", 1433, 7, hidden=32)
    save_model(other, tmp_path / "other", metrics={}, fingerprint={})
    (out / NPZ_NAME).write_bytes((tmp_path / "other" / NPZ_NAME).read_bytes())
    card = json.loads((out / CARD_NAME).read_text())
    from lepton_spark.models.artifact import sha256_file

    card["weights"]["sha256"] = sha256_file(out / NPZ_NAME)
    card["card_sha256"] = card_digest(card)  # a consistent forgery: the shape checks must still refuse it
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.npz: array 'gc0\.W' has shape \(1433, 32\) but the card says"):
        load_model(out)
    card["param_shapes"] = {"gc0.W": [1433, 32], "gc1.W": [32, 7]}
    card["card_sha256"] = card_digest(card)
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"model\.npz: does not match a gcn model.*gc0\.W"):
        load_model(out)


def test_artifact_card_edits_are_detected(tmp_path) -> None:
    """Hyper-parameters change predictions (SGC's K): editing them in the card alone is refused."""
    X = np.eye(4)
    A = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], dtype=float))
    model = _random_fitted("sgc", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    card = json.loads((tmp_path / "m" / CARD_NAME).read_text())
    assert card["format_version"] == 3 and card["card_sha256"] == card_digest(card)
    for key, value in (("hyperparameters", {**card["hyperparameters"], "K": card["hyperparameters"]["K"] + 1}),
                       ("num_classes", 4), ("model_type", "sign")):
        edited = {**card, key: value}
        (tmp_path / "m" / CARD_NAME).write_text(json.dumps(edited))
        with pytest.raises(ValueError, match="card_sha256 does not match"):
            load_model(tmp_path / "m")
    # the same edit with a recomputed digest loads, and K really changes the predictions
    edited = {**card, "hyperparameters": {**card["hyperparameters"], "K": card["hyperparameters"]["K"] + 1}}
    edited["card_sha256"] = card_digest(edited)
    (tmp_path / "m" / CARD_NAME).write_text(json.dumps(edited))
    assert not np.allclose(load_model(tmp_path / "m").forward_local(A, X), model.forward_local(A, X))


def test_artifact_refuses_non_finite_weights(tmp_path) -> None:
    from lepton_spark.models.artifact import sha256_file

    model = _random_fitted("gcn", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    for bad in (np.nan, np.inf):
        with np.load(tmp_path / "m" / NPZ_NAME) as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["gc0.W"][0, 0] = bad
        np.savez(tmp_path / "m" / NPZ_NAME, **arrays)
        card = json.loads((tmp_path / "m" / CARD_NAME).read_text())
        card["weights"]["sha256"] = sha256_file(tmp_path / "m" / NPZ_NAME)
        card["card_sha256"] = card_digest(card)
        (tmp_path / "m" / CARD_NAME).write_text(json.dumps(card))
        with pytest.raises(ValueError, match=r"array 'gc0\.W' has 1 NaN or infinite values"):
            load_model(tmp_path / "m")


@pytest.mark.parametrize("case,needle", [
    ("missing", "model card not found"),
    ("bad_json", "not a valid JSON model card"),
    ("not_a_card", "not a lepton-spark-model card"),
    ("version", "unsupported card version 99"),
    ("model_type", "unknown model type 'transformer'"),
    ("missing_key", "card is missing 'param_shapes'"),
])
def test_artifact_card_errors(tmp_path, case, needle) -> None:
    model = _random_fitted("gcn", 4, 3)
    save_model(model, tmp_path / "m", metrics={}, fingerprint={})
    path = tmp_path / "m" / CARD_NAME
    card = json.loads(path.read_text())
    if case == "missing":
        path.unlink()
    elif case == "bad_json":
        path.write_text(path.read_text()[:-20])
    elif case == "not_a_card":
        path.write_text(json.dumps({"hello": 1}))
    elif case == "version":
        path.write_text(json.dumps({**card, "format_version": 99}))
    elif case == "model_type":
        path.write_text(json.dumps({**card, "model_type": "transformer"}))
    else:
        path.write_text(json.dumps({k: v for k, v in card.items() if k != "param_shapes"}))
    with pytest.raises(ValueError, match=needle):
        load_model(tmp_path / "m")


def test_artifact_refuses_pickled_arrays(saved_gcn) -> None:
    out, _, _ = saved_gcn
    np.savez(out / NPZ_NAME, **{"gc0.W": np.array([{"evil": 1}], dtype=object), "gc1.W": np.zeros((16, 7))})
    card = json.loads((out / CARD_NAME).read_text())
    from lepton_spark.models.artifact import sha256_file

    card["weights"]["sha256"] = sha256_file(out / NPZ_NAME)
    card["card_sha256"] = card_digest(card)
    (out / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="without pickle"):
        load_model(out)
