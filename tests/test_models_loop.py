"""lepton_spark.models.loop: the training loop and the early-stopping rules.

The rules are driven with hand-written validation sequences whose stopping epoch and best epoch are
worked out in the comments; the loop's order (update, then measure -- or the reverse for link models)
is checked against Adam's first step computed by hand; and real fits are checked against the rules
re-derived from their own recorded history.
"""

from __future__ import annotations

import numpy as np
import pytest

from lepton_spark.models import create_model
from lepton_spark.models.loop import (
    LINK_MONITOR,
    KipfStopping,
    Patience,
    StoppingRule,
    run,
    stopping_rule,
)
from lepton_spark.models.trainer import Patience as TrainerPatience
from lepton_spark.models.trainer import run as trainer_run

from .model_helpers import tiny_graph


def _drive(rule: StoppingRule, metrics: list[dict[str, float]]) -> tuple[int | None, list[dict]]:
    """Feed one metrics dict per epoch (each epoch with its own params object); returns the epoch the
    rule stopped at (None: never) and the params objects."""
    params = []
    for epoch, m in enumerate(metrics):
        p = {"w": np.array([float(epoch)])}
        params.append(p)
        if rule.update(epoch, p, m):
            return epoch, params
    return None, params


def _losses(*vl: float) -> list[dict[str, float]]:
    return [{"val_loss": v, "val_acc": 0.0} for v in vl]


def test_trainer_reexports_the_loop() -> None:
    assert TrainerPatience is Patience and trainer_run is run


def test_kipf_stops_when_loss_exceeds_mean_of_previous_window() -> None:
    # window 2. epoch 2: not > 2 yet. epoch 3: 0.95 > mean(0.9, 0.8) = 0.85 -> stop at 3
    rule = KipfStopping(2)
    stopped, params = _drive(rule, _losses(1.0, 0.9, 0.8, 0.95, 0.1))
    assert stopped == 3
    assert rule.final(params[-1], 3) == (params[-1], 3)  # Kipf keeps the final weights


def test_kipf_does_not_stop_on_a_loss_equal_to_the_mean() -> None:
    # epoch 2: 0.85 is not > mean(0.9, 0.8) = 0.85; epoch 3: 0.7 < mean(0.8, 0.85)
    assert _drive(KipfStopping(2), _losses(1.0, 0.9, 0.8, 0.85, 0.7))[0] is None


def test_patience_val_loss_stops_and_restores_best() -> None:
    # patience 2: epoch 0 and 1 improve (min 0.8 at epoch 1); epochs 2 (0.9) and 3 (0.85) do not -> stop at 3
    rule = Patience(2, "val_loss")
    stopped, params = _drive(rule, _losses(1.0, 0.8, 0.9, 0.85, 0.1))
    assert stopped == 3
    kept, epoch = rule.final(params[-1], 3)
    assert epoch == 1 and kept["w"][0] == 1.0


def test_patience_without_restore_keeps_final_weights() -> None:
    rule = Patience(2, "val_loss", restore_best=False)
    stopped, params = _drive(rule, _losses(1.0, 0.8, 0.9, 0.85))
    assert stopped == 3
    assert rule.final(params[-1], 3) == (params[-1], 3)


def test_patience_val_acc_ranks_ties_by_loss_but_does_not_reset() -> None:
    # val_acc: epoch 1 ties the accuracy (0.5) with a lower loss -> it becomes the best, yet is no
    # improvement of the monitor; epoch 2 neither -> two epochs without improvement, stop at 2
    m = [{"val_acc": 0.5, "val_loss": 1.0}, {"val_acc": 0.5, "val_loss": 0.8}, {"val_acc": 0.4, "val_loss": 0.1}]
    rule = Patience(2, "val_acc")
    stopped, params = _drive(rule, m)
    assert stopped == 2
    assert rule.final(params[-1], 2)[1] == 1


def test_patience_val_acc_loss_resets_on_either() -> None:
    # epoch 1 improves the loss only, epoch 2 the accuracy only, epoch 3 neither, epoch 4 neither -> stop at 4;
    # best by (acc, -loss): epoch 2 (0.6) beats epoch 1 (0.5, -0.7)
    m = [{"val_acc": 0.5, "val_loss": 1.0}, {"val_acc": 0.5, "val_loss": 0.7}, {"val_acc": 0.6, "val_loss": 0.9},
         {"val_acc": 0.55, "val_loss": 0.8}, {"val_acc": 0.6, "val_loss": 0.75}]
    rule = Patience(2, "val_acc_loss")
    stopped, params = _drive(rule, m)
    assert stopped == 4
    # epoch 4 ties epoch 2's accuracy with a lower loss (0.75 < 0.9): it ranks higher, so it is the best
    assert rule.final(params[-1], 4)[1] == 4


def test_patience_link_monitor_uses_auc_plus_ap() -> None:
    # AUC + AP: 0.5, 1.0, 0.75, 1.0 (a tie is no improvement) -> stop at 3 with patience 2, best epoch 1
    m = [{"val_auc": a, "val_ap": b} for a, b in ((0.25, 0.25), (0.5, 0.5), (0.25, 0.5), (0.75, 0.25))]
    rule = Patience(2, LINK_MONITOR)
    stopped, params = _drive(rule, m)
    assert stopped == 3
    assert rule.final(params[-1], 3)[1] == 1


