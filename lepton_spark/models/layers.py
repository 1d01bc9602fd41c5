"""Numpy layers with analytic backward passes, the loss, and the Adam optimiser.

Every layer is a small stateless object (its structure: dims, name); learned values live in a flat
``params`` dict (``"<layer>.W"``, ``"<layer>.b"``) owned by the model, so the same layer objects serve
training, inference, gradient checks and the weights artifact. ``forward`` returns ``(out, cache)`` and
``backward(params, cache, dout, grads, need_dx)`` accumulates parameter gradients into ``grads`` and
returns the gradient with respect to the layer input (or ``None`` when the input is data).

Graph layers read the propagation operators from a :class:`GraphOperators` (``P`` = GCN operator,
``M`` = mean operator, both already transposed so one round is ``P @ X``; see
:mod:`lepton_spark.models.normalize`). All training arithmetic is float64: the local path is the
reference the Spark path is checked against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lepton_spark.graph.functional import L2_EPS, l2_norms, relu
from lepton_spark.models.normalize import mean_propagation, sym_propagation

log = logging.getLogger(__name__)

Params = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------------
# graph operators
# --------------------------------------------------------------------------------------------------
@dataclass
class GraphOperators:
    """Propagation operators built lazily from the RAW adjacency (callers never pre-normalise)."""

    A: sp.spmatrix
    _cache: dict[str, sp.csr_matrix] = field(default_factory=dict, repr=False)

    def _get(self, key: str) -> sp.csr_matrix:
        if key not in self._cache:
            if key == "P":
                self._cache[key] = sym_propagation(self.A, self_loops=True)
            elif key == "M":
                self._cache[key] = mean_propagation(self.A)
            elif key in ("PT", "MT"):
                self._cache[key] = self._get(key[0]).T.tocsr()
            else:  # pragma: no cover - programming error
                raise KeyError(key)
        return self._cache[key]

    @property
    def P(self) -> sp.csr_matrix:
        """GCN propagation ``Â.T`` (one round = ``P @ X``)."""
        return self._get("P")

    @property
    def PT(self) -> sp.csr_matrix:
        return self._get("PT")

    @property
    def M(self) -> sp.csr_matrix:
        """Mean over in-neighbours (GraphSAGE-mean)."""
        return self._get("M")

    @property
    def MT(self) -> sp.csr_matrix:
        return self._get("MT")

    @property
    def num_nodes(self) -> int:
        return int(self.A.shape[0])


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot/Xavier uniform initialisation (Kipf & Welling's choice for every weight matrix)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def _matmul(x: Any, W: np.ndarray) -> np.ndarray:
    out = x @ W
    return np.asarray(out)


def _t_matmul(x: Any, dy: np.ndarray) -> np.ndarray:
    """``x.T @ dy`` for dense or sparse ``x`` as a dense ndarray."""
    return np.asarray(x.T @ dy)


def _add_grad(grads: Params, key: str, g: np.ndarray) -> None:
    if key in grads:
        grads[key] = grads[key] + g
    else:
        grads[key] = g


class Layer:
    """Base class: a named layer; subclasses set ``needs_graph`` when they propagate over edges."""

    needs_graph: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the learned arrays of this layer (empty for parameter-free layers)."""
        return {}

    def init(self, rng: np.random.Generator) -> Params:
        """Initial values for :meth:`param_shapes` (Glorot weights, zero biases)."""
        return {}

    def forward(self, params: Mapping[str, np.ndarray], x: Any, *, graph: GraphOperators | None,
                training: bool, rng: np.random.Generator | None) -> tuple[Any, Any]:
        raise NotImplementedError

    def backward(self, params: Mapping[str, np.ndarray], cache: Any, dout: Any, grads: Params,
                 need_dx: bool = True) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------------------------------
# parameter-free layers
# --------------------------------------------------------------------------------------------------
class Dropout(Layer):
    """Inverted dropout (scale kept units by 1/(1-rate)); identity at inference.

    Sparse inputs drop stored entries only (Kipf's ``sparse_dropout``): dropping a zero is a no-op, so
    this is the same distribution as dense dropout at a fraction of the cost. Lists of matrices
    (SIGN's hop blocks) get an independent mask per block.
    """

    def __init__(self, name: str, rate: float) -> None:
        super().__init__(name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)

    def _one(self, x: Any, rng: np.random.Generator) -> tuple[Any, Any]:
        keep = 1.0 - self.rate
        if sp.issparse(x):
            x = sp.csr_matrix(x, copy=True)
            mask = (rng.random(x.data.shape[0]) < keep) / keep
            x.data = x.data * mask
            x.eliminate_zeros()
            return x, None  # sparse inputs are data: no gradient needed
        mask = (rng.random(np.shape(x)) < keep) / keep
        return x * mask, mask

    def forward(self, params, x, *, graph, training, rng):
        if not training or self.rate == 0.0:
            return x, None
        if rng is None:
            raise ValueError("dropout in training mode needs an rng")
        if isinstance(x, list):
            outs = [self._one(xi, rng) for xi in x]
            return [o for o, _ in outs], [m for _, m in outs]
        return self._one(x, rng)

    def backward(self, params, cache, dout, grads, need_dx=True):
        if not need_dx:
            return None
        if cache is None:
            return dout
        if isinstance(dout, list):
            return [d if m is None else d * m for d, m in zip(dout, cache)]
        return dout * cache


