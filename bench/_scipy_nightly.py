"""One-process numpy/scipy twin of ``lepton-spark nightly`` with ``model.type=sgc`` (the bench baseline).

    python bench/_scipy_nightly.py --vertices DIR --edges DIR --output DIR    (or via nightly_scale.py)

Independent of the library on purpose (only numpy, scipy, pyarrow), stage by stage:

* ``build``: read the raw Parquet tables with pyarrow; vertices: drop null ids, keep the first row of a
  repeated id, label -1 when null, split masks; edges: drop rows with a null endpoint or a null/NaN/
  negative weight, drop dangling rows (an endpoint that is not a vertex), drop self-loops, symmetrise
  and merge repeated (src, dst) keeping the max weight (the build's defaults: ``self_loops: drop``,
  ``symmetrize: true``, ``merge_duplicates: max``); raw ids -> dense 0..n-1 in raw id order (as the
  build numbers them); features standardised per column (``build.feature_norm: standard``).
* ``train``: SGC features ``Z = S^2 X`` with ``S = D^-1/2 (A+I) D^-1/2`` (D = weighted degree incl.
  the loop), then multinomial logistic regression (L-BFGS, L2 on the weights, bias free) on the
  train rows for each weight decay of a small grid; the one with the best val accuracy is kept.
* ``predict``: ``softmax(Z W + b)`` for all vertices (Z is reused from train).
* ``analytics``: PageRank (GraphX/GraphFrames recurrence, 20 iterations from all-ones, rescaled to
  sum n), weakly connected components (scipy.sparse.csgraph; component = smallest vertex id),
  label propagation (GraphX semantics, 5 iterations) on the built graph.
* ``write``: Parquet tables embeddings, predictions, pagerank, components, communities (dense ids).

``run(...)`` returns per-stage seconds, accuracies (also features-only, K=0, for reference) and counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.sparse.csgraph import connected_components

WD_GRID = (1e-4, 1e-3, 1e-2)


# ------------------------------------------------------------------------------------------ build


def _starts(sorted_values: np.ndarray) -> np.ndarray:
    """Positions where a new value starts in a sorted array (np.unique is slow on numpy 2.4)."""
    if len(sorted_values) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]]))


def _first_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, position of the first occurrence of each)."""
    order = np.argsort(values, kind="stable")
    start = _starts(values[order])
    return values[order[start]], order[start]


