"""The analysis against an independent in-memory reference (numpy / scipy / scikit-learn only; no
filtershift code computes the expected values), on small databases chunked 1, 2 and 4 ways.

What "agrees" means here: PCA components and explained-variance ratios to 1e-6, every D matrix to
1e-6 relative, layer statistics exactly for counts and flags (sparsity, degenerate, n) and to
1e-12 relative for the float ones (they are sums in another order; 1e-9 absolute for the entropy,
an eigen-decomposition instead of an SVD).
"""

from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.decomposition import PCA

from filtershift.analysis.plan import make_plan
from filtershift.analysis.results import load_results
from filtershift.analysis.compute import analyze
from filtershift.store import write_database

EPS32 = 1.1920929e-07
TASKS = ["classification", "segmentation", "gan"]
DATA_TYPES = ["natural", "medical"]
FAMILIES = ["resnet", "vgg", "unet"]


def synthetic_tables(n_models: int = 7, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Filters with structure (a few dominant directions, per-model scale and offset), an all-zero
    layer, a layer of half-zero filters, a one-filter layer; the two tables of docs/design.md §3."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(9, 9)) * np.linspace(2.0, 0.2, 9)[:, None]
    models, layers, parts = [], [], []
    row = layer_id = 0
    for m in range(n_models):
        n_conv = int(rng.integers(2, 6))
        models.append(dict(
            model_id=m, name=f"model{m}", path=f"m{m}.pt", format="torch", sha256=f"{m:064x}",
            task=TASKS[m % 3], data_type=DATA_TYPES[m % 2], dataset=None if m == 3 else f"set{m % 2}",
            family=FAMILIES[(m // 2) % 3], n_layers=n_conv, n_filters=0, status="ok", error="",
        ))
        for ci in range(n_conv):
            n = 1 if (m, ci) == (2, 1) else int(rng.integers(20, 200))
            w = (rng.normal(size=(n, 9)) @ mixing * rng.uniform(0.05, 1.0) + rng.normal(size=9) * 0.3).astype(np.float32)
            if (m, ci) == (1, 0):
                w[: n // 2] = 0.0
            if (m, ci) == (4, 1):
                w[:] = 0.0
            r = ci / (n_conv - 1)
            layers.append(dict(
                layer_id=layer_id, model_id=m, name=f"conv{ci}", conv_index=ci, n_conv=n_conv, depth=r,
                depth_decile=max(math.ceil(round(10 * r, 9)) - 1, 0), in_channels=4, out_channels=n, groups=1,
                start=row, stop=row + n, n_filters=n,
            ))
            parts.append(w)
            row += n
            layer_id += 1
    layers_df = pd.DataFrame(layers).astype({"layer_id": "int32", "model_id": "int32", "depth_decile": "int8"})
    return np.concatenate(parts), pd.DataFrame(models), layers_df


FILTERS, MODELS, LAYERS = synthetic_tables()
N = len(FILTERS)


# ------------------------------------------------------------------------------------------------
# The reference (independent of the package)


def ref_scaled(w: np.ndarray) -> np.ndarray:
    w = w.astype(np.float64)
    m = np.abs(w).max(axis=1, keepdims=True)
    return np.divide(w, m, out=np.zeros_like(w), where=m > 0)


def ref_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pca = PCA(n_components=9, svd_solver="full").fit(x)
    comps = pca.components_.copy()
    for row in comps:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return pca.mean_, comps, pca.explained_variance_ratio_


def ref_probabilities(c: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = []
    for i in range(9):
        dens, _ = np.histogram(c[:, i], bins=70, range=(lo, hi), density=True)
        dens[dens == 0] = EPS32
        out.append(dens / dens.sum())
    return np.array(out)


def ref_d(p: np.ndarray, q: np.ndarray, ratio: np.ndarray) -> float:
    return float(sum(ratio[i] * (scipy.stats.entropy(p[i], q[i]) + scipy.stats.entropy(q[i], p[i])) for i in range(9)))


def ref_analysis(w: np.ndarray, table: pd.DataFrame, by: str, scaled: bool = True, fit_rows: np.ndarray | None = None):
    """(mean, components, ratio, labels, D) for rows ``w`` whose layer rows are ``table``."""
    x = ref_scaled(w) if scaled else w.astype(np.float64)
    mean, comps, ratio = ref_pca(x if fit_rows is None else x[fit_rows])
    c = (x - mean) @ comps.T
    lo, hi = c.min(), c.max()
    labels_of_row = np.repeat(table[by].astype(str).to_numpy(), (table["stop"] - table["start"]).to_numpy())
    labels = sorted(set(labels_of_row), key=lambda s: (float(s) if s.lstrip("-").isdigit() else math.inf, s))
    probs = [ref_probabilities(c[labels_of_row == g], lo, hi) for g in labels]
    d = np.array([[ref_d(p, q, ratio) for q in probs] for p in probs])
    return mean, comps, ratio, labels, d


def ref_layer_stats(w: np.ndarray, layers: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for layer in layers.itertuples():
        x = w[layer.start : layer.stop].astype(np.float64)
        n = len(x)
        t = np.abs(x).max() * 0.01
        s = 1.0 if np.abs(x).max() == 0 else float(np.mean(np.all(np.abs(x) < t, axis=1)))
        sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
        var = sv**2 / max(n - 1, 1)
        h = 0.0 if var.sum() == 0 else float(scipy.stats.entropy(var / var.sum(), base=10))
        th = 1.2618047 / (1 + np.exp(-0.88767525 * (np.log2(n) - 2.30436435))) - 0.31050834
        rows.append(dict(layer_id=layer.layer_id, n_filters=n, mean_range=float(np.mean(x.max(1) - x.min(1))), sparsity=s,
                         variance_entropy=h, threshold=th, degenerate=bool(h >= th - 0.02 or (h < 0.5 and s >= 0.14))))
    return pd.DataFrame(rows)


def run_analysis(tmp_path, n_chunks: int, by=("task",), **plan_kwargs):
    chunk_rows = -(-N // n_chunks)
    with dask.config.set(scheduler="sync"):
        db = write_database(tmp_path / f"db{n_chunks}", FILTERS, MODELS, LAYERS, chunk_rows=chunk_rows)
        assert db.filters().numblocks[0] == n_chunks
        plan = make_plan(db.models, db.layers, db.chunk_rows, by=list(by), **plan_kwargs)
        analyze(db, plan, "t", log=False)
    return load_results(db.path, "t"), plan


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_chunks", [1, 2, 4])
@pytest.mark.parametrize("scaling", ["scaled", "raw"])
def test_matches_reference(tmp_path, n_chunks, scaling):
    by = ("task", "data_type", "family", "depth_decile", "model")
    res, _ = run_analysis(tmp_path, n_chunks, by=by, scaling=scaling)
    table = LAYERS.merge(MODELS[["model_id", "task", "data_type", "family", "name"]].rename(columns={"name": "model"}), on="model_id")
    mean, comps, ratio, _, _ = ref_analysis(FILTERS, table, "task", scaled=scaling == "scaled")
    np.testing.assert_allclose(res.pca.components, comps, atol=1e-6)
    np.testing.assert_allclose(res.pca.explained_variance_ratio, ratio, atol=1e-6)
    np.testing.assert_allclose(res.pca.mean, mean, atol=1e-9)
    assert res.pca.n_filters == N and res.pca.scaling == scaling
    for grouping in by:
        _, _, _, labels, d = ref_analysis(FILTERS, table, grouping, scaled=scaling == "scaled")
        got = res.shift(grouping)
        assert list(got.index) == labels and list(got.columns) == labels
        np.testing.assert_allclose(got.to_numpy(), d, rtol=1e-6, atol=1e-12)
        h = res.histograms(grouping)
        assert h.counts.sum(axis=(0, 2)).tolist() == [N] * 9


@pytest.mark.parametrize("n_chunks", [1, 2, 4])
def test_layer_statistics_match_reference(tmp_path, n_chunks):
    res, _ = run_analysis(tmp_path, n_chunks)
    got = res.layer_stats().sort_values("layer_id").reset_index(drop=True)
    ref = ref_layer_stats(FILTERS, LAYERS)
    assert got["layer_id"].tolist() == ref["layer_id"].tolist()
    assert got["n_filters"].tolist() == ref["n_filters"].tolist()
    assert got["sparsity"].tolist() == ref["sparsity"].tolist()
    assert got["degenerate"].tolist() == ref["degenerate"].tolist()
    np.testing.assert_allclose(got["mean_range"], ref["mean_range"], rtol=1e-12)
    np.testing.assert_allclose(got["threshold"], ref["threshold"], rtol=1e-12)
    np.testing.assert_allclose(got["variance_entropy"], ref["variance_entropy"], rtol=0, atol=1e-9)
    # the special layers behave as docs/design.md §2 says
    assert got.loc[got["layer_id"] == LAYERS.query("model_id == 4 and conv_index == 1")["layer_id"].item(), "sparsity"].item() == 1.0
    # per model mean range per depth decile: the mean of the layers' means
    mdr = res.model_depth_range()
    expect = ref.merge(LAYERS[["layer_id", "model_id", "depth_decile"]]).groupby(["model_id", "depth_decile"])["mean_range"].mean()
    np.testing.assert_allclose(mdr.set_index(["model_id", "depth_decile"])["mean_range"].to_numpy(), expect.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("n_chunks", [1, 4])
def test_where_and_fit_on_match_reference(tmp_path, n_chunks):
    res, plan = run_analysis(tmp_path, n_chunks, by=("task",), where="data_type == 'natural'", fit_on="depth_decile <= 4")
    table = LAYERS.merge(MODELS[["model_id", "task", "data_type"]], on="model_id").sort_values("start")
    fit_mask_all = np.repeat(table["depth_decile"].to_numpy() <= 4, (table["stop"] - table["start"]).to_numpy())
    fit = ref_pca(ref_scaled(FILTERS[fit_mask_all]))
    sub = table[table["data_type"] == "natural"]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(sub["start"], sub["stop"])])
    np.testing.assert_allclose(res.pca.components, fit[1], atol=1e-6)
    np.testing.assert_allclose(res.pca.explained_variance_ratio, fit[2], atol=1e-6)
    x = ref_scaled(FILTERS[rows])
    c = (x - fit[0]) @ fit[1].T
    lab = np.repeat(sub["task"].to_numpy(), (sub["stop"] - sub["start"]).to_numpy())
    labels = sorted(set(lab))
    probs = [ref_probabilities(c[lab == g], c.min(), c.max()) for g in labels]
    d = np.array([[ref_d(p, q, fit[2]) for q in probs] for p in probs])
    got = res.shift("task")
    assert list(got.index) == labels
    np.testing.assert_allclose(got.to_numpy(), d, rtol=1e-6, atol=1e-12)
    assert res.pca.n_filters == int(fit_mask_all.sum()) and res.pca.n_analysed == len(rows)


@pytest.mark.parametrize("weighting", ["layers", "models"])
def test_weightings_match_reference(tmp_path, weighting):
    res, _ = run_analysis(tmp_path, 2, by=("task",), weighting=weighting)
    table = LAYERS.merge(MODELS[["model_id", "task"]], on="model_id")
    x = ref_scaled(FILTERS)
    mean, comps, ratio = ref_pca(x)
    c = (x - mean) @ comps.T
    lo, hi = c.min(), c.max()
    width = (hi - lo) / 70
    unit = "layer_id" if weighting == "layers" else "model_id"
    labels = sorted(table["task"].unique())
    probs = []
    for g in labels:
        members = []
        for _, part in table[table["task"] == g].groupby(unit):
            rows = np.concatenate([np.arange(a, b) for a, b in zip(part["start"], part["stop"])])
            members.append([np.histogram(c[rows, i], bins=70, range=(lo, hi))[0] / len(rows) for i in range(9)])
        dens = np.mean(members, axis=0) / width
        dens[dens == 0] = EPS32
        probs.append(dens / dens.sum(axis=1, keepdims=True))
    d = np.array([[ref_d(p, q, ratio) for q in probs] for p in probs])
    np.testing.assert_allclose(res.shift("task").to_numpy(), d, rtol=1e-6, atol=1e-12)


def test_model_pairs_and_counts_match_reference(tmp_path):
    res, _ = run_analysis(tmp_path, 4, by=("task", "model"))
    x = ref_scaled(FILTERS)
    mean, comps, ratio = ref_pca(x)
    c = (x - mean) @ comps.T
    probs = {}
    for m, part in LAYERS.groupby("model_id"):
        rows = np.concatenate([np.arange(a, b) for a, b in zip(part["start"], part["stop"])])
        probs[m] = ref_probabilities(c[rows], c.min(), c.max())
    pairs = res.model_pairs()
    assert len(pairs) == len(MODELS) * (len(MODELS) - 1) // 2
    for row in pairs.itertuples():
        assert row.d == pytest.approx(ref_d(probs[row.model_a], probs[row.model_b], ratio), rel=1e-6)
        a, b = MODELS.set_index("model_id").loc[[row.model_a, row.model_b]].to_dict("records")
        assert row.same_task == (a["task"] == b["task"])
        assert row.same_family == (a["family"] == b["family"])
        assert row.same_dataset == (a["dataset"] is not None and b["dataset"] is not None and a["dataset"] == b["dataset"])
    counts = res.counts("task").set_index("group")
    table = LAYERS.merge(MODELS[["model_id", "task"]], on="model_id")
    assert counts["n_filters"].to_dict() == table.groupby("task")["n_filters"].sum().to_dict()
    assert counts["n_models"].to_dict() == table.groupby("task")["model_id"].nunique().to_dict()
    assert counts["n_layers"].to_dict() == table.groupby("task").size().to_dict()


def test_histograms_2d_match_reference(tmp_path):
    res, _ = run_analysis(tmp_path, 2, by=("task",))
    x = ref_scaled(FILTERS)
    mean, comps, _ = ref_pca(x)
    c = (x - mean) @ comps.T
    h = res.histograms_2d("all")
    for k, (i, j) in enumerate(h.pairs):
        ranges = [(c[:, i].min(), c[:, i].max()), (c[:, j].min(), c[:, j].max())]
        expect, _, _ = np.histogram2d(c[:, i], c[:, j], bins=64, range=ranges)
        np.testing.assert_array_equal(h.counts[0, k], expect)
    per_task = res.histograms_2d("task")
    assert per_task.counts.sum(axis=0).tolist() == h.counts[0].tolist()


def test_incremental_pca_agrees_with_covariance(tmp_path):
    res_cov, _ = run_analysis(tmp_path / "a", 4, by=("task",))
    res_inc, _ = run_analysis(tmp_path / "b", 4, by=("task",), pca="incremental")
    assert res_inc.pca.method == "incremental" and res_cov.pca.method == "covariance"
    np.testing.assert_allclose(res_inc.pca.components, res_cov.pca.components, atol=1e-6)
    np.testing.assert_allclose(res_inc.pca.explained_variance_ratio, res_cov.pca.explained_variance_ratio, atol=1e-6)
    np.testing.assert_allclose(res_inc.shift("task").to_numpy(), res_cov.shift("task").to_numpy(), rtol=1e-5, atol=1e-9)


def test_bootstrap_intervals(tmp_path):
    res, _ = run_analysis(tmp_path, 2, by=("task", "model"), bootstrap=50, seed=3)
    ci = res.shift_ci("task")
    assert ci is not None and len(ci) == 6  # 3 groups: 3 diagonal + 3 pairs
    assert (ci["low"] <= ci["high"]).all() and (ci["low"] >= 0).all()
    diag = ci[ci["group_a"] == ci["group_b"]]
    assert (diag[["d", "low", "high"]] == 0).all().all()
    assert res.shift_ci("model") is None  # one model per group: nothing to resample
    again, _ = run_analysis(tmp_path / "again", 2, by=("task",), bootstrap=50, seed=3)
    pd.testing.assert_frame_equal(again.shift_ci("task"), ci)
