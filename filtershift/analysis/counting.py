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
def layer_span(lid: np.ndarray, lookup: np.ndarray) -> tuple[int, int]:
    """The first and last layer position (``lookup[lid]``, -1: not analysed) of a chunk's rows;
    ``(0, -1)`` when no row is analysed."""
    lo = np.iinfo(np.int64).max
    hi = -1
    for r in range(len(lid)):
        p = lookup[lid[r]]
        if p >= 0:
            lo = min(lo, p)
            hi = max(hi, p)
    return (lo, hi) if hi >= 0 else (0, -1)


@numba.njit(nogil=True, cache=True)
def range_prepare(
    x: np.ndarray,  # (rows, 9) float32: a store chunk as stored
    lid: np.ndarray,  # (rows,) int: layer_id of each row
    lookup: np.ndarray,  # layer_id -> layer position, -1 where not analysed
    lo: int,  # the chunk's first layer position (local positions are ``position - lo``)
    start: int,  # the first row of ``x`` to take
    scaled: bool,  # divide each row by its max |w| (an all-zero row by 1)
    mean: np.ndarray,  # (9,) the PCA mean
    y: np.ndarray,  # out (S, 9) float64: the analysed rows, centred on the PCA mean
    n: np.ndarray,  # out (nl,) int64
    sums: np.ndarray,  # out (nl, 9) float64
    max_abs: np.ndarray,  # out (nl,) float64
    nonfinite: np.ndarray,  # out (nl,) int64: rows holding a NaN or Inf
) -> tuple[int, int]:
    """READ 2's work on one sub-block but the projection: from row ``start`` on, the next ``S``
    analysed rows (or all that are left) are written to ``y`` in the form the projection takes,
    ``prepare(x) - mean``, and added to the per-layer n, sums (of the raw weights) and max |w|;
    rows holding a NaN or Inf are counted (the caller refuses to go on: READ 3 bins only finite
    values). Returns (the row to start from next, the rows written).

    The same float64 operations in the same order as ``project(prepare(x, scaling, absmax), ...)``
    and the per-row sums did with numpy, so every value is bit-identical: ``max |w|`` propagates a
    NaN as ``np.maximum`` does, then ``w / m - mean``. Rows are taken as ``x[analysed]`` sliced into
    sub-blocks of ``S`` rows, so the caller's BLAS projects exactly the sub-blocks READ 3 projects.
    """
    rows = y.shape[0]
    m = 0
    r = start
    while r < x.shape[0] and m < rows:
        p = lookup[lid[r]]
        if p >= 0:
            layer = p - lo
            am = abs(np.float64(x[r, 0]))
            for k in range(1, 9):
                a = abs(np.float64(x[r, k]))
                if a > am or a != a:  # np.maximum: NaN wins
                    am = a
            n[layer] += 1
            max_abs[layer] = max(max_abs[layer], am)
            if not math.isfinite(am):
                nonfinite[layer] += 1
            d = (1.0 if am == 0.0 else am) if scaled else 1.0
            for k in range(9):
                w = np.float64(x[r, k])
                sums[layer, k] += w
                y[m, k] = (w / d if scaled else w) - mean[k]
            m += 1
        r += 1
    return r, m


@numba.njit(nogil=True, cache=True)
def coefficient_range(
    c: np.ndarray,  # (r, k) float64: PCA coefficients
    cmin: np.ndarray,  # out (k,) running minimum of each coefficient
    cmax: np.ndarray,  # out (k,) running maximum
) -> None:
    """Add the rows of ``c`` to the running minimum and maximum of each column."""
    for r in range(c.shape[0]):
        for k in range(c.shape[1]):
            cmin[k] = min(cmin[k], c[r, k])
            cmax[k] = max(cmax[k], c[r, k])


def symmetrise(scatter: np.ndarray) -> np.ndarray:
    """The full (…, 9, 9) scatter matrices from the upper triangles :func:`count_rows` fills."""
    lower = np.tril_indices(9, -1)
    scatter[..., lower[0], lower[1]] = scatter[..., lower[1], lower[0]]
    return scatter