class ReLU(Layer):
    """``max(x, 0)`` (:func:`lepton_spark.graph.functional.relu`)."""

    def forward(self, params, x, *, graph, training, rng):
        return relu(x), x > 0

    def backward(self, params, cache, dout, grads, need_dx=True):
        return dout * cache if need_dx else None


class L2Normalize(Layer):
    """Row L2 normalisation ``y = x / max(||x||, eps)`` (GraphSAGE's per-layer normalisation;
    :func:`lepton_spark.graph.functional.l2_normalize`, which the Spark path and the twin apply)."""

    eps = L2_EPS

    def forward(self, params, x, *, graph, training, rng):
        norm = l2_norms(x, self.eps)
        y = x / norm  # functional.l2_normalize, keeping the norms for the backward pass
        return y, (y, norm)

    def backward(self, params, cache, dout, grads, need_dx=True):
        if not need_dx:
            return None
        y, norm = cache
        # d(x/|x|) = (I - y y^T) / |x|
        return (dout - y * (dout * y).sum(axis=1, keepdims=True)) / norm


class PPRPropagation(Layer):
    """APPNP's personalised-PageRank propagation: ``Z_0 = H``, ``Z <- (1-α) P Z + α H`` for K rounds.

    Linear in ``H``, so the backward pass runs the adjoint recursion with ``P.T``.
    """

    needs_graph = True

    def __init__(self, name: str, rounds: int, alpha: float) -> None:
        super().__init__(name)
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.rounds, self.alpha = int(rounds), float(alpha)

    def forward(self, params, x, *, graph, training, rng):
        assert graph is not None
        z = x
        for _ in range(self.rounds):
            z = (1.0 - self.alpha) * (graph.P @ z) + self.alpha * x
        return z, graph

    def backward(self, params, cache, dout, grads, need_dx=True):
        if not need_dx:
            return None
        graph: GraphOperators = cache
        g = dout
        dh = np.zeros_like(dout)
        for _ in range(self.rounds):
            dh += self.alpha * g
            g = (1.0 - self.alpha) * (graph.PT @ g)
        return dh + g


