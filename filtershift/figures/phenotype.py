"""An automatic phenotype label per layer: "sun", "spikes" or "symbols" (paper Fig. 5, there by eye).

The paper sorts bivariate coefficient plots of single layers into three looks: a **sun** (one round,
centred, Gaussian-like blob), **spikes** (the mass sits on a few discrete structures: many nearly
identical filters) and **symbols** (broad but not Gaussian: several modes, off-centre, sparse).
We label each layer from its 1-D coefficient histograms of the leading components (the
``layer_histograms.npz`` of the results: no read of the filters), with three statistics per
component, combined over the components by their explained-variance ratio ``q``:

``gauss_excess``
    Total-variation distance between the layer's histogram and a Gaussian of the same mean and
    standard deviation integrated over the same bins, minus the distance expected from sampling
    alone (``0.5 Σ_b sqrt(2 g_b (1 - g_b) / (π n))``, the mean absolute deviation of multinomial
    bin shares). A sample of a Gaussian scores ~0 at any ``n``; this is what "Gaussian-like" means.
``concentration``
    ``exp(H(p)) / exp(H(g))``: the effective number of occupied bins (Shannon, Miller–Madow bias
    corrected) relative to that of the matching Gaussian. Mass on a few narrow spikes, spread as
    widely as the Gaussian, occupies far fewer bins (< 0.5); a broad multi-modal shape does not.
``n_modes``
    Peaks of the lightly smoothed ([1, 2, 1]) histogram that reach 10 % of the highest one and
    are separated from a higher peak by a valley below half their height.

Rule: **sun** if ``gauss_excess ≤ 0.10`` (within sampling noise of a Gaussian, whatever small
bumps the mode count sees); otherwise **spikes** if ``concentration ≤ 0.5``; otherwise **symbols**. Thresholds: TV 0.1 is
where a histogram visibly departs from its Gaussian (a 10 % mass displacement); 0.5 is half the
spread a Gaussian would fill. On the generators of :mod:`filtershift.figures.synthetic`
(1-2k filters per layer) sun layers score excess ≤ 0.02 and symbols ≥ 0.24; spikes score
concentration ≤ 0.42 and symbols ≥ 0.55 (tests pin the labels). ``n_modes`` (max over the
components) is reported to tell symbols apart by eye but does not enter the rule; ``reliable`` is false
for layers under 256 filters, where one histogram of 70 bins is too noisy to call.
"""

from __future__ import annotations

from math import erf, sqrt

import numpy as np
import pandas as pd

PHENOTYPES = ("sun", "spikes", "symbols")
SUN_MAX_EXCESS = 0.10
SPIKES_MAX_CONCENTRATION = 0.5
MIN_RELIABLE = 256

_erf = np.vectorize(erf)


def gaussian_bins(edges: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Shares of the bins ``edges`` under N(mean, std) (rows), renormalised to the range; a
    zero ``std`` puts all mass in the bin holding ``mean``."""
    mean = np.asarray(mean, dtype=np.float64)[:, None]
    std = np.asarray(std, dtype=np.float64)[:, None]
    safe = np.where(std > 0, std, 1.0)
    cdf = 0.5 * (1.0 + _erf((edges[None, :] - mean) / (safe * sqrt(2.0))))
    g = np.diff(cdf, axis=1)
    point = np.zeros_like(g)
    idx = np.clip(np.searchsorted(edges, mean[:, 0], side="right") - 1, 0, len(edges) - 2)
    point[np.arange(len(idx)), idx] = 1.0
    g = np.where(std > 0, g, point)
    total = g.sum(axis=1, keepdims=True)
    return g / np.where(total > 0, total, 1.0)


def _entropy(p: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    if n is not None:  # Miller–Madow: + (occupied bins - 1) / 2n
        h = h + ((p > 0).sum(axis=1) - 1) / (2.0 * np.maximum(n, 1))
    return h


def count_modes(p: np.ndarray, min_height: float = 0.1, dip: float = 0.5) -> np.ndarray:
    """Modes per row of ``p`` (see the module docstring)."""
    padded = np.pad(p, ((0, 0), (1, 1)))
    s = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4.0
    out = np.zeros(len(p), dtype=np.int64)
    for r, row in enumerate(s):
        top = row.max()
        if top <= 0:
            continue
        peaks = [b for b in range(len(row)) if row[b] >= min_height * top
                 and row[b] >= (row[b - 1] if b else 0) and row[b] > (row[b + 1] if b + 1 < len(row) else 0)]
        kept: list[int] = []
        for b in sorted(peaks, key=lambda k: -row[k]):
            if all(row[min(b, k):max(b, k) + 1].min() < dip * min(row[b], row[k]) for k in kept):
                kept.append(b)
        out[r] = len(kept)
    return out


def component_statistics(counts: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """``n, gauss_excess, concentration, n_modes`` per row of ``counts`` (R, n_bins)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    p = counts / np.where(n > 0, n, 1.0)[:, None]
    centres = 0.5 * (edges[1:] + edges[:-1])
    mean = p @ centres
    std = np.sqrt(np.clip(p @ centres**2 - mean**2, 0.0, None))
    g = gaussian_bins(edges, mean, std)
    tv = 0.5 * np.abs(p - g).sum(axis=1)
    noise = 0.5 * np.sqrt(2.0 * g * (1.0 - g) / (np.pi * np.maximum(n, 1))[:, None]).sum(axis=1)
    conc = np.exp(_entropy(p, n) - _entropy(g))
    return pd.DataFrame({
        "n": n.astype(np.int64), "gauss_excess": np.clip(tv - noise, 0.0, None),
        "concentration": conc, "n_modes": count_modes(p),
    })


def label(gauss_excess: np.ndarray, concentration: np.ndarray) -> np.ndarray:
    """The rule of the module docstring, vectorised."""
    sun = np.asarray(gauss_excess) <= SUN_MAX_EXCESS
    spikes = ~sun & (np.asarray(concentration) <= SPIKES_MAX_CONCENTRATION)
    return np.where(sun, "sun", np.where(spikes, "spikes", "symbols"))


def layer_phenotypes(layer_id: np.ndarray, counts: np.ndarray, edges: np.ndarray, q: np.ndarray, components: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """One row per layer: the q-weighted statistics over ``components`` and its ``phenotype``.

    ``counts`` is (L, 9, n_bins) as in ``layer_histograms.npz``.
    """
    stats = [component_statistics(counts[:, c, :], edges) for c in components]
    w = np.asarray([q[c] for c in components], dtype=np.float64)
    w = w / w.sum()
    excess = sum(wi * s["gauss_excess"].to_numpy() for wi, s in zip(w, stats))
    conc = sum(wi * s["concentration"].to_numpy() for wi, s in zip(w, stats))
    modes = np.max([s["n_modes"].to_numpy() for s in stats], axis=0)
    n = stats[0]["n"].to_numpy()
    return pd.DataFrame({
        "layer_id": np.asarray(layer_id, dtype=np.int64), "n_filters": n, "gauss_excess": excess,
        "concentration": conc, "n_modes": modes, "phenotype": label(excess, conc),
        "reliable": n >= MIN_RELIABLE,
    })
