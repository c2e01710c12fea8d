"""How far training moved a model's 3x3 filters away from their random initialisation. Pure numpy.

Per layer: the variance entropy H and sparsity S of docs/design.md §2 and its degeneracy flag; per
model: the relative weight change ``|W - W0| / |W0|`` and the distribution shift D between the
trained filters and the same model's initial filters. Every formula is the analysis' own
(:mod:`filtershift.analysis.layerstats`, :mod:`~filtershift.analysis.pca`,
:mod:`~filtershift.analysis.histograms`, :mod:`~filtershift.analysis.divergence`); this module
only applies them to two in-memory filter sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from filtershift.analysis import divergence
from filtershift.analysis.histograms import bin_edges, coefficient_counts, distributions
from filtershift.analysis.layerstats import is_degenerate, layer_entropy
from filtershift.analysis.pca import Moments, pca_from_moments, scale_filters
from filtershift.analysis.types import project

N_BINS = 70


def shift_from_init(a: np.ndarray, b: np.ndarray) -> float:
    """D(a, b): the analysis' D between the scaled filter sets ``a`` and ``b`` (n, 9), with the PCA
    fitted on both together and 70 bins over one shared range."""
    a, b = scale_filters(a), scale_filters(b)
    pca = pca_from_moments(Moments.of(np.concatenate([a, b])), "scaled")
    ca, cb = project(a, pca.mean, pca.components), project(b, pca.mean, pca.components)
    edges = bin_edges(min(ca.min(), cb.min()), max(ca.max(), cb.max()), N_BINS)
    p, q = (distributions(coefficient_counts(c, edges), edges) for c in (ca, cb))
    return divergence.shift(p, q, pca.explained_variance_ratio)


def model_effect(trained: Sequence[np.ndarray], initial: Sequence[np.ndarray]) -> dict:
    """Compare one model's 3x3 layers (lists of ``(n, 9)`` arrays, same order) after and before training."""
    trained = [np.asarray(t, np.float64) for t in trained]
    initial = [np.asarray(i, np.float64) for i in initial]
    all_t, all_i = np.concatenate(trained), np.concatenate(initial)
    h_t = [layer_entropy(t) for t in trained]
    h_i = [layer_entropy(i) for i in initial]
    return {
        "n_layers": len(trained),
        "n_kernels": int(len(all_t)),
        "rel_change": float(np.linalg.norm(all_t - all_i) / np.linalg.norm(all_i)),
        "shift_vs_init": shift_from_init(all_t, all_i),
        "median_entropy": float(np.median(h_t)),
        "median_entropy_init": float(np.median(h_i)),
        "degenerate_share": float(np.mean([is_degenerate(t) for t in trained])),
        "degenerate_share_init": float(np.mean([is_degenerate(i) for i in initial])),
    }
