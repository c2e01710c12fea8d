"""Statistics per layer (docs/design.md §2), from per-layer sums gathered in the histogram pass. Pure.

The formulas take those sums, so they serve the out-of-core pass and one in-memory layer alike
(:func:`layer_entropy`, :func:`layer_sparsity`, :func:`is_degenerate` compute the sums of one
``(n, 9)`` matrix and call them). Per layer the pass gathers: n, the sum of filter ranges (max - min), max |w| (from the range
pass), the number of sparse filters (all 9 |w| < 0.01 max|W|), and the scatter matrix of W about
the layer's mean (the mean from the range pass, so the scatter sums across blocks). The singular
values of the column-centred W are the square roots of that scatter matrix's eigenvalues.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPARSITY_EPS = 0.01
TH_L, TH_K, TH_X0, TH_B = 1.2618047, 0.88767525, 2.30436435, -0.31050834


def threshold(n: np.ndarray | int) -> np.ndarray:
    """Randomness threshold ``TH(n) = L / (1 + exp(-k (log2 n - x0))) + b``."""
    n = np.asarray(n, dtype=np.float64)
    return TH_L / (1.0 + np.exp(-TH_K * (np.log2(n) - TH_X0))) + TH_B


def variance_entropy(scatter: np.ndarray) -> np.ndarray:
    """``H = -Σ p_i log10 p_i`` of the normalised variances (eigenvalues of the centred scatter
    matrix = squared singular values of the centred W); 0 when all variances are 0. ``scatter``
    is (..., 9, 9)."""
    ev = np.clip(np.linalg.eigvalsh(scatter), 0.0, None)
    total = ev.sum(axis=-1, keepdims=True)
    p = np.where(total > 0, ev / np.where(total > 0, total, 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log10(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1) + 0.0


def sparsity(n_sparse: np.ndarray, n: np.ndarray, max_abs: np.ndarray) -> np.ndarray:
    """Share of sparse filters; 1 for an all-zero layer."""
    s = np.asarray(n_sparse, dtype=np.float64) / np.asarray(n, dtype=np.float64)
    return np.where(np.asarray(max_abs) == 0, 1.0, s)


def degenerate(h: np.ndarray, s: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Degenerate if ``H ≥ TH(n) - 0.02`` or (``H < 0.5`` and ``S ≥ 0.14``)."""
    return (h >= threshold(n) - 0.02) | ((h < 0.5) & (s >= 0.14))


def scatter(w: np.ndarray) -> np.ndarray:
    """The scatter matrix ``(W - mean)ᵀ (W - mean)`` (float64) of one layer's filters ``w`` (n, 9)."""
    w = np.asarray(w, dtype=np.float64)
    centred = w - w.mean(axis=0) if len(w) else w
    return centred.T @ centred


def layer_entropy(w: np.ndarray) -> float:
    """The variance entropy H of one layer's filters ``w`` (n, 9)."""
    return float(variance_entropy(scatter(w)))


def layer_sparsity(w: np.ndarray) -> float:
    """The sparsity S of one layer's filters ``w`` (n, 9)."""
    a = np.abs(np.asarray(w, dtype=np.float64))
    top = a.max() if a.size else 0.0
    n_sparse = int((a.max(axis=1) < SPARSITY_EPS * top).sum()) if a.size else 0
    return float(sparsity(n_sparse, max(len(a), 1), top))


def is_degenerate(w: np.ndarray) -> bool:
    """The degenerate flag of one layer's filters ``w`` (n, 9)."""
    return bool(degenerate(layer_entropy(w), layer_sparsity(w), len(w)))


def layer_statistics(layers: pd.DataFrame, n: np.ndarray, range_sum: np.ndarray, max_abs: np.ndarray, n_sparse: np.ndarray, scatter: np.ndarray) -> pd.DataFrame:
    """The ``layer_stats`` table: one row per analysed layer (``layers`` in position order)."""
    h = variance_entropy(scatter)
    s = sparsity(n_sparse, n, max_abs)
    out = pd.DataFrame({
        "layer_id": layers["layer_id"].to_numpy(np.int64),
        "model_id": layers["model_id"].to_numpy(np.int64),
    })
    for col in ("name", "conv_index", "depth", "depth_decile"):
        if col in layers.columns:
            out[col] = layers[col].to_numpy()
    out["n_filters"] = np.asarray(n, dtype=np.int64)
    out["mean_range"] = np.asarray(range_sum, dtype=np.float64) / np.asarray(n, dtype=np.float64)
    out["max_abs"] = np.asarray(max_abs, dtype=np.float64)
    out["sparsity"] = s
    out["variance_entropy"] = h
    out["threshold"] = threshold(n)
    out["degenerate"] = degenerate(h, s, n)
    return out


def model_depth_range(stats: pd.DataFrame) -> pd.DataFrame:
    """Per model and depth decile: mean of the layers' mean ranges (paper Fig. 6), and the mean
    over all the filters of that decile."""
    df = stats.assign(_range_sum=stats["mean_range"] * stats["n_filters"])
    g = df.groupby(["model_id", "depth_decile"], sort=True)
    out = g.agg(n_layers=("layer_id", "size"), n_filters=("n_filters", "sum"), mean_range=("mean_range", "mean"), _range_sum=("_range_sum", "sum"))
    out["mean_range_filters"] = out.pop("_range_sum") / out["n_filters"]
    return out.reset_index()
