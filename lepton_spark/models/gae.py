"""Graph auto-encoders for link prediction (Kipf & Welling, "Variational Graph Auto-Encoders", 2016).

``GAE``: a GCN encoder ``Z = Â ReLU(Â X W0) W1`` (32 -> 16 by default, no bias) and the inner-product
decoder ``p(u ~ v) = sigmoid(z_u . z_v)``. With ``variational=True`` (VGAE) the second layer outputs
``[mu | log sigma]`` (``W1`` is the two weight matrices side by side), training decodes
``Z = mu + eps * exp(log sigma)`` and adds the KL term, and the embedding is ``mu``.

Training (:meth:`GAE.fit`) follows the reference implementation (tkipf/gae) on the driver:

* the undirected pairs are split 85/5/10 with sampled negatives (:func:`lepton_spark.links.split
  .split_edges`, seeded); the encoder propagates over the TRAINING graph only (held-out pairs
  removed in both directions) with ``Â = D^-1/2 (A_train + I) D^-1/2``; ``A_train`` keeps the
  input's self-loops (a vertex with one gets 2 on the diagonal of ``A_train + I``), whereas the
  reference deletes the diagonal before splitting (``train.py``, ``mask_test_edges``): to match it,
  give a graph without self-loops (the ingest's default ``self_loops: drop``; ``bench/accuracy.py``
  removes Citeseer's 124);
* the target is ``A_label = binary(A_train) + I``; the loss is the reference's weighted binary
  cross-entropy over ALL ``n^2`` entries of ``Z Z^T``:
  ``norm * mean_ij [pos_weight * y_ij * softplus(-s_ij) + (1 - y_ij) * softplus(s_ij)]`` with
  ``pos_weight = (n^2 - E) / E`` and ``norm = n^2 / (2 (n^2 - E))``, ``E`` = stored entries of the
  binary training adjacency (each undirected pair twice, no diagonal);
* full-batch Adam, lr 0.01, 200 epochs, no dropout, no weight decay, Glorot initialisation, no
  early stopping; the model after the last epoch is kept. Adam takes TensorFlow 1's update form
  (``eps`` 1e-8 added to ``sqrt(v)`` before the bias correction, :class:`~lepton_spark.models.layers.Adam`
  ``epsilon_hat``) as the reference's ``tf.train.AdamOptimizer`` does; the other models keep the default form.

The exact loss costs ``O(n^2 d)`` time per epoch (computed in row blocks, so memory stays
``O(n * block)``). Above ``full_max_nodes`` vertices (``loss="auto"``) an unbiased estimate replaces
it: every positive entry plus ``neg_ratio`` times as many entries drawn uniformly from the ``n^2``
(positives among them dropped), the negatives' sum scaled by ``n^2 / draws`` -- ``O(E d)`` per epoch.

Validation AUC/AP are recorded every epoch (from the epoch's forward pass, i.e. before its update);
the reported ``val_*``/``test_*`` metrics are computed once after training. Scores are
``sigmoid(z_u . z_v)`` of the embeddings on the training graph.

On Spark the encoder runs through the same propagation plan as the other models (``forward_spark``
returns ``(id, embedding)``); the decoder runs in :mod:`lepton_spark.links`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from lepton_spark.links.metrics import average_precision, roc_auc
from lepton_spark.links.split import EdgeSplit, split_edges
from lepton_spark.models.base import Context, GraphModel, json_clean
from lepton_spark.models.layers import (
    Dense,
    Dropout,
    GraphConv,
    GraphOperators,
    Layer,
    Params,
    ReLU,
    glorot,
    l2_penalty,
)
from lepton_spark.models.loop import LINK_MONITOR, Patience, StoppingRule, run
from lepton_spark.models.normalize import sym_propagation
from lepton_spark.models.plan import LocalForward, LocalOps, Ops, SparkOps

log = logging.getLogger(__name__)

LOSSES = ("auto", "full", "sampled")
ENCODERS = ("gcn", "sgc")
#: entries of ``Z Z^T`` computed at once by the exact loss (32 MiB of float64 per temporary)
BLOCK_ENTRIES = 1 << 22


# --------------------------------------------------------------------------------------------------
# decoder and losses (pure functions of the embedding; tested against finite differences)
# --------------------------------------------------------------------------------------------------
def _softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow (float64)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def pair_logits(Z: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Inner products ``z_u . z_v`` for pairs (m, 2) (float64)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return np.einsum("ij,ij->i", Z[pairs[:, 0]], Z[pairs[:, 1]])


def score_pairs(Z: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The decoder: ``sigmoid(z_u . z_v)`` for pairs (m, 2)."""
    return sigmoid(pair_logits(np.asarray(Z, dtype=np.float64), pairs))