def _positions(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense id (position in the sorted ``ids``) of every value and whether it is a vertex at all.
    The needles are sorted first: a cache-friendly search, about twice as fast on 10M values."""
    order = np.argsort(values)
    pos = np.empty(len(values), dtype=np.int64)
    pos[order] = np.minimum(np.searchsorted(ids, values[order]), max(len(ids) - 1, 0))
    return pos, ids[pos] == values if len(ids) else np.zeros(len(values), dtype=bool)


def _count_distinct(values: np.ndarray) -> int:
    return len(_starts(np.sort(values)))


def _features(col: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        raise ValueError("null feature rows are not handled by the baseline")
    lengths = np.diff(arr.offsets.to_numpy())
    if n and (lengths != lengths[0]).any():
        raise ValueError("feature rows of different lengths are not handled by the baseline")
    d = int(lengths[0]) if n else 0
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, d)


def build(vertices: str, edges: str) -> dict[str, Any]:
    """Raw tables -> dense graph (see module docstring). ``A`` is CSR, symmetric, no loops, float32."""
    vt = ds.dataset(vertices, format="parquet").to_table()
    raw_id = vt.column("id").to_numpy(zero_copy_only=False)
    keep = np.asarray(vt.column("id").is_valid()) if vt.column("id").null_count else np.ones(len(raw_id), bool)
    ids, first = _first_rows(raw_id[keep])  # sorted; first row of a repeated id
    rows = np.flatnonzero(keep)[first]
    n = len(ids)
    X = _features(vt.column("features").take(pa.array(rows)), n)  # rows in raw-id (= dense id) order
    lab = vt.column("label").take(pa.array(rows)) if "label" in vt.column_names else None
    y = np.full(n, -1, dtype=np.int64)
    if lab is not None:
        lab = lab.combine_chunks() if isinstance(lab, pa.ChunkedArray) else lab
        y = lab.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    split = vt.column("split").take(pa.array(rows)).to_numpy(zero_copy_only=False) \
        if "split" in vt.column_names else np.full(n, None, dtype=object)
    masks = {s: (split == s) & (y >= 0) for s in ("train", "val", "test")}
    del vt

    et = ds.dataset(edges, format="parquet").to_table()
    m_in = et.num_rows
    src = et.column("src").combine_chunks()
    dst = et.column("dst").combine_chunks()
    ok = np.ones(m_in, dtype=bool)
    for c in (src, dst):
        if c.null_count:
            ok &= np.asarray(c.is_valid())
    s_raw = src.fill_null(0).to_numpy(zero_copy_only=False)
    d_raw = dst.fill_null(0).to_numpy(zero_copy_only=False)
    if "weight" in et.column_names:
        wcol = et.column("weight").combine_chunks()
        w = wcol.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
        ok &= np.isfinite(w) & (w >= 0)
    else:
        w = np.ones(m_in, dtype=np.float32)
    del et, src, dst
    si, s_ok = _positions(ids, s_raw)
    di, d_ok = _positions(ids, d_raw)
    valid = ok & s_ok & d_ok
    del s_ok, d_ok
    dangling = int((ok & ~valid).sum())
    del s_raw, d_raw
    keep = valid & (si != di)
    si, di, w = si[keep], di[keep], w[keep]
    # symmetrise, then one entry per (src, dst) with the max weight
    key = np.concatenate([si * n + di, di * n + si])
    ww = np.concatenate([w, w])
    del si, di, w, keep, valid
    order = np.argsort(key)  # (the max weight needs no stable order)
    key, ww = key[order], ww[order]
    del order
    start = _starts(key)
    wmax = np.maximum.reduceat(ww, start) if len(start) else ww
    key = key[start]
    r, c = key // n, key % n
    del key, ww
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
    A = sp.csr_matrix((wmax.astype(np.float32), c.astype(np.int32 if n < 2**31 else np.int64), indptr),
                      shape=(n, n))
    # standardise features per column (population std; constant columns -> 0)
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    X = ((X - mean.astype(np.float32)) / np.where(std > 0, std, 1.0).astype(np.float32)).astype(np.float32)
    return {"ids": ids, "A": A, "X": X, "y": y, "masks": masks,
            "counts": {"vertices_in": len(raw_id), "edges_in": int(m_in), "dangling_edges": dangling,
                       "vertices": n, "edges": int(A.nnz)}}


# ------------------------------------------------------------------------------------------ train


def sgc_features(A: sp.csr_matrix, X: np.ndarray, K: int = 2) -> np.ndarray:
    """``(D^-1/2 (A+I) D^-1/2)^K X`` with D the weighted degree of A+I (A symmetric), float32."""
    deg = np.asarray(A.sum(axis=1)).ravel().astype(np.float64) + 1.0
    dinv = (1.0 / np.sqrt(deg)).astype(np.float32)
    An = sp.csr_matrix((A.data * dinv[np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))] * dinv[A.indices],
                        A.indices, A.indptr), shape=A.shape)
    loop = (dinv * dinv)[:, None]
    Z = X
    for _ in range(K):
        Z = np.asarray(An @ Z, dtype=np.float32) + loop * Z
    return Z


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_logreg(Z: np.ndarray, y: np.ndarray, c: int, wd: float, maxiter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: mean cross-entropy + wd/2 ||W||^2, L-BFGS. Returns (W, b)."""
    Z = Z.astype(np.float64)
    n, d = Z.shape
    Y = np.zeros((n, c))
    Y[np.arange(n), y] = 1.0

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[:d * c].reshape(d, c), theta[d * c:]
        logits = Z @ W + b
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        loss = float(np.mean(lse - (logits * Y).sum(axis=1))) + 0.5 * wd * float((W * W).sum())
        G = (np.exp(logits - lse[:, None]) - Y) / n
        return loss, np.concatenate([(Z.T @ G + wd * W).ravel(), G.sum(axis=0)])

    res = minimize(f, np.zeros(d * c + c), jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
    return res.x[:d * c].reshape(d, c), res.x[d * c:]


def _acc(Z: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(Z @ W + b, axis=1) == y)) if len(y) else float("nan")


def train_select(Z: np.ndarray, y: np.ndarray, masks: dict[str, np.ndarray], grid: tuple[float, ...] = WD_GRID
                 ) -> dict[str, Any]:
    """Fit for every weight decay in ``grid`` on train, keep the best on val; accuracies of the kept one."""
    c = int(y.max()) + 1
    tr, va, te = (np.flatnonzero(masks[s]) for s in ("train", "val", "test"))
    best = None
    for wd in grid:
        W, b = fit_logreg(Z[tr], y[tr], c, wd)
        val = _acc(Z[va], W, b, y[va])
        if best is None or val > best["val_acc"]:
            best = {"W": W, "b": b, "weight_decay": wd, "val_acc": val}
    assert best is not None
    best["train_acc"] = _acc(Z[tr], best["W"], best["b"], y[tr])
    best["test_acc"] = _acc(Z[te], best["W"], best["b"], y[te])
    return best


# ------------------------------------------------------------------------------------------ analytics


def pagerank(n: int, src: np.ndarray, dst: np.ndarray, reset: float = 0.15, max_iter: int = 20,
             tol: float | None = None) -> np.ndarray:
    """GraphX/GraphFrames PageRank on dense ids: ``PR = r + (1-r) * sum_{u->v} PR[u]/outDeg(u)`` from
    all-ones, ``max_iter`` iterations (or until the L1 change < tol), rescaled to sum n. Multi-edges
    count with multiplicity; a vertex without out-edges leaks its rank (GraphX, not networkx)."""
    if n == 0:
        return np.zeros(0)
    outdeg = np.bincount(src, minlength=n).astype(np.float64)
    M = sp.csr_matrix((1.0 / outdeg[src], (dst, src)), shape=(n, n))
    x = np.ones(n)
    if len(src):
        for _ in range(max_iter):
            new = reset + (1.0 - reset) * (M @ x)
            delta = np.abs(new - x).sum()
            x = new
            if tol is not None and delta < tol:
                break
    total = x.sum()
    return x * (n / total) if total > 0 else x


def components(n: int, A: sp.csr_matrix) -> np.ndarray:
    """Weakly connected component of every vertex = the smallest dense id in it."""
    _, lab = connected_components(A, directed=True, connection="weak")
    smallest = np.full(lab.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, lab, np.arange(n, dtype=np.int64))
    return smallest[lab]


def label_propagation(n: int, src: np.ndarray, dst: np.ndarray, max_iter: int = 5,
                      symmetric: bool = False) -> np.ndarray:
    """GraphX LPA on dense ids: synchronous; every edge sends each endpoint's label to the other
    (multi-edges with multiplicity); the most frequent received label wins, ties to the smallest;
    vertices that receive nothing keep theirs; stops early only at a fixed point.

    ``symmetric=True`` (the edge list holds both directions of every edge) sends along ``src -> dst``
    only: every count is then halved, which changes no winner and halves the work.
    """
    label = np.arange(n, dtype=np.int64)
    if symmetric:
        senders, receivers = src.astype(np.int64), dst.astype(np.int64)
    else:
        senders = np.concatenate([src, dst]).astype(np.int64)
        receivers = np.concatenate([dst, src]).astype(np.int64)
    if len(receivers) == 0:
        return label
    # receivers sorted once; per iteration sort the labels inside each receiver's segment
    order = np.argsort(receivers, kind="stable")
    receivers, senders = receivers[order], senders[order]
    del order
    for _ in range(max_iter):
        keys = np.sort(receivers * n + label[senders])
        start = _starts(keys)
        counts = np.diff(np.append(start, len(keys)))
        ukeys = keys[start]
        recv, lab = ukeys // n, ukeys % n
        seg = _starts(recv)
        seg_id = np.repeat(np.arange(len(seg)), np.diff(np.append(seg, len(recv))))
        best = np.maximum.reduceat(counts, seg)
        win = np.flatnonzero(counts == best[seg_id])
        win = win[_starts(seg_id[win])]  # labels ascend inside a segment: the first winner is the smallest
        new = label.copy()
        new[recv[win]] = lab[win]
        if np.array_equal(new, label):
            break
        label = new
    return label


# ------------------------------------------------------------------------------------------ write


def _list_col(x: np.ndarray) -> pa.Array:
    n, d = x.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)),
                                    pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1)))


