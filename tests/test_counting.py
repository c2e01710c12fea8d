"""The fused loops of READ 2 and READ 3 against numpy: ``numpy.histogram`` / ``histogram2d`` bins for
values on, and one ulp beside, every edge, and the layer statistics' sums row by row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from filtershift.analysis.counting import coefficient_range, count_rows, layer_span, range_prepare, symmetrise
from filtershift.analysis.histograms import bin_edges
from filtershift.analysis.pca import prepare, row_absmax
from filtershift.analysis.types import project

N_BINS, B2 = 70, 16
PAIRS = np.array([(i, i + 1) for i in range(8)])


def _edge_values(edges: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Values on every edge, one ulp either side of it, and uniform ones, shuffled."""
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    return rng.permutation(np.concatenate([near, rng.uniform(edges[0], edges[-1], n)]))[:n]


def _count(raw, c, local, edges, edges_2d, targets, n_hist, max_abs, layer_mean):
    nl = len(max_abs)
    out = {
        "counts": np.zeros((nl, 9, len(edges) - 1), np.int64), "n": np.zeros(nl, np.int64), "range_sum": np.zeros(nl),
        "n_sparse": np.zeros(nl, np.int64), "scatter": np.zeros((nl, 9, 9)),
        "hist2d": np.zeros((n_hist, len(PAIRS), B2, B2), np.int64),
    }
    used = np.arange(9)
    absmax = np.abs(raw).max(axis=1)
    count_rows(raw, c, local, absmax, edges, max_abs, layer_mean, used, edges_2d, PAIRS[:, 0], PAIRS[:, 1], targets,
               out["counts"], out["n"], out["range_sum"], out["n_sparse"], out["scatter"], out["hist2d"])
    out["scatter"] = symmetrise(out["scatter"])
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 600), st.integers(1, 5), st.floats(1e-6, 1e4))
def test_bins_are_numpy_histograms_and_sums_are_the_rows(seed, n_rows, nl, spread):
    rng = np.random.default_rng(seed)
    edges = bin_edges(-spread, spread * rng.uniform(0.2, 3), N_BINS)
    edges_2d = np.stack([bin_edges(edges[0] * rng.uniform(0.3, 1), edges[-1] * rng.uniform(0.3, 1), B2) for _ in range(9)])
    c = np.stack([_edge_values(edges_2d[k] if k % 2 else edges, rng, n_rows) for k in range(9)], axis=1)
    c[rng.random(c.shape) < 0.02] = edges[-1] * 1.5  # outside: clipped into the last bin, as READ 3 clips
    raw = rng.normal(size=(n_rows, 9)) * rng.choice([0.0, 1e-4, 1.0], size=(n_rows, 1))  # some sparse rows
    local = np.sort(rng.integers(0, nl, n_rows))  # rows of a layer are contiguous
    max_abs = np.array([np.abs(raw[local == k]).max(initial=0.0) for k in range(nl)])
    layer_mean = rng.normal(size=(nl, 9))
    targets = rng.integers(0, 3, size=(nl, 2))  # two 2-D histograms a layer counts into, of 3
    targets[:, 1] += 3
    got = _count(raw, c, local, edges, edges_2d, targets, 6, max_abs, layer_mean)

    clipped = np.clip(c, edges[0], edges[-1])
    expect_2d = np.zeros_like(got["hist2d"])
    for layer in range(nl):
        rows = local == layer
        for k in range(9):
            expect, _ = np.histogram(clipped[rows, k], bins=N_BINS, range=(edges[0], edges[-1]))
            np.testing.assert_array_equal(got["counts"][layer, k], expect)
        v = np.clip(clipped[rows], edges_2d[:, 0], edges_2d[:, -1])
        for p, (i, j) in enumerate(PAIRS):
            h, _, _ = np.histogram2d(v[:, i], v[:, j], bins=[edges_2d[i], edges_2d[j]])
            for t in targets[layer]:
                expect_2d[t, p] += h.astype(np.int64)
        d = raw[rows] - layer_mean[layer]
        assert got["n"][layer] == rows.sum()
        np.testing.assert_allclose(got["range_sum"][layer], np.ptp(raw[rows], axis=1).sum(), rtol=1e-12, atol=1e-300)
        assert got["n_sparse"][layer] == (np.abs(raw[rows]) < 0.01 * max_abs[layer]).all(axis=1).sum()
        np.testing.assert_allclose(got["scatter"][layer], d.T @ d, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got["hist2d"], expect_2d)


def test_values_on_the_right_edge_fall_in_the_last_bin():
    edges = bin_edges(-1.0, 1.0, N_BINS)
    edges_2d = np.tile(bin_edges(-1.0, 1.0, B2), (9, 1))
    c = np.array([[1.0] * 9, [-1.0] * 9, [np.nextafter(1.0, 0)] * 9])
    raw = np.ones((3, 9))
    got = _count(raw, c, np.zeros(3, np.intp), edges, edges_2d, np.zeros((1, 1), np.intp), 1, np.ones(1), np.zeros((1, 9)))
    assert (got["counts"][0, :, -1] == 2).all() and (got["counts"][0, :, 0] == 1).all()
    assert (got["hist2d"][0, :, -1, -1] == 2).all() and (got["hist2d"][0, :, 0, 0] == 1).all()


