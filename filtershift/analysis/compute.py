"""Compute an analysis plan over a database and hand its output to the results writer.

The three reads of the filters are in :mod:`filtershift.analysis.passes` (READ 1, 2, 3); their
per-layer sums become the analysis output in :mod:`filtershift.analysis.summary`, and
:func:`filtershift.analysis.results.write_analysis` stores it. Whatever dask client is current
executes the passes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from threadpoolctl import threadpool_limits

from filtershift.analysis import results as res
from filtershift.analysis.fitmoments import fit_moments
from filtershift.analysis.histograms import bin_edges
from filtershift.analysis.passes import (
    HistogramContext, HistogramResult, RangeResult, block_counts, empty_histograms, empty_range, fit_rows, histogram_pass, range_pass,
)
from filtershift.analysis.pca import fit_incremental, pca_from_moments
from filtershift.analysis.plan import AnalysisPlan, PlanError, basis_conflict, read_plan, reuse_basis
from filtershift.analysis.summary import StoredBasis, summarize, summarize_on_basis
from filtershift.analysis.types import ALL_GROUP, AnalysisOutput, Bins, PCAResult
from filtershift.runtime.failpoints import failpoint
from filtershift.store import Database, DatabaseError
from filtershift.store.fingerprint import fingerprint

VERSIONED_PACKAGES = ("filtershift", "numpy", "pandas", "dask", "distributed", "dask-ml", "zarr", "scikit-learn", "pyarrow")
PASSES = {
    "read_1_moments": "PCA fit: the Chan merge of the fit layers' stored moments (DB/layer_moments.npz), reading only "
                      "layers whose moments are not stored yet (then stored); or dask-ml IncrementalPCA (a read)",
    "read_2_range": "min/max of the PCA coefficients of the analysed filters; per layer n, sums, max |w|",
    "read_3_histograms": "per-layer 9 x n_bins coefficient counts and layer-statistics sums; 2-D pair histograms",
}
FROZEN_PCA = "the PCA and bins are the basis's (--basis); READ 2 and 3 read only the layers not taken from it"
Say = Callable[[str], None]


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
    to ``log`` (True: the current stderr, False: nowhere). A second analysis under the same name
    fails at once while this one runs."""
    stream = sys.stderr if log is True else log
    say: Say = (lambda msg: print(msg, file=stream, flush=True)) if stream else (lambda msg: None)
    if plan.basis and plan.reused is None:
        plan = on_basis(db, plan, name)
    with res.results_lock(db.path, name), threadpool_limits(1):
        # The threads of the scheduler are the parallelism: a multi-threaded BLAS under each of them
        # for (n, 9) x (9, 9) products oversubscribes the cores (measured 6x slower on 2 cores).
        output = compute_analysis(db, plan, parameters, say)
        failpoint("analyze:computed")
        # Results of an earlier run under this name were left intact until here (a failed or
        # interrupted read changes nothing stored).
        folder = res.write_analysis(db.path, name, output)
    say(f"results: {folder} ({output.provenance['timing']['total']:.1f} s)")
    return res.load_results(db.path, name)


def on_basis(db: Database, plan: AnalysisPlan, name: str) -> AnalysisPlan:
    """``plan`` on its basis ``plan.basis`` (``--basis``, results of ``db``): which layers are taken
    from it and which store chunks are read; refused when the basis does not exist, is the
    analysis ``name`` itself, or was computed with other scaling, selection or 2-D bins."""
    available = res.complete_analyses(db.path)
    if plan.basis not in available:
        raise res.ResultsError(
            f"--basis {plan.basis}: {res.results_path(db.path, plan.basis)} holds no complete analysis (analyses of this "
            f"database: {', '.join(available) or 'none'}). Give one of them, or make the basis first with "
            f"`filtershift analyze {db.path} --name {plan.basis}`.")
    if plan.basis == name:
        raise PlanError(f"--basis {plan.basis} is also the --name of this analysis; a basis is read, not replaced: "
                        "give the new analysis another --name.")
    basis = res.load_results(db.path, plan.basis)
    recorded = dict(basis.parameters, scaling=basis.pca.scaling, pairs=basis.bins.pairs, n_bins_2d=basis.bins.edges_2d.shape[1] - 1)
    if problem := basis_conflict(plan, plan.basis, recorded):
        raise PlanError(problem)
    return reuse_basis(plan, basis.layer_stats(), basis.models(), db.chunk_rows, basis.pca.method, basis.pca.n_filters)