def test_stopping_rule_factory() -> None:
    assert type(stopping_rule("none", patience=3)) is StoppingRule
    assert type(stopping_rule("patience", patience=3, have_val=False)) is StoppingRule
    assert isinstance(stopping_rule("kipf", patience=3), KipfStopping)
    rule = stopping_rule("patience", patience=3, monitor="val_acc", restore_best=False)
    assert isinstance(rule, Patience) and rule.monitor == "val_acc" and not rule.restore_best
    with pytest.raises(ValueError, match="early_stopping"):
        stopping_rule("sometimes", patience=3)
    with pytest.raises(ValueError, match="monitor"):
        Patience(3, "train_loss")


@pytest.mark.parametrize("before", [False, True])
def test_run_measures_after_or_before_the_update(before: bool) -> None:
    # gradient 1 on w = 0: Adam's first step is lr * mhat / (sqrt(vhat) + eps) with mhat = vhat = 1,
    # i.e. w1 = -0.5 / (1 + 1e-8) for lr 0.5
    seen: list[float] = []

    def objective(p):
        return float(p["w"][0]) ** 2, {"w": np.array([1.0])}, None

    def evaluate(p, _):
        seen.append(float(p["w"][0]))
        return {"w": float(p["w"][0])}

    fit = run({"w": np.array([0.0])}, epochs=1, lr=0.5, objective=objective, evaluate=evaluate,
              metrics=("w",), rule=StoppingRule(), evaluate_before_step=before)
    w1 = -0.5 / (1.0 + 1e-8)
    assert seen == pytest.approx([0.0 if before else w1], abs=1e-15)
    assert fit.params["w"][0] == pytest.approx(w1, abs=1e-15)  # the last epoch's update is applied either way
    assert fit.history == {"epoch": [0], "train_loss": [0.0], "w": seen}
    assert fit.best_epoch == 0 and not fit.stopped


def test_run_stops_and_keeps_the_rules_weights() -> None:
    # val_loss sequence 3, 1, 2, 2 with patience 2: stop at epoch 3, keep epoch 1's weights (after its update)
    vl = iter([3.0, 1.0, 2.0, 2.0, 0.0])
    snapshots = []

    def objective(p):
        return 0.0, {"w": np.array([1.0])}, None

    def evaluate(p, _):
        snapshots.append(p["w"].copy())
        return {"val_loss": next(vl), "val_acc": 0.0}

    fit = run({"w": np.array([0.0])}, epochs=10, lr=0.1, objective=objective, evaluate=evaluate,
              metrics=("val_loss",), rule=Patience(2, "val_loss"))
    assert fit.stopped and fit.history["epoch"] == [0, 1, 2, 3] and fit.history["val_loss"] == [3.0, 1.0, 2.0, 2.0]
    assert fit.best_epoch == 1
    np.testing.assert_array_equal(fit.params["w"], snapshots[1])


# --------------------------------------------------------------------------------------------------
# real fits follow the rules (re-derived from their recorded history)
# --------------------------------------------------------------------------------------------------
def _graph():
    """80 vertices, labels = the largest of the first three features with 20 % noise (learnable, then
    overfitted: the validation loss falls, then rises)."""
    A, X, _ = tiny_graph(seed=3, n=80, d=10, c=3, directed=False)
    rng = np.random.default_rng(0)
    y = np.argmax(X[:, :3], axis=1)
    flip = rng.random(80) < 0.2
    y[flip] = rng.integers(0, 3, int(flip.sum()))
    train = np.zeros(80, dtype=bool)
    train[:30] = True
    val = np.zeros(80, dtype=bool)
    val[30:60] = True
    return A, X, y, train, val


def test_fit_kipf_stops_where_its_history_says() -> None:
    A, X, y, train, val = _graph()
    m = create_model("sgc", early_stopping="kipf", patience=3, lr=0.05, epochs=300, feature_norm="none").fit(
        A, X, y, train, val, seed=1)
    vl, w = m.history_["val_loss"], 3
    expected = next((e for e in range(len(vl)) if e > w and vl[e] > np.mean(vl[e - w : e])), None)
    assert expected is not None, "the test needs a fit that stops"
    assert m.stopped_early_ and len(vl) == expected + 1 and m.best_epoch_ == expected


def test_fit_patience_restores_the_best_recorded_epoch() -> None:
    A, X, y, train, val = _graph()
    m = create_model("sgc", early_stopping="patience", patience=5, monitor="val_loss", restore_best=True, lr=0.2,
                     epochs=300, feature_norm="none").fit(A, X, y, train, val, seed=1)
    vl = np.array(m.history_["val_loss"])
    best = int(np.argmin(vl))  # the first minimum
    assert best > 0, "the test needs a fit whose best epoch is not the first"
    assert m.stopped_early_ and len(vl) == best + 5 + 1 and m.best_epoch_ == best
    # the kept weights are that epoch's: their validation accuracy is the one recorded then
    assert m.val_accuracy_ == m.history_["val_acc"][best]


def test_fit_without_validation_runs_every_epoch() -> None:
    A, X, y, train, _ = _graph()
    m = create_model("sgc", early_stopping="patience", patience=1, epochs=7).fit(A, X, y, train, None, seed=0)
    assert m.history_["epoch"] == list(range(7)) and m.best_epoch_ == 6 and not m.stopped_early_
    assert all(np.isnan(v) for v in m.history_["val_loss"] + m.history_["val_acc"])
    assert np.isnan(m.val_accuracy_)
