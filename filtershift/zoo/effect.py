"""How far training moved a model's 3x3 filters away from their random initialisation. Pure numpy.

Per layer: the variance entropy H and sparsity S of docs/design.md §2 and its degeneracy flag; per
model: the relative weight change ``|W - W0| / |W0|`` and the distribution shift D (symmetric KL of
the PCA-coefficient histograms of the max-scaled filters, weighted by explained variance, 70 bins
over one shared range) between the trained filters and the same model's initial filters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BINS = 70
EPS = float(np.finfo(np.float32).eps)


def variance_entropy(w: np.ndarray) -> float:
    """``-sum p log10 p`` of the normalised singular-value variances of the column-centred ``w``."""
    w = np.asarray(w, np.float64)
    if w.shape[0] < 2:
        return 0.0
    s = np.linalg.svd(w - w.mean(axis=0), compute_uv=False)
    var = s**2
    if var.sum() <= 0:
        return 0.0
    p = var / var.sum()
    p = p[p > 0]
    return float(-(p * np.log10(p)).sum())


def entropy_threshold(n: int) -> float:
    """The randomness threshold TH(n) of the variance entropy for ``n`` filters."""
    return 1.2618047 / (1 + np.exp(-0.88767525 * (np.log2(n) - 2.30436435))) - 0.31050834


def sparsity(w: np.ndarray) -> float:
    """Share of filters whose 9 |w| are all below 1 % of the layer's max |w| (all-zero layer: 1)."""
    a = np.abs(np.asarray(w, np.float64))
    top = a.max() if a.size else 0.0
    if top == 0:
        return 1.0
    return float((a.max(axis=1) < 0.01 * top).mean())


def is_degenerate(w: np.ndarray) -> bool:
    h, s = variance_entropy(w), sparsity(w)
    return bool(h >= entropy_threshold(len(w)) - 0.02 or (h < 0.5 and s >= 0.14))


def scale_filters(w: np.ndarray) -> np.ndarray:
    """Each filter divided by its own max |w| (all-zero filters stay zero)."""
    w = np.asarray(w, np.float64)
    top = np.abs(w).max(axis=1, keepdims=True)
    return w / np.where(top == 0, 1.0, top)


def shift(a: np.ndarray, b: np.ndarray) -> float:
    """D(a, b): symmetric KL of the coefficient histograms of the scaled filter sets ``a`` and ``b``
    (PCA fitted on both together, 70 bins over one shared range, weighted by explained variance)."""
    a, b = scale_filters(a), scale_filters(b)
    both = np.concatenate([a, b])
    mean = both.mean(axis=0)
    var, vecs = np.linalg.eigh(np.cov(both - mean, rowvar=False))
    order = np.argsort(var)[::-1]
    var, vecs = np.clip(var[order], 0, None), vecs[:, order]
    q = var / var.sum()
    ca, cb = (a - mean) @ vecs, (b - mean) @ vecs
    edges = np.linspace(min(ca.min(), cb.min()), max(ca.max(), cb.max()), N_BINS + 1)
    d = 0.0
    for i in range(9):
        p = _density(ca[:, i], edges)
        r = _density(cb[:, i], edges)
        d += q[i] * float((p * np.log(p / r)).sum() + (r * np.log(r / p)).sum())
    return d


def _density(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    h, _ = np.histogram(x, bins=edges, density=True)
    h = np.where(h == 0, EPS, h)
    return h / h.sum()


def model_effect(trained: Sequence[np.ndarray], initial: Sequence[np.ndarray]) -> dict:
    """Compare one model's 3x3 layers (lists of ``(n, 9)`` arrays, same order) after and before training."""
    trained = [np.asarray(t, np.float64) for t in trained]
    initial = [np.asarray(i, np.float64) for i in initial]
    all_t, all_i = np.concatenate(trained), np.concatenate(initial)
    h_t = [variance_entropy(t) for t in trained]
    h_i = [variance_entropy(i) for i in initial]
    return {
        "n_layers": len(trained),
        "n_kernels": int(len(all_t)),
        "rel_change": float(np.linalg.norm(all_t - all_i) / np.linalg.norm(all_i)),
        "shift_vs_init": shift(all_t, all_i),
        "median_entropy": float(np.median(h_t)),
        "median_entropy_init": float(np.median(h_i)),
        "degenerate_share": float(np.mean([is_degenerate(t) for t in trained])),
        "degenerate_share_init": float(np.mean([is_degenerate(i) for i in initial])),
    }