def write_outputs(out: Path, ids: np.ndarray, Z: np.ndarray, probs: np.ndarray, pr: np.ndarray, comp: np.ndarray,
                  comm: np.ndarray) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dense = pa.array(np.arange(len(ids), dtype=np.int64))
    tables = {
        "embeddings": pa.table({"id": dense, "embedding": _list_col(Z)}),
        "predictions": pa.table({"id": dense, "label": pa.array(np.argmax(probs, axis=1).astype(np.int32)),
                                 "probs": _list_col(probs)}),
        "pagerank": pa.table({"id": dense, "pagerank": pa.array(pr)}),
        "components": pa.table({"id": dense, "component": pa.array(comp)}),
        "communities": pa.table({"id": dense, "label": pa.array(comm)}),
    }
    for name, t in tables.items():
        pq.write_table(t, out / f"{name}.parquet", row_group_size=1 << 20)


# ------------------------------------------------------------------------------------------ run


def run(vertices: str, edges: str, output: str | Path, *, K: int = 2, pagerank_iters: int = 20, lpa_iters: int = 5,
        features_only: bool = True, log: Any = None) -> dict[str, Any]:
    """All stages, timed. Returns {"stage_seconds", "analytics_seconds", "seconds", "test_acc", ...}.

    ``log`` (a callable taking one line) hears ``stage <name>: start`` / ``stage <name>: done`` at the
    stage boundaries (nightly_scale.py attributes its RSS samples to stages with them).
    """
    say = log or (lambda line: None)
    secs: dict[str, float] = {}
    algo: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str) -> float:
        say(f"stage {name}: start")
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        secs[name] = time.perf_counter() - t0
        say(f"stage {name}: done in {secs[name]:.2f}s")

    t0 = stage("build")
    g = build(vertices, edges)
    done("build", t0)

    t0 = stage("train")
    Z = sgc_features(g["A"], g["X"], K)
    fit = train_select(Z, g["y"], g["masks"])
    done("train", t0)

    t0 = stage("predict")
    probs = _softmax(Z @ fit["W"].astype(np.float32) + fit["b"].astype(np.float32))
    done("predict", t0)

    t0 = stage("analytics")
    A = g["A"]
    n = A.shape[0]
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(A.indptr))
    dst = A.indices.astype(np.int64)
    t1 = time.perf_counter()
    pr = pagerank(n, src, dst, max_iter=pagerank_iters)
    algo["pagerank"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    comp = components(n, A)
    algo["components"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    comm = label_propagation(n, src, dst, lpa_iters, symmetric=True)
    algo["communities"] = time.perf_counter() - t1
    del src, dst
    done("analytics", t0)

    t0 = stage("write")
    write_outputs(Path(output), g["ids"], Z, probs, pr, comp, comm)
    done("write", t0)
    total = time.perf_counter() - t_all

    result: dict[str, Any] = {
        "stage_seconds": {k: round(v, 3) for k, v in secs.items()},
        "analytics_seconds": {k: round(v, 3) for k, v in algo.items()},
        "seconds": round(total, 3),
        "test_acc": fit["test_acc"], "val_acc": fit["val_acc"], "train_acc": fit["train_acc"],
        "weight_decay": fit["weight_decay"],
        "counts": {**g["counts"], "components": _count_distinct(comp),
                   "communities": _count_distinct(comm),
                   **{f"{s}_rows": int(m.sum()) for s, m in g["masks"].items()}},
        "outputs": str(output),
    }
    if features_only:
        t0 = stage("features_only")
        result["test_acc_features_only"] = train_select(g["X"], g["y"], g["masks"])["test_acc"]
        result["features_only_seconds"] = round(time.perf_counter() - t0, 3)
        say("stage features_only: done")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", required=True)
    ap.add_argument("--edges", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--no-features-only", action="store_true", help="skip the K=0 reference fit")
    args = ap.parse_args(argv)
    result = run(args.vertices, args.edges, args.output, features_only=not args.no_features_only,
                 log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