def _range(x, lid, lookup, scaling, mean, components, sub_rows):
    """READ 2's loops over one chunk as ``passes.range_block`` runs them, sub-blocks of ``sub_rows``."""
    lo, hi = layer_span(lid, lookup)
    nl = hi - lo + 1
    n, sums, max_abs, nonfinite = np.zeros(nl, np.int64), np.zeros((nl, 9)), np.zeros(nl), np.zeros(nl, np.int64)
    cmin, cmax = np.full(len(components), np.inf), np.full(len(components), -np.inf)
    y, r, blocks = np.empty((sub_rows, 9)), 0, []
    while r < len(x):
        r, m = range_prepare(x, lid, lookup, lo, r, scaling == "scaled", mean, y, n, sums, max_abs, nonfinite)
        if m:
            blocks.append(y[:m].copy())
            coefficient_range(y[:m] @ components.T, cmin, cmax)
    return lo, blocks, cmin, cmax, n, sums, max_abs, nonfinite


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 500), st.integers(1, 6), st.integers(1, 9), st.sampled_from(["scaled", "raw"]),
       st.integers(1, 64))
def test_range_loops_equal_numpy_bit_for_bit(seed, n_rows, nl, k, scaling, sub_rows):
    """The analysed rows, sub-blocks of ``x[analysed]`` as READ 3 slices them, each centred exactly
    as ``project(prepare(...))`` centres it; range, n, sums and max |w| as numpy finds them."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n_rows, 9)) * rng.choice([0.0, 1.0, 50.0], size=(n_rows, 1))).astype(np.float32)
    lid = np.sort(rng.integers(0, nl + 2, n_rows)).astype(np.int32)
    lookup = np.where(rng.random(nl + 2) < 0.7, np.arange(nl + 2) + 3, -1)  # some layers not analysed
    keep = lookup[lid] >= 0
    if not keep.any():
        assert layer_span(lid, lookup) == (0, -1)
        return
    mean, components = rng.normal(size=9), rng.normal(size=(k, 9))
    lo, blocks, cmin, cmax, n, sums, max_abs, nonfinite = _range(x, lid, lookup, scaling, mean, components, sub_rows)
    raw = np.asarray(x[keep], dtype=np.float64)
    pos = lookup[lid[keep]] - lo
    assert lo == lookup[lid[keep]].min() and len(n) == pos.max() + 1
    want = prepare(raw, scaling, row_absmax(raw)) - mean
    np.testing.assert_array_equal(np.concatenate(blocks), want)
    assert [len(b) for b in blocks] == [len(want[s : s + sub_rows]) for s in range(0, len(want), sub_rows)]
    # projected as READ 3 projects them: sub-blocks of x[analysed] (BLAS may round a row
    # differently in another sub-block size)
    c = np.concatenate([project(prepare(raw[s : s + sub_rows], scaling, row_absmax(raw[s : s + sub_rows])), mean, components)
                        for s in range(0, len(raw), sub_rows)])
    np.testing.assert_array_equal(cmin, c.min(axis=0))
    np.testing.assert_array_equal(cmax, c.max(axis=0))
    np.testing.assert_array_equal(n, np.bincount(pos, minlength=len(n)))
    assert not nonfinite.any()
    for layer in range(len(n)):
        rows = raw[pos == layer]
        np.testing.assert_allclose(sums[layer], rows.sum(axis=0), rtol=1e-12, atol=1e-12)
        assert max_abs[layer] == np.abs(rows).max(initial=0.0)


def test_non_finite_rows_are_counted_per_layer_and_never_binned_outside():
    x = np.ones((6, 9), np.float32)
    x[1, 4], x[4, 0], x[5, 8] = np.nan, np.inf, -np.inf
    lid = np.array([0, 0, 0, 1, 1, 1], np.int32)
    with np.errstate(invalid="ignore"):
        *_, nonfinite = _range(x, lid, np.array([0, 1]), "scaled", np.zeros(9), np.eye(9), 4)
    np.testing.assert_array_equal(nonfinite, [1, 2])
    # READ 3 is not run on such rows, but even NaN coefficients must land inside the arrays
    edges, edges_2d = bin_edges(-1.0, 1.0, N_BINS), np.tile(bin_edges(-1.0, 1.0, B2), (9, 1))
    c = np.full((3, 9), np.nan)
    got = _count(np.ones((3, 9)), c, np.zeros(3, np.intp), edges, edges_2d, np.zeros((1, 1), np.intp), 1, np.ones(1), np.zeros((1, 9)))
    assert got["counts"].sum() == 27 and got["hist2d"].sum() == 3 * len(PAIRS)
