"""Row-wise numpy functions shared by the local models, the float32 twin and the Spark primitives.

One definition each of what a dense step applies after its matmul and what training measures:

* the activations (:data:`ACTIVATIONS`, dispatched by :func:`activate`): ``identity``, :func:`relu`,
  :func:`softmax`, :func:`log_softmax` and :func:`l2_normalize`;
* :func:`accuracy` of class scores against labels.

Callers: :func:`lepton_spark.graph.dense.apply_dense` (Spark, per Arrow batch, in float64), the
float32 numpy twin ``lepton_spark.models.plan.LocalOps.dense``, the local reference models
(``models.layers.L2Normalize``, ``GraphModel.forward_local``) and the training loop
(:mod:`lepton_spark.models.loop`, :mod:`lepton_spark.models.trainer`,
:mod:`lepton_spark.models.precompute`). Each function works on a ``(rows, d)`` matrix, row by row,
and keeps the input's float dtype, so the twin computes in float32 what Spark stores as
``array<float>`` and the driver in float64.

It lives in the graph layer (pure numpy, no Spark) because the engine's ``apply_dense`` needs it
and dependencies point from ``models`` to ``graph``, never back (docs/architecture.md §1).

**L2 normalisation** is ``x / max(||x||_2, eps)`` with ``eps = 1e-12`` (PyTorch's ``F.normalize``,
GraphSAGE's per-layer normalisation): a zero row stays zero, and a row with norm below ``eps`` is
divided by ``eps`` rather than blown up to unit length. It is the function the model is trained
with (``L2Normalize``), so the Spark path and the twin apply it exactly so (the twin used to divide
by the bare norm, which differs from the trained model for norms in ``(0, eps)``).
"""

from __future__ import annotations

import numpy as np

#: the activations :func:`activate` (and so ``apply_dense`` and ``Ops.dense``) accept
ACTIVATIONS = ("identity", "relu", "softmax", "l2", "log_softmax")
#: the floor of the row norm in :func:`l2_normalize`
L2_EPS = 1e-12


def relu(z: np.ndarray) -> np.ndarray:
    """``max(z, 0)`` element-wise.

    >>> relu(np.array([[-1.0, 0.0, 2.5]]))
    array([[0. , 0. , 2.5]])
    """
    return np.maximum(z, 0.0)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax, numerically stable (the row maximum is subtracted first).

    >>> softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row log-softmax, numerically stable (``log(softmax(z))`` without its underflow)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def l2_norms(z: np.ndarray, eps: float = L2_EPS) -> np.ndarray:
    """The row norms ``max(||z_i||_2, eps)`` as a ``(rows, 1)`` column (what :func:`l2_normalize`
    divides by; ``L2Normalize`` keeps it for its backward pass)."""
    return np.maximum(np.sqrt((z * z).sum(axis=1, keepdims=True)), eps)


def l2_normalize(z: np.ndarray, eps: float = L2_EPS) -> np.ndarray:
    """Row L2 normalisation ``z_i / max(||z_i||_2, eps)`` (see the module docstring).

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    return z / l2_norms(z, eps)


def check_activation(activation: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``activation`` is one of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")


def activate(z: np.ndarray, activation: str) -> np.ndarray:
    """Apply the named row-wise activation (one of :data:`ACTIVATIONS`) to a float matrix."""
    if activation == "identity":
        return z
    if activation == "relu":
        return relu(z)
    if activation == "softmax":
        return softmax(z)
    if activation == "log_softmax":
        return log_softmax(z)
    if activation == "l2":
        return l2_normalize(z)
    check_activation(activation)
    raise AssertionError(activation)  # pragma: no cover - check_activation raised


def accuracy(scores: np.ndarray, y: np.ndarray) -> float | None:
    """Share of rows whose highest score (logit or probability) is at the row's label; ``None`` for
    no rows (an accuracy over nothing is undefined, not 0).

    >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1]))
    0.6666666666666666
    """
    y = np.asarray(y)
    return float(np.mean(np.argmax(scores, axis=1) == y)) if y.size else None
