"""Fused per-row loops of READ 2 and READ 3 (numba). In READ 3 one loop over the rows of a
sub-block does what took some twenty numpy calls and their temporaries: the 1-D bin of every
coefficient, each row's cells of the 2-D histograms, and the layer statistics' sums (n, range,
sparse filters, scatter about the layer mean); in READ 2 one loop takes the coefficient range and
the per-layer n, sums and max |w|. Pure: arrays in, arrays updated in place.

The coefficients themselves are projected by numpy (BLAS) in the caller, exactly as READ 2 projects
them, so the bin edges READ 2 found and the values binned here are the same numbers. The bin is
``numpy.histogram``'s (the ``i`` with ``edges[i] <= v < edges[i + 1]``, the last bin closed), read
off the scaled position ``(v - first) * n / (last - first)``. That is off by one at most where a
value lies within a few ulps of an edge, so values whose fractional position is within 1e-6 of an
integer (about 2 in a million) are re-binned against the edges themselves (``searchsorted``).

Why numba (already installed: datashader needs it): measured on 5 chunks of (262144, 9) of the
20M bench database, one thread, old and new interleaved, medians of 25 (5 chunks x 5 runs):

- READ 3's block: 114-127 ms a chunk with numpy (bincounts of computed codes, ``np.add.at`` /
  ``reduceat`` segment sums, per-segment BLAS scatter), 68-71 ms with this loop (1.7-1.8x), of
  which 38 ms is the loop and the rest numpy's projection;
- READ 2's block: 38.5 ms with numpy (column reductions, ``np.add.at`` / ``reduceat``), 22.5 ms
  with its loop (1.7x).

Compiled once per process (2.4 s) and cached on disk (``cache=True``: 0.5 s to load); ``nogil``
lets the threaded scheduler run two blocks at once. Arrays are never passed to a helper inside
the row loops: each such call costs two atomic reference-count updates (measured: 6x slower).
"""

from __future__ import annotations

import math

import numba
import numpy as np

EDGE_SLACK = 1e-6  # fractional bin positions this close to an edge are re-binned by search


@numba.njit(nogil=True, cache=True)
def _search(edges: np.ndarray, v: float) -> int:
    """``searchsorted(edges, v, side="right") - 1``: the bin of a value within 1e-6 of an edge."""
    return np.searchsorted(edges, v, side="right") - 1


