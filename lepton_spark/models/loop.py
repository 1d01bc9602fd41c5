"""The training loop and the early-stopping rules: one home for every model's fit.

:func:`run` is the loop every model trains with: full-batch Adam for ``epochs`` epochs, a history of
per-epoch numbers, a :class:`StoppingRule` consulted after each epoch, and the weights to keep at the
end. The model supplies the numbers, the loop owns the order:

* ``objective(params) -> (loss, grads, out)`` – the epoch's training loss, its gradient with
  respect to every parameter, and whatever ``evaluate`` needs of the forward pass (the training
  logits, the embedding);
* ``evaluate(params, out) -> metrics`` – the epoch's numbers for the history and the rule. Node
  models (``evaluate_before_step=False``) measure the weights AFTER the epoch's update (validation
  loss and accuracy of the updated model); link models (``True``) the forward pass the epoch trained
  on, before its update, as the reference GAE code does.

The early-stopping rules (:func:`stopping_rule` builds one from a model's hyper-parameters):

* ``"kipf"`` – :class:`KipfStopping`, Kipf & Welling: stop once the validation loss exceeds the mean
  of the previous ``patience`` epochs; keep the final weights;
* ``"patience"`` – :class:`Patience`: stop after ``patience`` epochs without improvement of the
  ``monitor`` (``val_loss``, ``val_acc``, ``val_acc_loss`` = either improves, or for link models
  ``val_auc_ap`` = validation AUC + AP) and restore the best weights when ``restore_best`` (the best is
  ranked by the monitor; ``val_acc``/``val_acc_loss`` by accuracy, then loss);
* ``"none"`` – :class:`StoppingRule`: run all ``epochs``, keep the final weights. A fit without
  validation rows always runs this rule.

:func:`fit_classifier` is the node-classification fit (``GraphModel.fit`` and ``fit_precomputed``
call it): softmax cross-entropy of the training rows plus ``weight_decay/2·||W||²`` on the parameters
named by ``weight_decay_on``, dropout, one of the rules above; it installs the fitted attributes.
The link model's fit (:meth:`lepton_spark.models.gae.GAE.fit`) runs the same :func:`run` with its
reconstruction loss. The training entry points (``train``, presets, tuning) are
:mod:`lepton_spark.models.trainer`, which re-exports these names.

Everything random (initialisation, dropout, sampled negatives) comes from one
``np.random.default_rng(seed)`` drawn in a fixed order, so a fit is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_spark.graph.functional import accuracy
from lepton_spark.models.layers import Adam, Params, softmax_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    from lepton_spark.models.base import Context, GraphModel

EARLY_STOPPING = ("kipf", "patience", "none")
MONITORS = ("val_loss", "val_acc", "val_acc_loss")
#: the monitor of link models (GAE): validation ROC AUC + average precision, higher is better
LINK_MONITOR = "val_auc_ap"


# --------------------------------------------------------------------------------------------------
# early-stopping rules
# --------------------------------------------------------------------------------------------------
class StoppingRule:
    """``early_stopping="none"``: never stops, keeps the final weights. The base of the rules:
    :meth:`update` sees every epoch's metrics (and the weights they measure) and says whether to
    stop; :meth:`final` picks the weights to keep and the epoch they come from."""

    def update(self, epoch: int, params: Params, metrics: Mapping[str, float]) -> bool:
        """Record one epoch; True = stop training now."""
        return False

    def final(self, params: Params, last_epoch: int) -> tuple[Params, int]:
        """The weights to keep and their epoch (default: the last epoch's)."""
        return params, last_epoch


class KipfStopping(StoppingRule):
    """Kipf & Welling's rule: stop at epoch ``e > window`` once the validation loss exceeds the mean
    of the ``window`` epochs before it; the final weights are kept."""

    def __init__(self, window: int) -> None:
        self.window = int(window)
        self.losses: list[float] = []

    def update(self, epoch: int, params: Params, metrics: Mapping[str, float]) -> bool:
        self.losses.append(metrics["val_loss"])
        w, vl = self.window, self.losses
        return epoch > w and vl[-1] > float(np.mean(vl[-(w + 1) : -1]))


class Patience(StoppingRule):
    """Stop after ``patience`` epochs in a row without improvement of ``monitor``; keep the best
    weights seen (ranked by the monitor) and restore them at the end when ``restore_best``.

    Improvement: ``val_loss`` a new minimum; ``val_acc`` a new maximum; ``val_acc_loss`` either;
    ``val_auc_ap`` a new maximum of AUC + AP (the first epoch always counts). Ranking of the best:
    ``val_loss`` by loss; ``val_acc`` and ``val_acc_loss`` by accuracy, ties by the lower loss;
    ``val_auc_ap`` by AUC + AP. A later epoch replaces the best only when it ranks strictly higher.
    """

    def __init__(self, patience: int, monitor: str = "val_loss", restore_best: bool = True) -> None:
        if monitor not in (*MONITORS, LINK_MONITOR):
            raise ValueError(f"monitor must be one of {(*MONITORS, LINK_MONITOR)}, got {monitor!r}")
        self.patience = int(patience)
        self.monitor = monitor
        self.restore_best = bool(restore_best)
        self.best_key: tuple[float, ...] | None = None
        self.best_params: Params | None = None
        self.best_epoch = -1
        self.wait = 0
        self._min_loss, self._max_acc = np.inf, -np.inf

    def _key(self, m: Mapping[str, float]) -> tuple[float, ...]:
        if self.monitor == "val_loss":
            return (-m["val_loss"],)
        if self.monitor == LINK_MONITOR:
            return (m["val_auc"] + m["val_ap"],)
        return (m["val_acc"], -m["val_loss"])

    def update(self, epoch: int, params: Params, metrics: Mapping[str, float]) -> bool:
        key = self._key(metrics)
        replaced = self.best_key is None or key > self.best_key
        if replaced:
            # Adam writes new arrays for every parameter, so a shallow copy keeps this epoch's weights
            self.best_key, self.best_params, self.best_epoch = key, dict(params), epoch
        if self.monitor == LINK_MONITOR:
            improved = replaced
        else:
            v_loss, v_acc = metrics["val_loss"], metrics["val_acc"]
            if self.monitor == "val_loss":
                improved = v_loss < self._min_loss
            elif self.monitor == "val_acc":
                improved = v_acc > self._max_acc
            else:
                improved = v_acc > self._max_acc or v_loss < self._min_loss
            self._min_loss, self._max_acc = min(self._min_loss, v_loss), max(self._max_acc, v_acc)
        if improved:
            self.wait = 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def final(self, params: Params, last_epoch: int) -> tuple[Params, int]:
        if self.restore_best and self.best_epoch >= 0 and self.best_params is not None:
            return self.best_params, self.best_epoch
        return params, last_epoch


def stopping_rule(early_stopping: str, *, patience: int, monitor: str = "val_loss", restore_best: bool = True,
                  have_val: bool = True) -> StoppingRule:
    """The rule for a model's ``early_stopping`` hyper-parameter (``none`` without validation rows)."""
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}")
    if not have_val or early_stopping == "none":
        return StoppingRule()
    if early_stopping == "kipf":
        return KipfStopping(patience)
    return Patience(patience, monitor, restore_best)


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`run` returns: the weights kept, the per-epoch history (``epoch``, ``train_loss`` and
    the ``metrics`` keys, one value per epoch run), the epoch of the kept weights, and whether the rule
    stopped the fit before ``epochs``."""

    params: Params
    history: dict[str, list[float]]
    best_epoch: int
    stopped: bool


def run(params: Params, *, epochs: int, lr: float, objective: Callable[[Params], tuple[float, Params, Any]],
        evaluate: Callable[[Params, Any], Mapping[str, float]], metrics: Sequence[str], rule: StoppingRule,
        evaluate_before_step: bool = False, adam_epsilon_hat: bool = False) -> FitResult:
    """Full-batch Adam (learning rate ``lr``) for at most ``epochs`` epochs; see the module docstring.

    ``params`` (the initial weights) is updated in place, one new array per parameter and step.
    ``metrics`` names the keys of ``evaluate``'s result kept in the history, in order.
    ``adam_epsilon_hat`` selects TF1's Adam update form (:class:`~lepton_spark.models.layers.Adam`).
    """
    opt = Adam(lr, epsilon_hat=adam_epsilon_hat)
    history: dict[str, list[float]] = {k: [] for k in ("epoch", "train_loss", *metrics)}
    stopped = False
    for epoch in range(epochs):
        loss, grads, out = objective(params)
        if not evaluate_before_step:
            opt.step(params, grads)
        measured = evaluate(params, out)
        history["epoch"].append(epoch)
        history["train_loss"].append(float(loss))
        for k in metrics:
            history[k].append(measured[k])
        if rule.update(epoch, params, measured):
            stopped = True
            break
        if evaluate_before_step:
            opt.step(params, grads)
    kept, best_epoch = rule.final(params, history["epoch"][-1])
    return FitResult(kept, history, int(best_epoch), stopped)


# --------------------------------------------------------------------------------------------------
# node classification
# --------------------------------------------------------------------------------------------------
NODE_METRICS = ("train_acc", "val_loss", "val_acc")


def fit_classifier(model: GraphModel, ctx: Context, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                   seed: int, num_classes: int | None) -> None:
    """Fit a node classifier on the rows ``train_idx`` of ``ctx`` (early stopping on ``val_idx``).

    ``model`` supplies the structure (``_build_layers``) and the forward/backward pass
    (``_loss_and_grads`` on the training rows, ``_eval_logits``); its hyper-parameters ``lr``,
    ``epochs``, ``early_stopping``, ``patience``, ``monitor`` and ``restore_best`` drive the loop.
    Sets the fitted attributes ``params_``, ``n_features_in_``, ``n_classes_``, ``history_``
    (epoch, train_loss, train_acc, val_loss, val_acc; NaN validation numbers without validation rows),
    ``best_epoch_``, ``stopped_early_``, ``train_accuracy_`` and ``val_accuracy_`` (NaN without
    validation rows), both measured with the kept weights.
    """
    if train_idx.size == 0:
        raise ValueError("no training rows")
    labelled = y[y >= 0]
    c = int(num_classes) if num_classes is not None else int(labelled.max()) + 1
    if (y[train_idx] < 0).any() or (val_idx.size and (y[val_idx] < 0).any()):
        raise ValueError("train/val rows must all be labelled (label >= 0)")
    d = model._input_dim(ctx)
    stats = getattr(model, "feature_mean_", None)
    if stats is not None and stats.shape[0] != d:
        raise ValueError(f"feature statistics cover {stats.shape[0]} features but the input has {d}")
    rng = np.random.default_rng(seed)
    layers = model._build_layers(d, c)
    params: Params = {}
    for layer in layers:
        params.update(layer.init(rng))
    have_val = val_idx.size > 0
    y_train, y_val = y[train_idx], y[val_idx]

    def objective(p: Params) -> tuple[float, Params, np.ndarray]:
        return model._loss_and_grads(p, layers, ctx, y, train_idx, rng)

    def evaluate(p: Params, train_logits: np.ndarray) -> dict[str, float]:
        out = {"train_acc": accuracy(train_logits, y_train), "val_loss": float("nan"), "val_acc": float("nan")}
        if have_val:
            v_logits = model._eval_logits(p, layers, ctx, val_idx)
            out["val_loss"] = softmax_cross_entropy(v_logits, y_val)[0]
            out["val_acc"] = accuracy(v_logits, y_val)
        return out

    rule = stopping_rule(model.early_stopping, patience=model.patience, monitor=model.monitor,
                         restore_best=model.restore_best, have_val=have_val)
    fit = run(params, epochs=model.epochs, lr=model.lr, objective=objective, evaluate=evaluate,
              metrics=NODE_METRICS, rule=rule)
    model.params_ = {k: np.asarray(v, dtype=np.float64) for k, v in fit.params.items()}
    model.n_features_in_ = d
    model.n_classes_ = c
    model.history_ = fit.history
    model.best_epoch_ = fit.best_epoch
    model.stopped_early_ = fit.stopped
    model.train_accuracy_ = accuracy(model._eval_logits(model.params_, layers, ctx, train_idx), y_train)
    model.val_accuracy_ = (accuracy(model._eval_logits(model.params_, layers, ctx, val_idx), y_val)
                           if have_val else float("nan"))
