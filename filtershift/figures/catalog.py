"""Which figures a results folder yields: a list of :class:`Figure` values (holoviews objects with
a key, a title and a caption). Pure: reads the results through their readers (and, for the
point-density examples, the filter store's lazy arrays); saving lives in :mod:`filtershift.figures.save`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import holoviews as hv
import numpy as np
import pandas as pd

from filtershift.analysis.results import PCAResult, Results, ResultsError
from filtershift.figures import pca as pca_figs
from filtershift.figures import heatmaps, points, ridge, scale
from filtershift.figures._style import note, percent, shorten
from filtershift.figures.phenotype import PHENOTYPES, layer_phenotypes

MAX_RIDGE_GROUPS = 24
MAX_HEATMAP_GROUPS = 60


@dataclass(frozen=True)
class Figure:
    """One figure: ``key`` names its files (``<key>.html``, ``<key>.png``)."""

    key: str
    title: str
    caption: str
    obj: hv.core.Dimensioned


def phenotypes(results: Results) -> pd.DataFrame:
    """The automatic phenotype of every analysed layer, joined with its layer statistics."""
    layer_id, counts = results.layer_histograms()
    ph = layer_phenotypes(layer_id, counts, results.bins.edges, results.pca.explained_variance_ratio)
    cols = [c for c in ("layer_id", "model_id", "name", "depth_decile") if c in results.layer_stats().columns]
    return ph.merge(results.layer_stats()[cols], on="layer_id", how="left")


def subset_label(results: Results) -> str:
    return results.subset or f"all filters ({results.name})"


def distinct_pcas(results: Results, subsets: Mapping[str, PCAResult] | None) -> dict[str, PCAResult]:
    """This analysis' PCA and the subsets', each fitted PCA once (a subset that is this analysis
    again, under another label, is left out)."""
    out = {subset_label(results): results.pca}
    for label, pca in (subsets or {}).items():
        if not any(_same_fit(pca, seen) for seen in out.values()):
            out[label] = pca
    return out


def _same_fit(a: PCAResult, b: PCAResult) -> bool:
    return a.n_filters == b.n_filters and a.scaling == b.scaling and np.allclose(a.components, b.components)


def pca_figures(results: Results, subsets: Mapping[str, PCAResult] | None = None) -> list[Figure]:
    pcas = distinct_pcas(results, subsets)
    out = [Figure("pca_components", "Principal components",
                  f"The 9 principal components of the ({results.pca.scaling}) 3x3 filters, each a 3x3 kernel of unit norm; "
                  "titles give the share of variance it explains and the cumulative share (paper Fig. 1).",
                  pca_figs.pc_images(results.pca, subset_label(results)))]
    if len(pcas) > 1:
        out.append(Figure("pca_subsets", "Principal components per fitted subset",
                          "Components of PCAs fitted on subsets of the filters (other analyses of the same database), "
                          "one row per subset (paper Fig. 8); rows from the top: " + "; ".join(pcas) + ".",
                          pca_figs.pc_images_subsets(pcas)))
    out.append(Figure("explained_variance", "Cumulative explained variance",
                      "Share of the filters' variance explained by the first k components, per fitted subset (paper Fig. 9; "
                      "fit subsets by task or data type with `filtershift analyze --where`).", pca_figs.explained_variance(pcas)))
    return out


def shift_figures(results: Results, shared_scale: bool = False) -> list[Figure]:
    out = []
    matrices = {b: results.shift(b) for b in results.groupings if len(results.shift(b)) <= MAX_HEATMAP_GROUPS}
    counts = {b: results.counts(b) for b in matrices}
    if matrices:
        out.append(Figure("shift_matrices", "Distribution shift between groups",
                          "D = Σ_i q_i [KL(P_i‖Q_i) + KL(Q_i‖P_i)] between the coefficient distributions of every two groups "
                          "(0: identical), in nats. Rows and columns sorted by column mean (depth deciles in depth order); ticks "
                          "give the number of models; long group names are shortened (in full in the hover) (paper Figs. 3, 7).", heatmaps.shift_heatmaps(matrices, counts, shared_scale)))
    try:
        pairs = results.model_pairs()
    except ResultsError:
        pairs = None
    if pairs is not None and len(pairs):
        out.append(Figure("pair_shifts", "Shift between pairs of models",
                          "D between every two analysed models, split by whether the two share family, task, data type and "
                          "data set (paper Fig. 4).", heatmaps.pair_shift_distribution(pairs)))
    return out


def ridge_figures(results: Results) -> list[Figure]:
    out = []
    q = results.pca.explained_variance_ratio
    for by in results.groupings:
        h = results.histograms(by)
        if len(h.labels) > MAX_RIDGE_GROUPS:
            continue
        order = None if by == "depth_decile" else heatmaps.group_order(results.shift(by), by)
        out.append(Figure(f"ridge_{_safe(by)}", f"Coefficient distributions by {by.replace('+', ' × ')}",
                          f"Histogram of each PCA coefficient ({results.pca.scaling} filters) per group, rows normalised to "
                          f"their peak; x axis: the central {100 * ridge.MASS:g} % of the coefficients (the histogram bins "
                          "behind D span all of them); groups in the order of the D matrix (paper Figs. 2, 12–17).",
                          ridge.ridge_grid(h, q, order=order, scaling=results.pca.scaling)))
    return out


def density_figures(results: Results, db=None, pair: tuple[int, int] = (0, 1)) -> list[Figure]:
    out = []
    for by in results.groupings_2d:
        h = results.histograms_2d(by)
        if h is None or tuple(pair) not in h.pairs:
            continue
        out.append(Figure(f"density_{_safe(by)}", f"Joint coefficient density by {by.replace('+', ' × ')}",
                          f"2-D histogram of c{pair[0] + 1} and c{pair[1] + 1} per group (its filters in parentheses): filters "
                          "per pixel, one log colour scale for all panels (paper Fig. 5).",
                          points.histogram_densities(h, pair)))
    if db is not None:
        out.append(phenotype_examples(results, db, pair))
    return out


def phenotype_examples(results: Results, db, pair: tuple[int, int] = (0, 1)) -> Figure:
    """For each phenotype found the layer that shows it most clearly, datashaded from the store,
    and a note naming the phenotypes no layer shows."""
    ph = phenotypes(results)
    ph = ph[ph["reliable"]] if ph["reliable"].any() else ph
    models = results.models().set_index("model_id")["name"] if "name" in results.models() else pd.Series(dtype=str)
    panels = []
    rank = {"sun": ("gauss_excess", True), "spikes": ("concentration", True), "symbols": ("gauss_excess", False)}
    for kind in PHENOTYPES:
        sub = ph[ph["phenotype"] == kind]
        if sub.empty:
            continue
        col, asc = rank[kind]
        row = sub.sort_values([col, "n_filters"], ascending=[asc, False]).iloc[0]
        frame = points.coefficient_frame(db.filters(), db.layers, results.pca, [int(row["layer_id"])], pair)
        title = f"{kind}: {models.get(row['model_id'], row['model_id'])} / {row.get('name', row['layer_id'])}"
        panels.append(points.point_density(frame, pair, title=shorten(title, 40), size=260))
    if missing := [k for k in PHENOTYPES if not (ph["phenotype"] == k).any()]:
        shares = ", ".join(f"{k} {percent(v)}" for k, v in ph["phenotype"].value_counts(normalize=True).items())
        panels.append(note(f"No layer was labelled {' or '.join(missing)}" + (f" (layers: {shares})." if shares else ".")))
    return Figure("phenotypes", "Layer phenotypes",
                  "One layer per automatic phenotype (sun: Gaussian-like; spikes: a few discrete structures; symbols: "
                  "broad, multi-modal or off-centre), every filter datashaded from the store.",
                  hv.Layout(panels).cols(3).opts(title="Automatic layer phenotypes (examples)"))


def scale_figures(results: Results) -> list[Figure]:
    out = []
    try:
        out.append(Figure("filter_scale", "Filter scale by depth",
                          "Mean range (max − min) of the raw filter weights per model and depth decile (paper Fig. 6).",
                          scale.range_by_decile(results.model_depth_range())))
    except ResultsError:
        pass
    for by in results.groupings:
        out.append(Figure(f"counts_{_safe(by)}", f"Filters and models per {by.replace('+', ' × ')}",
                          "How much data each group pools, log scale (paper Figs. 10–11).", scale.group_counts(results.counts(by), by)))
    stats = results.layer_stats()
    out.append(Figure("layer_quality", "Layer quality by depth",
                      "Sparsity S, variance entropy H (of the raw weights) and the share of degenerate layers per depth "
                      "decile; the rule is written below the panels.", scale.layer_quality(stats)))
    out.append(Figure("phenotype_shares", "Layer phenotypes by depth",
                      "Share of layers labelled sun / spikes / symbols by the automatic rule (filtershift.figures.phenotype).",
                      scale.phenotype_shares(phenotypes(results), stats)))
    return out


def build_figures(results: Results, db=None, subsets: Mapping[str, PCAResult] | None = None, shared_scale: bool = False) -> list[Figure]:
    """Every figure ``results`` supports, in report order."""
    return [*pca_figures(results, subsets), *shift_figures(results, shared_scale), *ridge_figures(results),
            *density_figures(results, db), *scale_figures(results)]


def _safe(by: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in by)


__all__ = ["Figure", "build_figures", "phenotypes"]
