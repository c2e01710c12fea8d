"""The distribution shift (docs/design.md §2): ``D(P‖Q) = Σ_i q_i [KL(P_i‖Q_i) + KL(Q_i‖P_i)]``, natural
log, q the explained-variance ratios. Pure numpy.

The symmetric KL sum is computed as ``Σ_j (p_j - q_j)(log p_j - log q_j)``: every term is ≥ 0, so
D is non-negative; the upper triangle is mirrored, so D is exactly symmetric with a zero diagonal.
"""

from __future__ import annotations

import numpy as np


def symmetric_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``KL(p‖q) + KL(q‖p)`` over the last axis (strictly positive distributions)."""
    return np.sum((p - q) * (np.log(p) - np.log(q)), axis=-1)


def shift(p: np.ndarray, q: np.ndarray, weights: np.ndarray) -> float:
    """D between two distributions of shape (9, n_bins)."""
    return float(symmetric_kl(p, q) @ weights)


def shift_matrix(probabilities: np.ndarray, weights: np.ndarray, max_elements: int = 16_000_000) -> np.ndarray:
    """The (G, G) D matrix of group distributions ``probabilities`` (G, 9, n_bins), computed a few
    rows at a time so temporaries stay under ``max_elements`` floats (~128 MB) for any G."""
    p = np.asarray(probabilities, dtype=np.float64)
    logp = np.log(p)
    g = len(p)
    rows_per_step = max(1, max_elements // max(1, p[0].size * g))
    d = np.zeros((g, g), dtype=np.float64)
    for a in range(0, g, rows_per_step):
        b = min(a + rows_per_step, g)
        diff = p[a:b, None] - p[None]
        dlog = logp[a:b, None] - logp[None]
        d[a:b] = np.sum(diff * dlog, axis=-1) @ weights
    upper = np.triu(d, k=1)  # BLAS may sum (a, b) and (b, a) in another order: mirror one triangle
    return upper + upper.T


def upper_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(a, b)`` with ``a < b``."""
    return np.triu_indices(n, k=1)