def stored_basis(basis: res.Results, plan: AnalysisPlan) -> StoredBasis:
    """What ``plan`` takes from the results ``basis``: per-layer counts and statistics, and the 2-D
    histograms of the groupings both have."""
    layer_ids, layer_counts = basis.layer_histograms()
    wanted = [ALL_GROUP] + [g.name for g in plan.groupings_2d]
    hist2d = {by: h for by in wanted if by in basis.groupings_2d and (h := basis.histograms_2d(by)) is not None}
    group_filters = {}
    for by in hist2d:
        if by != ALL_GROUP:
            counts = basis.counts(by)
            group_filters[by] = {str(g): int(n) for g, n in zip(counts["group"], counts["n_filters"]) if n > 0}
    return StoredBasis(basis.name, layer_ids, layer_counts, basis.layer_stats(), hist2d, group_filters)


def compute_analysis(db: Database, plan: AnalysisPlan, parameters: dict[str, Any] | None, say: Say,
                     fixed: tuple[PCAResult, Bins] | None = None) -> AnalysisOutput:
    """The reads of ``plan`` over ``db`` and everything computed from them, with provenance. On a
    basis (``plan.reused`` set, see :func:`on_basis`) the PCA and bins are the basis's and only
    the layers not taken from it are read; ``fixed`` (PCA, bins) skips READ 1 and the choice of
    bins but reads every layer (the reference an analysis on a basis must equal)."""
    timing: dict[str, float] = {}
    t_start = time.perf_counter()
    chunks = db.chunks()  # each pass task reads its own chunk; layers come from the layer table
    say(plan.describe())
    basis = res.load_results(db.path, plan.basis) if plan.reused is not None else None
    fixed = (basis.pca, basis.bins) if basis is not None else fixed
    read = read_plan(plan) if basis is not None else plan

    t = time.perf_counter()
    pca, fit_note = fit_pca(db, plan, chunks) if fixed is None else (fixed[0], {})
    timing["read_1_moments"] = time.perf_counter() - t
    say(f"read 1 (PCA, {plan.pca_method}{', ' + fit_note['how'] if fit_note else ''}): {timing['read_1_moments']:.1f} s"
        if fixed is None else f"read 1 skipped: PCA of {basis.name if basis else 'the given basis'}")
    say(f"  q = {np.round(pca.explained_variance_ratio, 4).tolist()}")

    t = time.perf_counter()
    rng = coefficient_range(db, read, chunks, pca)
    bins = choose_bins(read, rng) if fixed is None else fixed[1]
    timing["read_2_range"] = time.perf_counter() - t
    say(f"read 2 (range): {timing['read_2_range']:.1f} s; coefficients in [{rng.cmin.min():.4g}, {rng.cmax.max():.4g}], "
        f"bins over [{bins.edges[0]:.4g}, {bins.edges[-1]:.4g}]")

    t = time.perf_counter()
    hist = layer_histograms(read, chunks, pca, bins, rng, count_clipped=fixed is not None)
    timing["read_3_histograms"] = time.perf_counter() - t
    say(f"read 3 (histograms + layer statistics): {timing['read_3_histograms']:.1f} s")

    t = time.perf_counter()
    skipped: dict[str, str] = {}
    if basis is None:
        output = summarize(plan, pca, bins, rng, hist)
    else:
        output, skipped = summarize_on_basis(plan, pca, bins, rng, hist, stored_basis(basis, plan))
    timing["summaries"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t_start
    frozen = None if fixed is None else frozen_provenance(basis, plan, read, hist, skipped)
    prov = provenance(db, plan, output, parameters, timing, frozen)
    if fit_note:
        prov["fit_moments"] = fit_note
    return dataclasses.replace(output, provenance=prov)


def frozen_provenance(basis: res.Results | None, plan: AnalysisPlan, read: AnalysisPlan, hist: HistogramResult,
                      skipped: dict[str, str]) -> dict[str, Any]:
    """The provenance's ``basis`` section: where the PCA and bins came from, what was read, the
    share of the read coefficients put in an edge bin from outside the bins, and the 2-D
    histograms not written."""
    n_read = int(hist.n.sum())
    clipped = int(hist.n_clipped.sum()) if hist.n_clipped is not None else 0
    out: dict[str, Any] = {
        "name": basis.name if basis else None,
        "n_layers_read": read.n_layers, "n_filters_read": n_read,
        "n_clipped": clipped, "clipped": clipped / (9 * n_read) if n_read else 0.0,
        "layer_statistics": "layers taken from the basis: its layer_stats rows; layers read: from their own rows",
        "hist2d": "per group the basis's 2-D counts plus the read layers'; not written where that is impossible",
        "hist2d_not_written": skipped,
    }
    if basis is not None:
        out.update(created=basis.created, database_fingerprint=basis.database_fingerprint,
                   n_layers_reused=int(plan.reused.sum()), n_filters_reused=plan.n_analysed - n_read)
    return out


def _non_finite_error(db: Database, what: str) -> DatabaseError:
    return DatabaseError(
        f"{db.path}: {what} hold NaN or Inf weights, which have no place in a histogram. `filtershift extract` "
        "refuses such checkpoints, so the store was written otherwise (an import, a hand-made store): re-import or "
        "re-extract the models without them, or leave them out with --where."
    )


def fit_pca(db: Database, plan: AnalysisPlan, chunks) -> tuple[PCAResult, dict[str, Any]]:
    """READ 1: the PCA fitted on the plan's fit rows — exact covariance from the per-layer moments
    (stored, or read once and stored), or dask-ml IncrementalPCA over a read — and how it was got."""
    fit_filters = "some of the filters the PCA is fitted on"
    if plan.pca_method == "covariance":
        fm = fit_moments(db, plan, chunks)
        moments = fm.moments
        if not (np.isfinite(moments.mean).all() and np.isfinite(moments.m2).all()):
            raise _non_finite_error(db, fit_filters)
        how = ("from stored moments" if not fm.n_layers_read else
               f"moments of {fm.n_layers_read:,} layers read from {fm.n_chunks_read:,} chunks, {fm.stored}")
        note = {"how": how, "n_layers_stored": fm.n_layers_stored, "n_layers_read": fm.n_layers_read,
                "n_chunks_read": fm.n_chunks_read, "stored": fm.stored}
        return pca_from_moments(moments, plan.scaling, fit_on=plan.fit_on, n_analysed=plan.n_analysed), note
    fit_table = db.layers[plan.fit_lookup[db.layers["layer_id"].to_numpy(np.int64)]]
    counts = block_counts(fit_table["start"].to_numpy(np.int64), fit_table["stop"].to_numpy(np.int64), plan.fit_blocks, db.chunk_rows)
    x = fit_rows(chunks, plan.fit_blocks, counts, plan.fit_lookup, plan.scaling)
    try:  # NaN/Inf rows end its SVD in LinAlgError (finite 9-column data always converges)
        pca = fit_incremental(x, plan.scaling, batch_size=db.chunk_rows, fit_on=plan.fit_on, n_analysed=plan.n_analysed)
    except np.linalg.LinAlgError as exc:
        raise _non_finite_error(db, fit_filters) from exc
    if not (np.isfinite(pca.mean).all() and np.isfinite(pca.components).all()):
        raise _non_finite_error(db, fit_filters)
    return pca, {"how": f"read of {len(plan.fit_blocks):,} chunks"}


def coefficient_range(db: Database, plan: AnalysisPlan, chunks, pca: PCAResult) -> RangeResult:
    """READ 2: the coefficients' range; per-layer n, sums and max |w|. NaN or Inf filters are
    refused here, layers named."""
    if not plan.blocks:  # on a basis that covers every analysed layer
        return empty_range(len(pca.components))
    rng = range_pass(chunks, None, plan.blocks, plan.layer_lookup, plan.scaling, pca, plan.n_layers)
    if rng.nonfinite.any():  # before READ 3, which bins finite coefficients only
        bad = plan.layers.iloc[np.flatnonzero(rng.nonfinite)]
        named = ", ".join(f"layer {r.layer_id} ({r.name} of model {r.model_id})" for r in bad.head(3).itertuples())
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _non_finite_error(db, f"{int(rng.nonfinite.sum())} filter(s) in {named}{more}")
    return rng


def choose_bins(plan: AnalysisPlan, rng: RangeResult) -> Bins:
    """The shared bins over READ 2's range (and per component the 2-D bins)."""
    edges = bin_edges(rng.cmin.min(), rng.cmax.max(), plan.n_bins)
    edges_2d = np.stack([bin_edges(rng.cmin[k], rng.cmax[k], plan.n_bins_2d) for k in range(9)])
    return Bins(edges=edges, edges_2d=edges_2d, pairs=plan.pairs)


def layer_histograms(plan: AnalysisPlan, chunks, pca: PCAResult, bins: Bins, rng: RangeResult, count_clipped: bool = False) -> HistogramResult:
    """READ 3: per-layer coefficient histograms and statistics sums, and the 2-D histograms
    (with ``count_clipped``, per layer the coefficients outside the bins, put in the edge bins)."""
    groupings_2d = plan.groupings_2d
    ctx = HistogramContext(
        layer_lookup=plan.layer_lookup, scaling=plan.scaling, mean=pca.mean, components=pca.components,
        edges=bins.edges, edges_2d=bins.edges_2d, pairs=np.asarray(plan.pairs, dtype=np.intp).reshape(-1, 2),
        group_codes_2d=(np.zeros(plan.n_layers, dtype=np.int64),) + tuple(g.codes for g in groupings_2d),
        n_groups_2d=(1,) + tuple(g.n_groups for g in groupings_2d),
        max_abs=rng.max_abs, layer_mean=rng.sums / np.maximum(rng.n, 1)[:, None], count_clipped=count_clipped,
    )
    if not plan.blocks:
        return empty_histograms(ctx)
    return histogram_pass(chunks, None, plan.blocks, ctx, plan.n_layers)


def provenance(db: Database, plan: AnalysisPlan, output: AnalysisOutput, parameters: dict[str, Any] | None,
               timing: dict[str, float], frozen: dict[str, Any] | None = None) -> dict[str, Any]:
    """What was computed, from which database state, with which settings and versions, how fast
    (and, with a frozen PCA and bins, the ``basis`` section of :func:`frozen_provenance`)."""
    out = {
        "parameters": dict(parameters or {}, scaling=plan.scaling, pca=plan.pca_method, weighting=plan.weighting,
                           where=plan.where, fit_on=plan.fit_on, bootstrap=plan.bootstrap, seed=plan.seed,
                           n_bins=plan.n_bins, n_bins_2d=plan.n_bins_2d, pairs=[list(p) for p in plan.pairs],
                           max_groups_2d=plan.max_groups_2d, max_groups_bootstrap=plan.max_groups_bootstrap, basis=plan.basis),
        "database": {"path": str(Path(db.path).resolve()), "fingerprint": fingerprint(db), "n_rows": db.n_rows,
                     "chunk_rows": db.chunk_rows, "n_models": int(len(db.models)), "n_layers": int(len(db.layers))},
        "analysed": {"n_filters": plan.n_analysed, "n_layers": plan.n_layers, "n_models": plan.n_models, "n_fit": plan.n_fit,
                     "n_chunks_read": len(plan.blocks), "n_fit_chunks_read": len(plan.fit_blocks)},
        "groupings": [g.name for g in plan.groupings],
        "groupings_2d": [h.by for h in output.histograms_2d],
        "bootstrapped": [g.histograms.by for g in output.groupings if g.shift_ci is not None],
        "passes": PASSES if frozen is None else dict(PASSES, read_1_moments=f"skipped: {FROZEN_PCA}"),
        "versions": versions(),
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if frozen is not None:
        out["basis"] = frozen
    return out
