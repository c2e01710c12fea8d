"""The fused loops of READ 2 and READ 3 against numpy: ``numpy.histogram`` / ``histogram2d`` bins for
values on, and one ulp beside, every edge, and the layer statistics' sums row by row."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from filtershift.analysis.counting import count_rows, range_rows, symmetrise
from filtershift.analysis.histograms import bin_edges

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


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 500), st.integers(1, 6), st.integers(1, 9))
def test_range_rows_are_column_extremes_and_layer_sums(seed, n_rows, nl, k):
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n_rows, 9)) * rng.choice([0.0, 1.0, 50.0], size=(n_rows, 1))
    c = rng.normal(size=(n_rows, k)) * 10
    local = np.sort(rng.integers(0, nl, n_rows))
    cmin, cmax = np.full(k, np.inf), np.full(k, -np.inf)
    n, sums, max_abs, nonfinite = np.zeros(nl, np.int64), np.zeros((nl, 9)), np.zeros(nl), np.zeros(nl, np.int64)
    half = n_rows // 2  # two calls, as two sub-blocks
    for rows in (slice(0, half), slice(half, n_rows)):
        range_rows(raw[rows], c[rows], local[rows], np.abs(raw[rows]).max(axis=1), cmin, cmax, n, sums, max_abs, nonfinite)
    assert not nonfinite.any()
    np.testing.assert_array_equal(cmin, c.min(axis=0))
    np.testing.assert_array_equal(cmax, c.max(axis=0))
    np.testing.assert_array_equal(n, np.bincount(local, minlength=nl))
    for layer in range(nl):
        rows = raw[local == layer]
        np.testing.assert_allclose(sums[layer], rows.sum(axis=0), rtol=1e-12, atol=1e-12)
        assert max_abs[layer] == np.abs(rows).max(initial=0.0)


def test_non_finite_rows_are_counted_per_layer_and_never_binned_outside():
    raw = np.ones((6, 9))
    raw[1, 4], raw[4, 0], raw[5, 8] = np.nan, np.inf, -np.inf
    local = np.array([0, 0, 0, 1, 1, 1])
    nonfinite = np.zeros(2, np.int64)
    with np.errstate(invalid="ignore"):
        absmax = np.abs(raw).max(axis=1)
    range_rows(raw, raw.copy(), local, absmax, np.full(9, np.inf), np.full(9, -np.inf), np.zeros(2, np.int64),
               np.zeros((2, 9)), np.zeros(2), nonfinite)
    np.testing.assert_array_equal(nonfinite, [1, 2])
    # READ 3 is not run on such rows, but even NaN coefficients must land inside the arrays
    edges, edges_2d = bin_edges(-1.0, 1.0, N_BINS), np.tile(bin_edges(-1.0, 1.0, B2), (9, 1))
    c = np.full((3, 9), np.nan)
    got = _count(np.ones((3, 9)), c, np.zeros(3, np.intp), edges, edges_2d, np.zeros((1, 1), np.intp), 1, np.ones(1), np.zeros((1, 9)))
    assert got["counts"].sum() == 27 and got["hist2d"].sum() == 3 * len(PAIRS)