def link_metrics(Z: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision of the decoder's scores on positive vs negative pairs."""
    scores = np.concatenate([score_pairs(Z, pos), score_pairs(Z, neg)])
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return roc_auc(labels, scores), average_precision(labels, scores)


@dataclass
class ReconTarget:
    """The reconstruction target of one training graph: the positive entries of
    ``A_label = binary(A_train) + I`` (both directions and the diagonal, sorted codes ``i * n + j``)
    and the reference's ``pos_weight`` and ``norm``."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    codes: np.ndarray
    pos_weight: float
    norm: float

    @classmethod
    def from_pairs(cls, train_pairs: np.ndarray, n: int) -> ReconTarget:
        """Target of the undirected training pairs ``(u, v)``, ``u < v``, of an ``n``-vertex graph."""
        p = np.asarray(train_pairs, dtype=np.int64).reshape(-1, 2)
        diag = np.arange(n, dtype=np.int64)
        rows = np.concatenate([p[:, 0], p[:, 1], diag])
        cols = np.concatenate([p[:, 1], p[:, 0], diag])
        codes = rows * n + cols
        order = np.argsort(codes)
        e = 2 * p.shape[0]  # adj.sum() of the binary symmetric training adjacency (no diagonal)
        nn = float(n) * float(n)
        if e == 0:
            raise ValueError("no training edges: the reconstruction loss needs at least one")
        return cls(n, rows[order], cols[order], codes[order], (nn - e) / e, nn / ((nn - e) * 2.0))


def _scatter_grad(Z: np.ndarray, rows: np.ndarray, cols: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(G + G^T) Z`` for the sparse ``G`` with entries ``g`` at ``(rows, cols)`` (duplicates summed)."""
    n = Z.shape[0]
    G = sp.csr_matrix((g, (rows, cols)), shape=(n, n))
    return np.asarray(G @ Z) + np.asarray(G.T @ Z)


def recon_loss_full(Z: np.ndarray, target: ReconTarget) -> tuple[float, np.ndarray]:
    """The reference's weighted BCE over all ``n^2`` entries of ``Z Z^T`` and its gradient wrt ``Z``.

    Every entry is first counted as a negative (``softplus(s)``, gradient ``sigmoid(s)``, dense, in row
    blocks of :data:`BLOCK_ENTRIES` entries); the positive entries are then corrected sparsely to
    ``pos_weight * softplus(-s)`` (gradient ``-pos_weight * (1 - sigmoid(s))``).
    """
    n, _ = Z.shape
    c = target.norm / (float(n) * float(n))
    loss = 0.0
    dZ = np.zeros_like(Z)
    step = max(1, BLOCK_ENTRIES // max(n, 1))
    for r0 in range(0, n, step):
        S = Z[r0 : r0 + step] @ Z.T
        e = np.exp(-np.abs(S))
        loss += float((np.maximum(S, 0.0) + np.log1p(e)).sum())
        sig = np.where(S >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        dZ[r0 : r0 + step] += 2.0 * (sig @ Z)  # sigmoid(Z Z^T) is symmetric: (G + G^T) Z = 2 G Z
    s = np.einsum("ij,ij->i", Z[target.rows], Z[target.cols])
    sig = sigmoid(s)
    loss += float((target.pos_weight * _softplus(-s) - _softplus(s)).sum())
    dZ += _scatter_grad(Z, target.rows, target.cols, -target.pos_weight * (1.0 - sig) - sig)
    return c * loss, c * dZ


def recon_loss_sampled(Z: np.ndarray, target: ReconTarget, rng: np.random.Generator,
                       neg_ratio: float) -> tuple[float, np.ndarray]:
    """Unbiased estimate of :func:`recon_loss_full` and its gradient: every positive entry exactly,
    the negative entries from ``m = ceil(neg_ratio * positives)`` uniform draws over the ``n^2``
    entries (drawn positives dropped), their sum scaled by ``n^2 / m``."""
    n, _ = Z.shape
    nn = float(n) * float(n)
    c = target.norm / nn
    m = max(1, int(np.ceil(neg_ratio * target.rows.size)))
    i = rng.integers(0, n, size=m, dtype=np.int64)
    j = rng.integers(0, n, size=m, dtype=np.int64)
    codes = i * n + j
    at = np.minimum(np.searchsorted(target.codes, codes), target.codes.size - 1)
    keep = target.codes[at] != codes  # not a positive entry (codes are sorted: binary search)
    i, j = i[keep], j[keep]
    s_pos = np.einsum("ij,ij->i", Z[target.rows], Z[target.cols])
    s_neg = np.einsum("ij,ij->i", Z[i], Z[j])
    scale = nn / m
    loss = target.pos_weight * float(_softplus(-s_pos).sum()) + scale * float(_softplus(s_neg).sum())
    rows = np.concatenate([target.rows, i])
    cols = np.concatenate([target.cols, j])
    g = np.concatenate([-target.pos_weight * (1.0 - sigmoid(s_pos)), scale * sigmoid(s_neg)])
    return c * loss, c * _scatter_grad(Z, rows, cols, g)


def recon_loss_pairs(Z: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray]:
    """Balanced pair loss ``(mean_pos softplus(-s) + mean_neg softplus(s)) / 2`` over ordered index
    pairs (rows of ``Z``) and its gradient: what the reference's weighted loss reduces to when the
    positives are the edges and the negatives uniform pairs (``norm * pos_weight = 1 / 2E``,
    ``norm ~ 1/2``), used by the large-graph path on sampled pairs."""
    pos = np.asarray(pos, dtype=np.int64).reshape(-1, 2)
    neg = np.asarray(neg, dtype=np.int64).reshape(-1, 2)
    if not pos.size or not neg.size:
        raise ValueError("the pair loss needs positive and negative pairs")
    s_pos = np.einsum("ij,ij->i", Z[pos[:, 0]], Z[pos[:, 1]])
    s_neg = np.einsum("ij,ij->i", Z[neg[:, 0]], Z[neg[:, 1]])
    loss = 0.5 * (float(_softplus(-s_pos).mean()) + float(_softplus(s_neg).mean()))
    g = np.concatenate([-0.5 * (1.0 - sigmoid(s_pos)) / len(pos), 0.5 * sigmoid(s_neg) / len(neg)])
    rows = np.concatenate([pos[:, 0], neg[:, 0]])
    cols = np.concatenate([pos[:, 1], neg[:, 1]])
    # d s_ij / d z_i = z_j, d s_ij / d z_j = z_i: (G + G^T) Z with G holding each pair once
    return loss, _scatter_grad(Z, rows, cols, g)


def kl_term(mu: np.ndarray, logstd: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """VGAE's ``-KL`` contribution to the cost (the reference subtracts
    ``(0.5 / n) * mean_i sum_j (1 + 2 log s - mu^2 - s^2)``) and its gradients wrt ``mu``, ``log s``."""
    n = mu.shape[0]
    nn = float(n) * float(n)
    s2 = np.exp(2.0 * logstd)
    kl = 0.5 / nn * float((1.0 + 2.0 * logstd - mu * mu - s2).sum())
    return -kl, mu / nn, (s2 - 1.0) / nn


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
def _dims(hidden: int | Sequence[int]) -> tuple[int, ...]:
    dims = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    if not dims or any(h <= 0 for h in dims):
        raise ValueError(f"hidden sizes must be positive (the last is the embedding), got {dims}")
    return dims


class GAE(GraphModel):
    """Graph auto-encoder (``variational=False``) or VGAE (``True``) for link prediction.

    A *link model*: ``task == "link"``, no classes (``n_classes_ == 0``), labels are not used. The
    output of every forward pass is the embedding ``Z`` (n, ``hidden[-1]``); the decoder is
    ``sigmoid(z_u . z_v)`` (:func:`score_pairs`). Defaults are the paper's: hidden (32, 16), lr 0.01,
    200 epochs, no dropout, no weight decay, no early stopping, features used as given
    (``feature_norm="none"``, as the reference code feeds the raw bag-of-words), 85/5/10 edge split.

    ``encoder``: ``gcn`` (the paper's: a propagation round inside every layer) or ``sgc`` (``K``
    parameter-free rounds ``S^K X`` first, then the same widths as dense layers -- the encoder the
    large-graph path trains from Spark-propagated features, :mod:`lepton_spark.links.large`).
    ``loss``: ``full`` (exact, O(n^2 d) per epoch), ``sampled`` (unbiased estimate, O(E d)) or ``auto``
    (full up to ``full_max_nodes`` vertices). ``early_stopping``: ``none`` or ``patience`` (stop after
    ``patience`` epochs without a better validation AUC + AP, keep the best weights).
    ``max_train_pairs``/``max_eval_pairs``: pair samples of the large-graph path.

    Fitted attributes besides the base class's: ``split_`` (the :class:`EdgeSplit`; None on the
    large-graph path), ``history_`` (epoch, train_loss, val_auc, val_ap), ``link_metrics_`` (val/test
    AUC and AP), ``loss_mode_``.
    """

    model_type = "gae"
    task: ClassVar[str] = "link"

    def __init__(self, *, hidden: int | Sequence[int] = (32, 16), variational: bool = False, encoder: str = "gcn",
                 K: int = 2, dropout: float = 0.0, feature_norm: str = "none", lr: float = 0.01,
                 weight_decay: float = 0.0, epochs: int = 200, early_stopping: str = "none", patience: int = 50,
                 val_frac: float = 0.05, test_frac: float = 0.10, loss: str = "auto", full_max_nodes: int = 10_000,
                 neg_ratio: float = 5.0, max_train_pairs: int = 200_000, max_eval_pairs: int = 20_000) -> None:
        super().__init__(feature_norm=feature_norm, lr=lr, weight_decay=weight_decay, weight_decay_on="weights",
                         epochs=epochs, early_stopping="none", patience=patience)
        if early_stopping not in ("none", "patience"):
            raise ValueError(f"early_stopping must be 'none' or 'patience' for gae, got {early_stopping!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if K < 0:
            raise ValueError(f"K must be >= 0, got {K}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if neg_ratio <= 0:
            raise ValueError(f"neg_ratio must be > 0, got {neg_ratio}")
        if full_max_nodes < 0:
            raise ValueError(f"full_max_nodes must be >= 0, got {full_max_nodes}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if max_train_pairs < 1 or max_eval_pairs < 1:
            raise ValueError("max_train_pairs and max_eval_pairs must be >= 1")
        self.early_stopping = early_stopping
        self.hidden = _dims(hidden)
        self.variational = bool(variational)
        self.encoder = encoder
        self.K = int(K)
        self.dropout = float(dropout)
        self.val_frac = float(val_frac)
        self.test_frac = float(test_frac)
        self.loss = loss
        self.full_max_nodes = int(full_max_nodes)
        self.neg_ratio = float(neg_ratio)
        self.max_train_pairs = int(max_train_pairs)
        self.max_eval_pairs = int(max_eval_pairs)
        self._hidden_at = 3 * len(self.hidden) - 2  # the last weight layer

    @classmethod
    def _param_names(cls) -> list[str]:
        """Only this class's own hyper-parameters (no classification-only ones such as ``monitor``)."""
        import inspect

        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind == p.KEYWORD_ONLY]

    # structure ------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.hidden[-1]

    def _build_layers(self, d: int, c: int) -> list[Layer]:
        """``[dropout -> W -> ReLU] * (len(hidden) - 1)``, dropout, W to the embedding (twice as wide
        for VGAE: ``[mu | log sigma]``); ``W`` is a GraphConv (``gcn``) or Dense (``sgc``), no bias.
        ``c`` (classes) is ignored."""
        dims = (d, *self.hidden)
        layer = GraphConv if self.encoder == "gcn" else Dense
        layers: list[Layer] = []
        for i in range(len(dims) - 1):
            out = dims[i + 1] * (2 if self.variational and i == len(dims) - 2 else 1)
            layers.append(Dropout(f"drop{i}", self.dropout))
            layers.append(layer(f"gc{i}", dims[i], out, bias=False))
            if i < len(dims) - 2:
                layers.append(ReLU(f"relu{i}"))
        return layers

    def _weight_layers(self) -> list[Any]:
        return [lay for lay in self.layers() if isinstance(lay, GraphConv | Dense)]

    def _init_params(self, layers: list[Layer], rng: np.random.Generator) -> Params:
        params: Params = {}
        for layer in layers:
            params.update(layer.init(rng))
        if self.variational:  # mu and log sigma weights initialised as two Glorot matrices
            last = [lay for lay in layers if isinstance(lay, GraphConv | Dense)][-1]
            h = self.embedding_dim
            params[f"{last.name}.W"] = np.hstack([glorot(rng, last.d_in, h), glorot(rng, last.d_in, h)])
        return params

    def _embedding(self, out: np.ndarray) -> np.ndarray:
        """The embedding from the last layer's output (VGAE: the ``mu`` half)."""
        return out[:, : self.embedding_dim] if self.variational else out

    def _context(self, A: Any, X: Any) -> Context:
        """The encoder's input for the RAW graph ``(A, X)``: normalised features and the GCN operator
        (``gcn``), or the per-row ``S^K X̃`` (``sgc``)."""
        x = self._normalized(X)
        if self.encoder == "gcn":
            return Context(x, GraphOperators(A))
        P = sym_propagation(A)
        for _ in range(self.K):
            x = P @ x
        return Context(sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x, dtype=np.float64), None)

    def row_inputs(self, A: Any, X: Any) -> Any:
        """The per-row encoder input ``S^K X̃`` of the ``sgc`` encoder (what the large-graph path
        computes on Spark); resolves ``feature_norm`` on ``X`` when unfitted."""
        if self.encoder != "sgc":
            raise TypeError("only the sgc encoder has per-row inputs")
        self._check_graph(A, X)
        self._resolve_unless_fitted(X)
        return self._context(A, X).x

    # training -------------------------------------------------------------------------------------
    def _objective(self, params: Mapping[str, np.ndarray], layers: list[Layer], ctx: Context,
                   target: ReconTarget | tuple[np.ndarray, np.ndarray], rng: np.random.Generator, mode: str,
                   training: bool = True, noise: np.ndarray | None = None) -> tuple[float, Params, np.ndarray]:
        """Cost (reconstruction [+ VGAE's -KL] + L2) and its gradient; also returns the embedding.

        ``mode`` full | sampled (``target`` a :class:`ReconTarget`) or pairs (``target`` = positive and
        negative index pairs). ``noise`` fixes VGAE's ``eps`` (gradient checks); by default it is drawn
        from ``rng``.
        """
        out, _, caches = self._run(params, layers, ctx, training=training, rng=rng)
        out = np.asarray(out, dtype=np.float64)
        h = self.embedding_dim
        if self.variational:
            mu, logstd = out[:, :h], out[:, h:]
            eps = rng.standard_normal(mu.shape) if noise is None else noise
            Z = mu + eps * np.exp(logstd)
        else:
            Z = out
        if mode == "full":
            assert isinstance(target, ReconTarget)
            loss, dZ = recon_loss_full(Z, target)
        elif mode == "sampled":
            assert isinstance(target, ReconTarget)
            loss, dZ = recon_loss_sampled(Z, target, rng, self.neg_ratio)
        else:
            assert isinstance(target, tuple)
            loss, dZ = recon_loss_pairs(Z, *target)
        if self.variational:
            kl, dmu, dls = kl_term(mu, logstd)
            loss += kl
            dout = np.hstack([dZ + dmu, dZ * eps * np.exp(logstd) + dls])
        else:
            dout = dZ
        grads = self._backward(params, layers, caches, dout)
        loss += l2_penalty(params, self._decay_names(layers), self.weight_decay, grads)
        return loss, grads, self._embedding(out)

    def loss_mode(self, n: int) -> str:
        """``full`` or ``sampled`` for a graph of ``n`` vertices (resolves ``loss="auto"``)."""
        if self.loss != "auto":
            return self.loss
        return "full" if n <= self.full_max_nodes else "sampled"

    def fit(self, A: Any, X: Any, y: np.ndarray | None = None, train_mask: np.ndarray | None = None,
            val_mask: np.ndarray | None = None, seed: int = 0, *, num_classes: int | None = None,
            split: EdgeSplit | None = None) -> GAE:
        """Train on the raw graph ``A`` (scipy sparse, ``A[u, v]`` = weight of ``u -> v``) and raw
        features ``X``. ``y``, the masks and ``num_classes`` are ignored (a link model learns from the
        edges); the edge split is made from ``A`` with ``seed`` unless ``split`` is given."""
        t0 = time.perf_counter()
        self._check_graph(A, X)
        n = int(A.shape[0])
        if split is None:
            split = split_edges(A, val_frac=self.val_frac, test_frac=self.test_frac, seed=seed)
        elif split.num_nodes != n:
            raise ValueError(f"the edge split is for {split.num_nodes} vertices, the graph has {n}")
        self.resolve_feature_norm(X)
        ctx = self._context(split.train_adjacency(A), X)
        mode = self.loss_mode(n)
        self._train(ctx, int(X.shape[1]), ReconTarget.from_pairs(split.train, n), mode, seed,
                    {"val": (split.val, split.val_neg), "test": (split.test, split.test_neg)})
        self.split_ = split
        log.info("%s fitted in %.2fs (%d epochs, %s loss): val AUC %.4f AP %.4f, test AUC %.4f AP %.4f",
                 self.model_type, time.perf_counter() - t0, len(self.history_["epoch"]), mode,
                 *(self.link_metrics_[k] for k in ("val_auc", "val_ap", "test_auc", "test_ap")))
        return self

    def fit_pairs(self, Z: Any, train_pos: np.ndarray, neg_pool: np.ndarray, *, val: tuple[np.ndarray, np.ndarray],
                  test: tuple[np.ndarray, np.ndarray], seed: int = 0) -> GAE:
        """Large-graph training (``sgc`` encoder) on collected rows: ``Z`` holds the per-row inputs
        ``S^K X̃`` (already normalised, as :meth:`row_inputs` or the Spark path computes them) of the
        vertices that appear in the pairs; pairs are (m, 2) row indices into ``Z``.

        Every epoch uses all ``train_pos`` pairs (both orders) and ``neg_ratio`` times as many
        negatives drawn uniformly from ``neg_pool`` x ``neg_pool`` (rows of uniformly sampled
        vertices; in a sparse graph a uniform pair is an edge with probability ~ E / n^2, which is
        ignored), with the balanced loss :func:`recon_loss_pairs`. ``val``/``test`` are (positive,
        negative) pair arrays for the metrics.
        """
        if self.encoder != "sgc":
            raise TypeError("fit_pairs trains the sgc encoder (per-row inputs); this model's encoder is "
                            f"{self.encoder!r}")
        if getattr(self, "feature_norm_", None) is None:
            raise RuntimeError("fit_pairs: feature_norm is not resolved (compute Z with row_inputs or the "
                               "Spark path)")
        pos = np.asarray(train_pos, dtype=np.int64).reshape(-1, 2)
        pool = np.asarray(neg_pool, dtype=np.int64).reshape(-1)
        if not pos.size or pool.size < 2:
            raise ValueError("fit_pairs needs training pairs and at least two negative-pool rows")
        both = np.vstack([pos, pos[:, ::-1]])
        z = sp.csr_matrix(Z, dtype=np.float64) if sp.issparse(Z) else np.asarray(Z, dtype=np.float64)
        self._train(Context(z, None), int(z.shape[1]), (both, pool), "pairs", seed, {"val": val, "test": test})
        self.split_ = None
        return self

    def _train(self, ctx: Context, d: int, target: Any, mode: str, seed: int,
               evals: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Train with the shared loop (:func:`lepton_spark.models.loop.run`) for :meth:`fit` and
        :meth:`fit_pairs` (``target``: a :class:`ReconTarget`, or for ``pairs`` the positive pairs and the
        negative pool). Each epoch's validation AUC/AP are those of the embedding it trained on (before
        its update); ``early_stopping="patience"`` keeps the weights with the best AUC + AP."""
        rng = np.random.default_rng(seed)
        layers = self._build_layers(d, 0)
        params = self._init_params(layers, rng)
        vpos, vneg = evals["val"]
        have_val = len(vpos) > 0 and len(vneg) > 0

        def objective(p: Params) -> tuple[float, Params, np.ndarray]:
            if mode == "pairs":
                pos, pool = target
                m = max(1, int(np.ceil(self.neg_ratio * len(pos))))
                neg = np.stack([rng.choice(pool, m), rng.choice(pool, m)], axis=1)
                neg = neg[neg[:, 0] != neg[:, 1]]
                return self._objective(p, layers, ctx, (pos, neg), rng, mode)
            return self._objective(p, layers, ctx, target, rng, mode)

        def evaluate(p: Params, emb: np.ndarray) -> dict[str, float]:
            auc, ap = link_metrics(emb, vpos, vneg) if have_val else (float("nan"), float("nan"))
            return {"val_auc": auc, "val_ap": ap}

        rule = (Patience(self.patience, LINK_MONITOR, restore_best=True)
                if self.early_stopping == "patience" and have_val else StoppingRule())
        fit = run(params, epochs=self.epochs, lr=self.lr, objective=objective, evaluate=evaluate,
                  metrics=("val_auc", "val_ap"), rule=rule, evaluate_before_step=True,
                  adam_epsilon_hat=True)  # tkipf/gae's tf.train.AdamOptimizer (TF1 epsilon-hat form)
        self.params_ = {k: np.asarray(v, dtype=np.float64) for k, v in fit.params.items()}
        self.n_features_in_ = d
        self.n_classes_ = 0
        self.history_ = fit.history
        self.best_epoch_ = fit.best_epoch
        self.stopped_early_ = fit.stopped
        self.loss_mode_ = mode
        Z = self._embedding(np.asarray(self._run(self.params_, layers, ctx, training=False, rng=None)[0]))
        self.link_metrics_ = {}
        for name in ("val", "test"):
            pos, neg = evals[name]
            auc, ap = link_metrics(Z, pos, neg) if len(pos) and len(neg) else (float("nan"),) * 2
            self.link_metrics_[f"{name}_auc"], self.link_metrics_[f"{name}_ap"] = auc, ap
        self._inputs_cache = None  # the fit's context is the TRAINING graph, not A: never reuse it

    # inference ------------------------------------------------------------------------------------
    def embed_local(self, A: Any, X: Any) -> np.ndarray:
        """The embedding ``Z`` (n, ``hidden[-1]``) of every vertex of the RAW graph ``(A, X)``, float64."""
        self._check_fitted()
        self._check_features(X)
        self._check_graph(A, X)
        out = self._run(self.params_, self.layers(), self._context(A, X), training=False, rng=None)[0]
        return self._embedding(np.asarray(out, dtype=np.float64))

    def embed_rows(self, Z: Any) -> np.ndarray:
        """The embedding of per-row inputs ``S^K X̃`` (``sgc`` encoder)."""
        self._check_fitted()
        if self.encoder != "sgc":
            raise TypeError("embed_rows needs the sgc encoder")
        z = sp.csr_matrix(Z, dtype=np.float64) if sp.issparse(Z) else np.asarray(Z, dtype=np.float64)
        out = self._run(self.params_, self.layers(), Context(z, None), training=False, rng=None)[0]
        return self._embedding(np.asarray(out, dtype=np.float64))

    def forward_local(self, A: Any, X: Any, return_hidden: bool = False
                      ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """A link model has no class probabilities: returns the embedding (twice with
        ``return_hidden``, for callers written for node models)."""
        Z = self.embed_local(A, X)
        return (Z, Z) if return_hidden else Z

    def predict_proba_local(self, A: Any, X: Any) -> np.ndarray:
        raise TypeError("gae is a link model: it has no class probabilities (use embed_local and "
                        "lepton_spark.models.gae.score_pairs)")

    def forward_plan(self, ops: Ops, with_embedding: bool = True) -> tuple[Any | None, Any]:
        """The encoder as a propagation plan; returns ``(Z, Z)`` (the embedding is the output).

        ``gcn``, per layer like GCN: ``dense(W)`` -> 1 round -> ReLU when the layer shrinks the width,
        else 1 round -> ``dense(W, relu)``. ``sgc``: ``K`` rounds around the first (linear) product --
        ``X̃ W0`` first when ``W0`` shrinks the width -- then ReLU and the other layers per row. The
        last layer has no activation and, for VGAE, only the ``mu`` half of its weights.
        """
        self._check_fitted()
        edges = ops.gcn_edges()
        t = self._input_table(ops)
        convs = self._weight_layers()
        for i, conv in enumerate(convs):
            W = self.params_[f"{conv.name}.W"]
            last = i == len(convs) - 1
            if last and self.variational:
                W = W[:, : self.embedding_dim]
            act = "identity" if last else "relu"
            rounds = 1 if self.encoder == "gcn" else (self.K if i == 0 else 0)
            if rounds == 0:
                t = ops.dense(t, W, None, act)
            elif W.shape[1] < W.shape[0]:
                t = ops.propagate(ops.dense(t, W, None, "identity"), edges, rounds)
                if act != "identity":
                    t = ops.dense(t, None, None, act)
            else:
                t = ops.dense(ops.propagate(t, edges, rounds), W, None, act)
        return t, t

    def forward_twin(self, A: Any, X: Any, ids: np.ndarray | None = None,
                     with_embedding: bool = True) -> LocalForward:
        """The plan with the float32 numpy backend; ``embedding`` and ``probs`` both hold ``Z``."""
        self._check_fitted()
        self._check_features(X)
        ops = LocalOps(A, X, ids)
        emb, _ = self.forward_plan(ops)
        return ops.result(emb, emb)

    def forward_spark(self, g: Any, features: str = "features", weight: str = "weight",
                      with_embedding: bool = True, propagate_options: Mapping[str, Any] | None = None) -> Any:
        """The encoder on Spark: ``DataFrame(id long, embedding array<float>)`` for every vertex
        (lazy; same propagation machinery and options as :meth:`GraphModel.forward_spark`)."""
        from pyspark.sql import functions as F

        self._check_fitted()
        ops = SparkOps(g, features=features, weight=weight, propagate_options=propagate_options)
        try:
            emb, _ = self.forward_plan(ops)
            return emb.select("id", F.col("features").alias("embedding"))
        finally:
            ops.close()


def train_link_model(model_type: str, A: Any, X: Any, hparams: Mapping[str, Any] | None = None,
                     seed: int = 0) -> tuple[GAE, dict[str, Any]]:
    """Fit a link model on the driver; returns ``(model, metrics)`` like :func:`trainer.train`.

    ``metrics`` (JSON-able): model_type, seed, hyperparameters, num_classes (0), val_auc, val_ap,
    test_auc, test_ap, train_loss (last epoch), loss_mode, epochs_run, best_epoch, stopped_early,
    fit_seconds, feature_norm, edge_split (pair counts and sha256), history (epoch, train_loss,
    val_auc, val_ap); the classification keys (train/val/test accuracy) are None.
    """
    if str(model_type).lower() != GAE.model_type:  # the registry imports this module: no lookup there
        raise ValueError(f"{model_type} is not a link model (link models: {GAE.model_type})")
    model = GAE(**dict(hparams or {}))
    t0 = time.perf_counter()
    model.fit(A, X, seed=seed)
    fit_s = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "model_type": model.model_type,
        "task": "link",
        "seed": int(seed),
        "hyperparameters": model.get_params(),
        "num_classes": 0,
        **model.link_metrics_,
        "train_acc": None, "val_acc": None, "test_acc": None,
        "train_loss": model.history_["train_loss"][-1],
        "loss_mode": model.loss_mode_,
        "epochs_run": len(model.history_["epoch"]),
        "best_epoch": model.best_epoch_,
        "stopped_early": model.stopped_early_,
        "fit_seconds": fit_s,
        "feature_norm": model.feature_norm_,
        "edge_split": {**model.split_.counts(), "seed": model.split_.seed, "sha256": model.split_.sha256()},
        "path": "driver",
        "history": model.history_,
    }
    return model, json_clean(metrics)