# --------------------------------------------------------------------------------------------------
# layers with parameters
# --------------------------------------------------------------------------------------------------
class _Affine(Layer):
    """Shared parameters of the weight layers: ``W`` of shape (``_rows`` x d_in, d_out) and optional ``b``."""

    _rows = 1  # SageMean stacks the vertex and neighbour halves: 2 x d_in rows

    def __init__(self, name: str, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__(name)
        self.d_in, self.d_out, self.bias = int(d_in), int(d_out), bool(bias)

    @property
    def weight_first(self) -> bool:
        """Apply W before propagating when it shrinks the width (fewer numbers to move)."""
        return self.d_out < self.d_in

    def param_shapes(self):
        shapes = {f"{self.name}.W": (self._rows * self.d_in, self.d_out)}
        if self.bias:
            shapes[f"{self.name}.b"] = (self.d_out,)
        return shapes

    def init(self, rng):
        p = {f"{self.name}.W": glorot(rng, self._rows * self.d_in, self.d_out)}
        if self.bias:
            p[f"{self.name}.b"] = np.zeros(self.d_out)
        return p


class Dense(_Affine):
    """``y = x W + b``; ``x`` may be scipy-sparse (first layer on bag-of-words features)."""


    def forward(self, params, x, *, graph, training, rng):
        y = _matmul(x, params[f"{self.name}.W"])
        if self.bias:
            y = y + params[f"{self.name}.b"]
        return y, x

    def backward(self, params, cache, dout, grads, need_dx=True):
        x = cache
        _add_grad(grads, f"{self.name}.W", _t_matmul(x, dout))
        if self.bias:
            _add_grad(grads, f"{self.name}.b", dout.sum(axis=0))
        return dout @ params[f"{self.name}.W"].T if need_dx else None


class GraphConv(_Affine):
    """GCN layer ``y = Â x W + b`` (local form ``P @ x @ W``).

    The product is ordered like the Spark path: ``P @ (x W)`` when the layer shrinks the width
    (d_out < d_in, fewer numbers to propagate), ``(P @ x) @ W`` otherwise. Both orders give the same
    result up to rounding; both have analytic gradients.
    """

    needs_graph = True


    def forward(self, params, x, *, graph, training, rng):
        assert graph is not None
        W = params[f"{self.name}.W"]
        if self.weight_first:
            y = np.asarray(graph.P @ _matmul(x, W))
            cache = (x, None, graph)
        else:
            px = graph.P @ x
            y = _matmul(px, W)
            cache = (x, px, graph)
        if self.bias:
            y = y + params[f"{self.name}.b"]
        return y, cache

    def backward(self, params, cache, dout, grads, need_dx=True):
        x, px, graph = cache
        W = params[f"{self.name}.W"]
        if self.bias:
            _add_grad(grads, f"{self.name}.b", dout.sum(axis=0))
        if px is None:
            d_xw = np.asarray(graph.PT @ dout)  # gradient wrt x W
            _add_grad(grads, f"{self.name}.W", _t_matmul(x, d_xw))
            return d_xw @ W.T if need_dx else None
        _add_grad(grads, f"{self.name}.W", _t_matmul(px, dout))
        return np.asarray(graph.PT @ (dout @ W.T)) if need_dx else None


class SageMean(_Affine):
    """GraphSAGE-mean layer ``y = [x_v ‖ mean_{u->v} x_u] W + b`` with ``W`` of shape (2 d_in, d_out).

    Rows ``W[:d_in]`` act on the vertex itself, ``W[d_in:]`` on the neighbour mean ``M x``. Like
    :class:`GraphConv`, the neighbour half is propagated after the matmul when d_out < d_in.
    """

    needs_graph = True
    _rows = 2

    def forward(self, params, x, *, graph, training, rng):
        assert graph is not None
        W = params[f"{self.name}.W"]
        Ws, Wn = W[: self.d_in], W[self.d_in :]
        if self.weight_first:
            y = _matmul(x, Ws) + np.asarray(graph.M @ _matmul(x, Wn))
            cache = (x, None, graph)
        else:
            mx = graph.M @ x
            y = _matmul(x, Ws) + _matmul(mx, Wn)
            cache = (x, mx, graph)
        if self.bias:
            y = y + params[f"{self.name}.b"]
        return y, cache

    def backward(self, params, cache, dout, grads, need_dx=True):
        x, mx, graph = cache
        W = params[f"{self.name}.W"]
        Ws, Wn = W[: self.d_in], W[self.d_in :]
        if self.bias:
            _add_grad(grads, f"{self.name}.b", dout.sum(axis=0))
        d_mx_w = np.asarray(graph.MT @ dout)  # gradient wrt (x Wn) before the mean
        dWs = _t_matmul(x, dout)
        dWn = _t_matmul(x, d_mx_w) if mx is None else _t_matmul(mx, dout)
        _add_grad(grads, f"{self.name}.W", np.vstack([dWs, dWn]))
        if not need_dx:
            return None
        return dout @ Ws.T + d_mx_w @ Wn.T


class HopLinear(Layer):
    """SIGN's inception layer: ``y = [X_0 W_0 + b_0 ‖ X_1 W_1 + b_1 ‖ … ‖ X_r W_r + b_r]``.

    The input is the list of precomputed hop matrices ``X_h = Â^h X``; one weight block per hop.
    """

    def __init__(self, name: str, d_in: int, hops: int, d_out: int, bias: bool = True) -> None:
        super().__init__(name)
        self.d_in, self.hops, self.d_out, self.bias = int(d_in), int(hops), int(d_out), bool(bias)

    def param_shapes(self):
        shapes: dict[str, tuple[int, ...]] = {}
        for h in range(self.hops + 1):
            shapes[f"{self.name}.W{h}"] = (self.d_in, self.d_out)
        if self.bias:
            shapes[f"{self.name}.b"] = ((self.hops + 1) * self.d_out,)
        return shapes

    def init(self, rng):
        p = {f"{self.name}.W{h}": glorot(rng, self.d_in, self.d_out) for h in range(self.hops + 1)}
        if self.bias:
            p[f"{self.name}.b"] = np.zeros((self.hops + 1) * self.d_out)
        return p

    def forward(self, params, x, *, graph, training, rng):
        if not isinstance(x, Sequence) or len(x) != self.hops + 1:
            raise ValueError(f"{self.name}: expected a list of {self.hops + 1} hop matrices")
        y = np.hstack([_matmul(xh, params[f"{self.name}.W{h}"]) for h, xh in enumerate(x)])
        if self.bias:
            y = y + params[f"{self.name}.b"]
        return y, list(x)

    def backward(self, params, cache, dout, grads, need_dx=True):
        xs = cache
        if self.bias:
            _add_grad(grads, f"{self.name}.b", dout.sum(axis=0))
        dxs = []
        for h, xh in enumerate(xs):
            dblock = dout[:, h * self.d_out : (h + 1) * self.d_out]
            W = params[f"{self.name}.W{h}"]
            _add_grad(grads, f"{self.name}.W{h}", _t_matmul(xh, dblock))
            if need_dx:
                dxs.append(dblock @ W.T)
        return dxs if need_dx else None


# --------------------------------------------------------------------------------------------------
# loss and optimiser
# --------------------------------------------------------------------------------------------------
def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the given rows and its gradient wrt ``logits``."""
    n = logits.shape[0]
    if n == 0:
        raise ValueError("softmax_cross_entropy: no labelled rows")
    # computed class-major, (c, n): numpy's reductions along a short trailing axis (max and sum over
    # 10 classes for each of 50k rows) ran ~20x slower than the same reductions down the rows, and one
    # exp serves the loss and the gradient (7.3 -> 1.9 ms a call at 50k x 10; 200 calls a 100-epoch fit)
    zt = np.array(np.asarray(logits, dtype=np.float64).T, order="C")
    zt -= np.maximum.reduce(zt, axis=0)
    e = np.exp(zt)
    s = np.add.reduce(e, axis=0)
    idx = np.arange(n)
    loss = float(np.mean(np.log(s) - zt[y, idx]))
    e *= 1.0 / (n * s)
    e[y, idx] -= 1.0 / n
    return loss, e.T


def l2_penalty(params: Mapping[str, np.ndarray], names: Sequence[str], weight_decay: float,
               grads: Params | None = None) -> float:
    """``weight_decay/2 * sum ||W||²`` over ``names`` (Kipf's ``wd * tf.nn.l2_loss``, the same as
    PyTorch's Adam ``weight_decay``); adds ``weight_decay * W`` to ``grads`` when given."""
    if weight_decay == 0.0:
        return 0.0
    total = 0.0
    for name in names:
        w = params[name]
        total += 0.5 * weight_decay * float((w * w).sum())
        if grads is not None:
            _add_grad(grads, name, weight_decay * w)
    return total


class Adam:
    """Adam (Kingma & Ba 2015); state is per parameter name.

    Two update forms that differ only in where ``eps`` enters (the same for ``eps`` = 0):

    * default, PyTorch's form (Algorithm 1 of the paper): ``w -= lr * m_hat / (sqrt(v_hat) + eps)``
      with ``m_hat = m / (1 - beta1^t)``, ``v_hat = v / (1 - beta2^t)``;
    * ``epsilon_hat=True``, TensorFlow 1's ``tf.train.AdamOptimizer`` (the formula before section 2.1
      of the paper, ``eps`` = "epsilon hat"): ``lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``,
      ``w -= lr_t * m / (sqrt(v) + eps)`` -- in the first form that is an effective
      ``eps / sqrt(1 - beta2^t)`` (3.2e-7 at step 1, 2.3e-8 at step 200 for ``eps`` 1e-8), which
      matters only for gradients that small.
    """

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 epsilon_hat: bool = False) -> None:
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.epsilon_hat = bool(epsilon_hat)
        self.t = 0
        self.m: Params = {}
        self.v: Params = {}

    def step(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        """Update ``params`` in place (new arrays per key) from ``grads``."""
        self.t += 1
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        for name, g in grads.items():
            if name not in self.m:
                self.m[name] = np.zeros_like(g)
                self.v[name] = np.zeros_like(g)
            self.m[name] = self.beta1 * self.m[name] + (1.0 - self.beta1) * g
            self.v[name] = self.beta2 * self.v[name] + (1.0 - self.beta2) * (g * g)
            if self.epsilon_hat:
                lr_t = self.lr * np.sqrt(c2) / c1
                params[name] = params[name] - lr_t * self.m[name] / (np.sqrt(self.v[name]) + self.eps)
                continue
            mhat = self.m[name] / c1
            vhat = self.v[name] / c2
            params[name] = params[name] - self.lr * mhat / (np.sqrt(vhat) + self.eps)