@numba.njit(nogil=True, cache=True)
def count_rows(
    raw: np.ndarray,  # (r, 9) float64: the filters as stored
    c: np.ndarray,  # (r, 9) float64: their PCA coefficients
    local: np.ndarray,  # (r,) int: layer position relative to the chunk's first layer
    absmax: np.ndarray,  # (r,) float64: max |w| of each row
    edges: np.ndarray,  # (n_bins + 1,) shared 1-D edges
    max_abs: np.ndarray,  # (nl,) max |w| of each layer (READ 2), local positions
    layer_mean: np.ndarray,  # (nl, 9) mean of each layer (READ 2), local positions
    used: np.ndarray,  # (u,) components that appear in a 2-D pair
    edges_2d: np.ndarray,  # (u, b2 + 1) edges of those components
    pair_i: np.ndarray,  # (P,) index into ``used`` of each pair's first component
    pair_j: np.ndarray,  # (P,) ... and of its second
    targets: np.ndarray,  # (nl, T) the 2-D histograms (first axis of ``hist2d``) a layer counts into
    counts: np.ndarray,  # out (nl, 9, n_bins) int64
    n: np.ndarray,  # out (nl,) int64
    range_sum: np.ndarray,  # out (nl,) float64
    n_sparse: np.ndarray,  # out (nl,) int64
    scatter: np.ndarray,  # out (nl, 9, 9) float64, upper triangle only (see :func:`symmetrise`)
    hist2d: np.ndarray,  # out (H, P, b2, b2) int64
) -> None:
    """Add the rows of one sub-block to the per-layer counts and sums and to the 2-D histograms.

    Coefficients are clipped to the edges first, as the numpy rule clips them; they must be finite
    (READ 2 checks the filters), though no value, not even NaN, makes the loop write outside its
    arrays."""
    n_bins = len(edges) - 1
    first, last = edges[0], edges[-1]
    scale = n_bins / (last - first)
    b2 = edges_2d.shape[1] - 1
    u = len(used)
    first_2d = np.empty(u)
    last_2d = np.empty(u)
    scale_2d = np.empty(u)
    for a in range(u):
        first_2d[a] = edges_2d[a, 0]
        last_2d[a] = edges_2d[a, b2]
        scale_2d[a] = b2 / (last_2d[a] - first_2d[a])
    bins_2d = np.empty(u, dtype=np.int64)
    d = np.empty(9)
    c1 = np.empty(9)  # the row's coefficients clipped to the 1-D range (then to each 2-D range)
    for r in range(raw.shape[0]):
        layer = local[r]
        n[layer] += 1
        lo = raw[r, 0]
        hi = raw[r, 0]
        for k in range(9):
            w = raw[r, k]
            lo = min(lo, w)
            hi = max(hi, w)
            # clipped to READ 2's range: a no-op unless a value differs from READ 2's in the last bit
            v = min(max(c[r, k], first), last)
            c1[k] = v
            # the bin read off the scaled position, written out here and below (not in a helper,
            # see the module docstring); the edges travel to _search only on the rare path
            t = (v - first) * scale
            b = int(t)
            f = t - b
            if f < EDGE_SLACK or f > 1.0 - EDGE_SLACK:
                b = _search(edges, v)
            counts[layer, k, min(max(b, 0), n_bins - 1)] += 1  # max: never outside, whatever v
            d[k] = w - layer_mean[layer, k]
        range_sum[layer] += hi - lo
        if absmax[r] < 0.01 * max_abs[layer]:  # all 9 |w| below the threshold <=> their max is
            n_sparse[layer] += 1
        for i in range(9):
            for j in range(i, 9):
                scatter[layer, i, j] += d[i] * d[j]
        if u:
            for a in range(u):
                v = min(max(c1[used[a]], first_2d[a]), last_2d[a])
                t = (v - first_2d[a]) * scale_2d[a]
                b = int(t)
                f = t - b
                if f < EDGE_SLACK or f > 1.0 - EDGE_SLACK:
                    b = _search(edges_2d[a], v)
                bins_2d[a] = min(max(b, 0), b2 - 1)
            for t in range(targets.shape[1]):
                h = targets[layer, t]
                for p in range(len(pair_i)):
                    hist2d[h, p, bins_2d[pair_i[p]], bins_2d[pair_j[p]]] += 1


@numba.njit(nogil=True, cache=True)
def range_rows(
    raw: np.ndarray,  # (r, 9) float64: the filters as stored
    c: np.ndarray,  # (r, k) float64: their PCA coefficients
    local: np.ndarray,  # (r,) int: layer position relative to the chunk's first layer
    absmax: np.ndarray,  # (r,) float64: max |w| of each row (NaN where the row holds a NaN)
    cmin: np.ndarray,  # out (k,) running minimum of each coefficient
    cmax: np.ndarray,  # out (k,) running maximum
    n: np.ndarray,  # out (nl,) int64
    sums: np.ndarray,  # out (nl, 9) float64
    max_abs: np.ndarray,  # out (nl,) float64
    nonfinite: np.ndarray,  # out (nl,) int64: rows holding a NaN or Inf
) -> None:
    """Add the rows of one sub-block to the coefficient range and the per-layer n, sums, max |w|,
    and count the rows that hold a NaN or Inf (the caller refuses to go on: READ 3 bins only
    finite values)."""
    for r in range(raw.shape[0]):
        layer = local[r]
        n[layer] += 1
        max_abs[layer] = max(max_abs[layer], absmax[r])
        if not math.isfinite(absmax[r]):  # np.maximum propagates NaN: a NaN or Inf anywhere in the row
            nonfinite[layer] += 1
        for k in range(raw.shape[1]):
            sums[layer, k] += raw[r, k]
        for k in range(c.shape[1]):
            cmin[k] = min(cmin[k], c[r, k])
            cmax[k] = max(cmax[k], c[r, k])


def symmetrise(scatter: np.ndarray) -> np.ndarray:
    """The full (…, 9, 9) scatter matrices from the upper triangles :func:`count_rows` fills."""
    lower = np.tril_indices(9, -1)
    scatter[..., lower[0], lower[1]] = scatter[..., lower[1], lower[0]]
    return scatter
