"""Properties of the analysis maths (hypothesis) and of the plan (inspected without running it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from filtershift.analysis.histograms import EPS, bin_edges, bin_indices, distributions
from filtershift.analysis.layerstats import threshold, variance_entropy
from filtershift.analysis.pca import Moments, flip_signs, scale_filters
from filtershift.analysis.plan import PlanError, chunk_blocks, make_plan
from filtershift.analysis.divergence import shift_matrix

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
filters_st = hnp.arrays(np.float32, st.tuples(st.integers(1, 60), st.just(9)), elements=st.one_of(st.just(0.0), finite))


def _dists(draw_counts: np.ndarray) -> np.ndarray:
    edges = np.linspace(-1.0, 1.0, draw_counts.shape[-1] + 1)
    return distributions(draw_counts, edges)


counts_st = hnp.arrays(np.int64, st.tuples(st.integers(1, 6), st.just(9), st.integers(2, 12)), elements=st.integers(0, 50))
weights_st = hnp.arrays(np.float64, 9, elements=st.floats(0, 1, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(counts_st, weights_st)
def test_shift_matrix_is_a_divergence(counts, weights):
    d = shift_matrix(_dists(counts), weights)
    assert (d >= 0).all()
    assert np.array_equal(d, d.T)
    assert (np.diag(d) == 0).all()
    same = shift_matrix(_dists(np.concatenate([counts[:1], counts[:1]])), weights)
    assert same[0, 1] == 0.0


@settings(max_examples=60, deadline=None)
@given(counts_st)
def test_distributions_sum_to_one_and_floor_empty_bins(counts):
    p = _dists(counts)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    assert (p > 0).all()
    width = 2.0 / counts.shape[-1]
    total = counts.sum(axis=-1, keepdims=True)
    density = np.where(counts > 0, counts / np.where(total > 0, total, 1) / width, EPS)
    np.testing.assert_allclose(p, density / density.sum(axis=-1, keepdims=True), rtol=1e-12)


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(-1e6, 1e6, allow_nan=False)), st.integers(1, 80))
def test_binning_is_numpy_histogram_and_counts_sum_to_n(values, n_bins):
    edges = bin_edges(values.min(), values.max(), n_bins)
    idx = bin_indices(values, edges)
    counts = np.bincount(idx, minlength=n_bins)
    assert counts.sum() == len(values)
    expect, expect_edges = np.histogram(values, bins=n_bins, range=(values.min(), values.max()))
    np.testing.assert_array_equal(edges, expect_edges)
    np.testing.assert_array_equal(counts, expect)


@settings(max_examples=60, deadline=None)
@given(filters_st)
def test_scaled_filters_have_unit_max_except_all_zero(w):
    s = scale_filters(w)
    m = np.abs(s).max(axis=1)
    zero = (w == 0).all(axis=1)
    assert (m[~zero] == 1.0).all()
    assert (s[zero] == 0).all()


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 80), st.just(9)), elements=st.floats(-100, 100, allow_nan=False)), st.integers(1, 79))
def test_moments_merge_equals_moments_of_all(x, cut):
    cut = min(cut, len(x) - 1)
    merged = Moments.of(x[:cut]).merge(Moments.of(x[cut:])).merge(Moments.empty())
    whole = Moments.of(x)
    assert merged.n == whole.n
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-6)


def test_sign_convention_and_entropy_edge_cases():
    c = flip_signs(np.array([[0.1, -0.9, 0.2], [-0.5, 0.5, 0.1]]))
    assert c[0, 1] > 0 and c[1, 0] > 0  # ties: the first largest entry decides
    assert variance_entropy(np.zeros((9, 9))) == 0.0
    assert variance_entropy(np.eye(9)) == pytest.approx(np.log10(9))
    assert threshold(2**2.30436435) == pytest.approx(1.2618047 / 2 - 0.31050834)


# ------------------------------------------------------------------------------------------------
# The plan


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    models = pd.DataFrame({"model_id": [0, 1, 2], "name": ["a", "b", "b"], "task": ["x", "y", None], "data_type": ["n", "n", "m"]})
    sizes = [5, 7, 3, 9, 4]
    starts = np.cumsum([0] + sizes[:-1])
    layers = pd.DataFrame({
        "layer_id": [10, 11, 12, 13, 14], "model_id": [0, 0, 1, 2, 2], "name": ["c0", "c1", "c0", "c0", "c1"],
        "conv_index": [0, 1, 0, 0, 1], "depth_decile": [0, 9, 0, 0, 9], "start": starts, "stop": starts + sizes, "n_filters": sizes,
    })
    return models, layers


def test_plan_groupings_lookups_and_blocks():
    models, layers = _tables()
    plan = make_plan(models, layers, chunk_rows=8, by=["task", "model", "task+data_type", "depth_decile"])
    assert plan.n_analysed == 28 and plan.blocks == (0, 1, 2, 3)
    task = plan.grouping("task")
    assert task.labels == ("x", "y", "NA") and task.codes.tolist() == [0, 0, 1, 2, 2]
    assert plan.grouping("model").labels == ("0:a", "1:b", "2:b")  # duplicate names are disambiguated
    assert plan.grouping("task+data_type").labels == ("x / n", "y / n", "NA / m")
    assert plan.grouping("depth_decile").labels == ("0", "9")
    assert plan.layer_lookup[[10, 14]].tolist() == [0, 4] and plan.layer_lookup[:10].tolist() == [-1] * 10
    assert "by task: 3 groups" in plan.describe()


def test_plan_where_selects_layers_and_only_their_chunks():
    models, layers = _tables()
    plan = make_plan(models, layers, chunk_rows=8, by=["task"], where="data_type == 'm'", fit_on="conv_index == 0")
    assert plan.layers["layer_id"].tolist() == [13, 14] and plan.n_analysed == 13
    assert plan.blocks == (1, 2, 3)  # rows 15..27
    assert plan.fit_lookup.nonzero()[0].tolist() == [10, 12, 13] and plan.n_fit == 17
    assert plan.fit_blocks == (0, 1, 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(by=["nope"]), "no column nope"),
    (dict(where="task =="), "could not be evaluated"),
    (dict(where="conv_index + 1"), "must be a condition"),
    (dict(where="task == 'zzz'"), "selects no filters"),
    (dict(scaling="log"), "--scaling must be one of"),
    (dict(fit_on="conv_index == 7"), "fewer than 9"),
])
def test_plan_errors_say_how_to_fix(kwargs, message):
    models, layers = _tables()
    with pytest.raises(PlanError, match=message):
        make_plan(models, layers, chunk_rows=8, **kwargs)


def test_chunk_blocks():
    assert chunk_blocks(np.array([0, 10]), np.array([10, 11]), 5) == (0, 1, 2)
    assert chunk_blocks(np.array([3, 7]), np.array([3, 8]), 5) == (1,)


@settings(max_examples=40, deadline=None)
@given(filters_st)
def test_per_matrix_layer_statistics_are_the_aggregated_formulas(w):
    from filtershift.analysis.layerstats import is_degenerate, layer_entropy, layer_sparsity, layer_statistics, scatter

    x = w.astype(np.float64)
    a = np.abs(x)
    layers = pd.DataFrame({"layer_id": [0], "model_id": [0]})
    n_sparse = int((a.max(axis=1) < 0.01 * a.max()).sum())
    row = layer_statistics(layers, np.array([len(x)]), np.array([0.0]), np.array([a.max()]), np.array([n_sparse]), scatter(x)[None]).iloc[0]
    assert layer_entropy(x) == row["variance_entropy"] and layer_sparsity(x) == row["sparsity"]
    assert is_degenerate(x) == row["degenerate"]
