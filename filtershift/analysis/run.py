"""Run an analysis plan over a database and write ``DB/results/NAME/``: the orchestration.

The three reads of the filters are in :mod:`filtershift.analysis.passes` (READ 1, 2, 3); all the
rest here works on their small outputs. Whatever dask client is current executes the passes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from threadpoolctl import threadpool_limits

from filtershift.analysis import results as res
from filtershift.analysis.groups import bootstrap_shift, group_counts, group_histograms, model_pairs
from filtershift.analysis.histograms import bin_edges
from filtershift.analysis.layerstats import layer_statistics, model_depth_range
from filtershift.analysis.passes import HistogramContext, fit_rows, histogram_pass, moments_pass, range_pass
from filtershift.analysis.pca import fit_incremental, pca_from_moments
from filtershift.analysis.plan import AnalysisPlan
from filtershift.analysis.divergence import shift_matrix
from filtershift.store import Database, DatabaseError

VERSIONED_PACKAGES = ("filtershift", "numpy", "pandas", "dask", "distributed", "dask-ml", "zarr", "scikit-learn", "pyarrow")
PASSES = {
    "read_1_moments": "PCA fit: count, mean and centred scatter of the fit filters (covariance) or dask-ml IncrementalPCA",
    "read_2_range": "min/max of the PCA coefficients of the analysed filters; per layer n, sums, max |w|",
    "read_3_histograms": "per-layer 9 x n_bins coefficient counts and layer-statistics sums; 2-D pair histograms",
}


def fingerprint(db: Database) -> str:
    """sha256 of the two tables, the arrays' metadata and the row count (the filters are not read)."""
    h = hashlib.sha256()
    for rel in ("models.parquet", "layers.parquet", "filters.zarr/zarr.json", "filters.zarr/filters/zarr.json", "filters.zarr/layer/zarr.json"):
        p = db.path / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.exists() else b"-")
    h.update(str(db.n_rows).encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def analyze(db: Database, plan: AnalysisPlan, name: str, parameters: dict[str, Any] | None = None, log: TextIO | bool = True) -> res.Results:
    """Compute the analysis ``plan`` over ``db`` and write it to ``DB/results/NAME/``; progress goes
    to ``log`` (True: the current stderr, False: nowhere)."""
    with threadpool_limits(1):
        # The threads of the scheduler are the parallelism: a multi-threaded BLAS under each of them
        # for (n, 9) x (9, 9) products oversubscribes the cores (measured 6x slower on 2 cores).
        return _analyze(db, plan, name, parameters, log)


def _non_finite_error(db: Database, what: str) -> DatabaseError:
    return DatabaseError(
        f"{db.path}: {what} hold NaN or Inf weights, which have no place in a histogram. `filtershift extract` "
        "refuses such checkpoints, so the store was written otherwise (an import, a hand-made store): re-import or "
        "re-extract the models without them, or leave them out with --where."
    )


def _analyze(db: Database, plan: AnalysisPlan, name: str, parameters: dict[str, Any] | None, log: TextIO | bool) -> res.Results:
    stream = sys.stderr if log is True else log
    say = (lambda msg: print(msg, file=stream, flush=True)) if stream else (lambda msg: None)
    out = res.results_path(db.path, name)
    timing: dict[str, float] = {}
    t_start = time.perf_counter()
    chunks = db.chunks()  # each pass task reads its own chunk of both arrays
    n_layers = plan.n_layers
    say(plan.describe())

    # READ 1 of the filters: the PCA fit.
    t = time.perf_counter()
    if plan.pca_method == "covariance":
        moments = moments_pass(chunks, None, plan.fit_blocks, plan.fit_lookup, plan.scaling)
        if not (np.isfinite(moments.mean).all() and np.isfinite(moments.m2).all()):
            raise _non_finite_error(db, "some of the filters the PCA is fitted on")
        pca = pca_from_moments(moments, plan.scaling, fit_on=plan.fit_on, n_analysed=plan.n_analysed)
    else:
        x = fit_rows(db.filters(), db.layer_ids(), plan.fit_blocks, plan.fit_lookup, plan.scaling)
        try:  # NaN/Inf rows end its SVD in LinAlgError (finite 9-column data always converges)
            pca = fit_incremental(x, plan.scaling, batch_size=db.chunk_rows, fit_on=plan.fit_on, n_analysed=plan.n_analysed)
        except np.linalg.LinAlgError as exc:
            raise _non_finite_error(db, "some of the filters the PCA is fitted on") from exc
        if not (np.isfinite(pca.mean).all() and np.isfinite(pca.components).all()):
            raise _non_finite_error(db, "some of the filters the PCA is fitted on")
    timing["read_1_moments"] = time.perf_counter() - t
    say(f"read 1 (PCA, {plan.pca_method}): {timing['read_1_moments']:.1f} s; q = {np.round(pca.explained_variance_ratio, 4).tolist()}")

    # READ 2 of the filters: the coefficient range; per-layer means and max |w|.
    t = time.perf_counter()
    rng = range_pass(chunks, None, plan.blocks, plan.layer_lookup, plan.scaling, pca, n_layers)
    timing["read_2_range"] = time.perf_counter() - t
    if rng.nonfinite.any():  # before READ 3, which bins finite coefficients only
        bad = plan.layers.iloc[np.flatnonzero(rng.nonfinite)]
        named = ", ".join(f"layer {r.layer_id} ({r.name} of model {r.model_id})" for r in bad.head(3).itertuples())
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _non_finite_error(db, f"{int(rng.nonfinite.sum())} filter(s) in {named}{more}")
    edges = bin_edges(rng.cmin.min(), rng.cmax.max(), plan.n_bins)
    edges_2d = np.stack([bin_edges(rng.cmin[k], rng.cmax[k], plan.n_bins_2d) for k in range(9)])
    say(f"read 2 (range): {timing['read_2_range']:.1f} s; coefficients in [{edges[0]:.4g}, {edges[-1]:.4g}]")

    # READ 3 of the filters: per-layer histograms and statistics, 2-D histograms.
    t = time.perf_counter()
    groupings_2d = plan.groupings_2d
    ctx = HistogramContext(
        layer_lookup=plan.layer_lookup, scaling=plan.scaling, mean=pca.mean, components=pca.components,
        edges=edges, edges_2d=edges_2d, pairs=np.asarray(plan.pairs, dtype=np.intp).reshape(-1, 2),
        group_codes_2d=(np.zeros(n_layers, dtype=np.int64),) + tuple(g.codes for g in groupings_2d),
        n_groups_2d=(1,) + tuple(g.n_groups for g in groupings_2d),
        max_abs=rng.max_abs, layer_mean=rng.sums / np.maximum(rng.n, 1)[:, None],
    )
    hist = histogram_pass(chunks, None, plan.blocks, ctx, n_layers)
    timing["read_3_histograms"] = time.perf_counter() - t
    say(f"read 3 (histograms + layer statistics): {timing['read_3_histograms']:.1f} s")

    # Everything below works on per-layer sums; no more reads. Results of an earlier run under this
    # name were left intact until here (a failed or interrupted read changes nothing stored).
    t = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / res.PROVENANCE_FILE).unlink(missing_ok=True)  # incomplete until rewritten at the end
    q = pca.explained_variance_ratio
    bins = res.Bins(edges=edges, edges_2d=edges_2d, pairs=plan.pairs)
    res.write_json(out / res.PCA_FILE, pca.to_json())
    res.write_json(out / res.BINS_FILE, bins.to_json())
    layers = plan.layers
    res.write_npz(out / res.LAYER_HIST_FILE, compressed=True, layer_id=layers["layer_id"].to_numpy(np.int64), counts=hist.counts)
    model_counts = np.zeros((plan.n_models, 9, plan.n_bins), dtype=np.int64)
    np.add.at(model_counts, plan.model_codes, hist.counts)
    decile = layers["depth_decile"].to_numpy(np.int64) if "depth_decile" in layers else np.zeros(n_layers, dtype=np.int64)
    decile_counts = np.zeros((plan.n_models, 10, 9, plan.n_bins), dtype=np.int64)
    np.add.at(decile_counts, (plan.model_codes, np.clip(decile, 0, 9)), hist.counts)
    res.write_npz(out / res.MODEL_HIST_FILE, compressed=True, model_id=plan.models["model_id"].to_numpy(np.int64), counts=model_counts, decile_counts=decile_counts)

    bootstrapped = []
    for grouping in plan.groupings:
        h = group_histograms(plan, grouping, hist.counts, edges)
        d = shift_matrix(h.probabilities, q)
        res.write_group_histograms(out, h)
        res.write_csv(out / res.shift_file(grouping.name), res.shift_frame(d, grouping.labels), index=True)
        res.write_csv(out / res.counts_file(grouping.name), group_counts(plan, grouping, hist.n))
        ci = bootstrap_shift(plan, grouping, hist.counts, edges, q, d)
        if ci is not None:
            res.write_csv(out / res.shift_ci_file(grouping.name), ci)
            bootstrapped.append(grouping.name)
    pairs = np.asarray(plan.pairs, dtype=np.int64).reshape(-1, 2)
    res.write_group_histograms_2d(out, res.GroupHistograms2D(res.ALL_GROUP, (res.ALL_GROUP,), plan.pairs, hist.hist2d[0], edges_2d))
    for grouping, counts in zip(groupings_2d, hist.hist2d[1:]):
        res.write_group_histograms_2d(out, res.GroupHistograms2D(grouping.name, grouping.labels, tuple(map(tuple, pairs.tolist())), counts, edges_2d))

    stats = layer_statistics(layers, hist.n, hist.range_sum, rng.max_abs, hist.n_sparse, hist.scatter)
    res.write_parquet(out / res.LAYER_STATS_FILE, stats)
    res.write_parquet(out / res.MODEL_DEPTH_RANGE_FILE, model_depth_range(stats))
    res.write_parquet(out / res.MODEL_PAIRS_FILE, model_pairs(plan, hist.counts, edges, q))
    models = plan.models.copy()
    models["n_layers"] = np.bincount(plan.model_codes, minlength=plan.n_models).astype(np.int64)
    models["n_filters"] = np.bincount(plan.model_codes, weights=hist.n, minlength=plan.n_models).astype(np.int64)
    res.write_parquet(out / res.MODELS_FILE, models)
    timing["summaries"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t_start

    provenance = {
        "parameters": dict(parameters or {}, scaling=plan.scaling, pca=plan.pca_method, weighting=plan.weighting,
                           where=plan.where, fit_on=plan.fit_on, bootstrap=plan.bootstrap, seed=plan.seed,
                           n_bins=plan.n_bins, n_bins_2d=plan.n_bins_2d, pairs=[list(p) for p in plan.pairs],
                           max_groups_2d=plan.max_groups_2d, max_groups_bootstrap=plan.max_groups_bootstrap),
        "database": {"path": str(Path(db.path).resolve()), "fingerprint": fingerprint(db), "n_rows": db.n_rows,
                     "chunk_rows": db.chunk_rows, "n_models": int(len(db.models)), "n_layers": int(len(db.layers))},
        "analysed": {"n_filters": plan.n_analysed, "n_layers": n_layers, "n_models": plan.n_models, "n_fit": plan.n_fit,
                     "n_chunks_read": len(plan.blocks), "n_fit_chunks_read": len(plan.fit_blocks)},
        "groupings": [g.name for g in plan.groupings],
        "groupings_2d": [res.ALL_GROUP] + [g.name for g in groupings_2d],
        "bootstrapped": bootstrapped,
        "passes": PASSES,
        "versions": versions(),
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    res.write_json(out / res.PROVENANCE_FILE, provenance)
    say(f"results: {out} ({timing['total']:.1f} s)")
    return res.load_results(db.path, name)

