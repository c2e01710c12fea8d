"""Coefficient histograms (docs/design.md §2): shared uniform bins, exact ``numpy.histogram`` binning,
group sums of per-layer counts under a weighting, and the eps-floored distributions D is built
from. Pure numpy.
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float32).eps)  # 1.1920929e-07, the floor of empty bins in density units


def bin_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Uniform edges over ``[lo, hi]`` exactly as ``numpy.histogram(range=(lo, hi))`` makes them
    (an empty range is widened to ``[lo - 0.5, hi + 0.5]``)."""
    lo, hi = float(lo), float(hi)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n_bins + 1, endpoint=True, dtype=np.float64)


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of every value for uniform ``edges``, identical to ``numpy.histogram``'s: bins are
    half-open except the last, which includes the right edge. Values outside are -1."""
    n = len(edges) - 1
    first, last = edges[0], edges[-1]
    values = np.asarray(values, dtype=np.float64)
    idx = ((values - first) / (last - first) * n).astype(np.intp)
    outside = (values < first) | (values > last) | np.isnan(values)
    idx = np.clip(idx, 0, n - 1)
    idx[idx == n] -= 1
    idx[values < edges[idx]] -= 1
    idx[(values >= edges[np.minimum(idx + 1, n)]) & (idx != n - 1)] += 1
    idx[outside] = -1
    return idx


def coefficient_counts(c: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (k, n_bins) of each column of coefficients ``c`` (n, k) in ``edges`` (values outside
    are not counted), in memory."""
    n_bins = len(edges) - 1
    counts = np.zeros((c.shape[1], n_bins), dtype=np.int64)
    for k in range(c.shape[1]):
        idx = bin_indices(c[:, k], edges)
        counts[k] = np.bincount(idx[idx >= 0], minlength=n_bins)
    return counts


def distributions(mass: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per group and component, the distribution D is computed from: density of ``mass`` (counts
    or weights, last axis = bins), empty bins set to float32 eps in density units, then normalised
    to sum 1. A group without mass is uniform."""
    mass = np.asarray(mass, dtype=np.float64)
    width = np.diff(edges)
    total = mass.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        density = np.where(total > 0, mass / np.where(total > 0, total, 1.0) / width, 0.0)
    density[density == 0] = EPS
    return density / density.sum(axis=-1, keepdims=True)


def sum_rows(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = Σ values[r]`` over the rows r with ``index[r] == i`` (float64, shape (n, ...)):
    ``np.add.at`` in the same order (so bit-identical), by one ``np.bincount``, many times faster."""
    values = np.asarray(values, dtype=np.float64)
    width = int(np.prod(values.shape[1:], dtype=np.int64))
    flat = (np.asarray(index, dtype=np.int64)[:, None] * width + np.arange(width)).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=n * width).reshape((n,) + values.shape[1:])


def unit_index(group_codes: np.ndarray, model_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (group, model) units of a grouping: ``unit_of_layer``, ``unit_group``, ``unit_model``."""
    pairs = np.stack([group_codes, model_codes], axis=1)
    uniq, unit_of_layer = np.unique(pairs, axis=0, return_inverse=True)
    return unit_of_layer.ravel(), uniq[:, 0], uniq[:, 1]


def unit_masses(layer_counts: np.ndarray, unit_of_layer: np.ndarray, n_units: int, weighting: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (group, model) unit, the value a group's mass sums, and the normaliser it divides by.

    - ``filters``: pooled counts; normaliser 1 (the group's mass is the sum of counts).
    - ``layers``: sum of the layers' normalised histograms; normaliser = number of layers.
    - ``models``: the unit's normalised histogram (the model's filters inside the group); normaliser 1.
    A group's mass is ``Σ value / Σ normaliser`` over its units (``models``: divided by the unit count).
    """
    if weighting == "layers":
        n = layer_counts.sum(axis=-1, keepdims=True).astype(np.float64)
        value = sum_rows(layer_counts / np.where(n > 0, n, 1.0), unit_of_layer, n_units)
        norm = np.bincount(unit_of_layer, minlength=n_units).astype(np.float64)
        return value, norm
    value = sum_rows(layer_counts, unit_of_layer, n_units)
    if weighting == "models":
        n = value.sum(axis=-1, keepdims=True)
        value = value / np.where(n > 0, n, 1.0)
    return value, np.ones(n_units, dtype=np.float64)


def group_mass(value: np.ndarray, norm: np.ndarray, unit_group: np.ndarray, n_groups: int, weighting: str, multiplicity: np.ndarray | None = None) -> np.ndarray:
    """Each group's mass from its units (``multiplicity``: how often each unit is drawn, for the
    bootstrap; default once). Filters weighting gives pooled counts; the others a mean of normalised
    histograms (sum 1 per component)."""
    w = np.ones(len(unit_group)) if multiplicity is None else np.asarray(multiplicity, dtype=np.float64)
    mass = sum_rows(value * w.reshape((-1,) + (1,) * (value.ndim - 1)), unit_group, n_groups)
    if weighting == "filters":
        return mass
    denom = np.bincount(unit_group, weights=w * norm, minlength=n_groups)
    return mass / np.where(denom > 0, denom, 1.0).reshape((-1,) + (1,) * (value.ndim - 1))
