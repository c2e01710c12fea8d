"""From the three reads' per-layer sums to the whole output of an analysis: pure, no more reads.

Model and depth-decile histograms, every grouping's histograms, D matrix, counts and bootstrap,
the 2-D histograms, the layer statistics and the model pairs are all sums over the per-layer
counts of READ 3 (docs/design.md §4), so this module needs neither the store nor a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from filtershift.analysis.divergence import shift_matrix
from filtershift.analysis.groups import bootstrap_shift, group_counts, group_histograms, model_pairs
from filtershift.analysis.layerstats import layer_statistics, model_depth_range
from filtershift.analysis.plan import AnalysisPlan
from filtershift.analysis.types import ALL_GROUP, AnalysisOutput, Bins, GroupHistograms2D, GroupingOutput, PCAResult

if TYPE_CHECKING:
    from filtershift.analysis.passes import HistogramResult, RangeResult


def shift_frame(d: np.ndarray, labels: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """The D matrix as a square frame labelled by group (index name ``group``)."""
    index = pd.Index([str(s) for s in labels], name="group")
    return pd.DataFrame(np.asarray(d, dtype=np.float64), index=index, columns=list(index))


def model_histograms(plan: AnalysisPlan, layer_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per model ``(M, 9, n_bins)`` and per model x depth decile ``(M, 10, 9, n_bins)`` counts."""
    n_layers = len(layer_counts)
    model_counts = np.zeros((plan.n_models,) + layer_counts.shape[1:], dtype=np.int64)
    np.add.at(model_counts, plan.model_codes, layer_counts)
    layers = plan.layers
    decile = layers["depth_decile"].to_numpy(np.int64) if "depth_decile" in layers else np.zeros(n_layers, dtype=np.int64)
    decile_counts = np.zeros((plan.n_models, 10) + layer_counts.shape[1:], dtype=np.int64)
    np.add.at(decile_counts, (plan.model_codes, np.clip(decile, 0, 9)), layer_counts)
    return model_counts, decile_counts


def grouping_outputs(plan: AnalysisPlan, hist: HistogramResult, edges: np.ndarray, q: np.ndarray) -> tuple[GroupingOutput, ...]:
    out = []
    for grouping in plan.groupings:
        h = group_histograms(plan, grouping, hist.counts, edges)
        d = shift_matrix(h.probabilities, q)
        out.append(GroupingOutput(
            histograms=h, shift=shift_frame(d, grouping.labels), counts=group_counts(plan, grouping, hist.n),
            shift_ci=bootstrap_shift(plan, grouping, hist.counts, edges, q, d),
        ))
    return tuple(out)


def histograms_2d(plan: AnalysisPlan, hist: HistogramResult, edges_2d: np.ndarray) -> tuple[GroupHistograms2D, ...]:
    """The 2-D histograms of every analysed filter (group ``all``) and of each small grouping."""
    pairs = tuple(tuple(p) for p in plan.pairs)
    out = [GroupHistograms2D(ALL_GROUP, (ALL_GROUP,), pairs, hist.hist2d[0], edges_2d)]
    for grouping, counts in zip(plan.groupings_2d, hist.hist2d[1:]):
        out.append(GroupHistograms2D(grouping.name, grouping.labels, pairs, counts, edges_2d))
    return tuple(out)


def analysed_models(plan: AnalysisPlan, layer_n: np.ndarray) -> pd.DataFrame:
    """The analysed models' table with their analysed layer and filter counts."""
    models = plan.models.copy()
    models["n_layers"] = np.bincount(plan.model_codes, minlength=plan.n_models).astype(np.int64)
    models["n_filters"] = np.bincount(plan.model_codes, weights=layer_n, minlength=plan.n_models).astype(np.int64)
    return models


def summarize(plan: AnalysisPlan, pca: PCAResult, bins: Bins, rng: RangeResult, hist: HistogramResult) -> AnalysisOutput:
    """The output of the analysis ``plan`` from its PCA, bins and the sums of READ 2 and READ 3
    (``provenance`` left empty for the caller)."""
    q = pca.explained_variance_ratio
    model_counts, decile_counts = model_histograms(plan, hist.counts)
    stats = layer_statistics(plan.layers, hist.n, hist.range_sum, rng.max_abs, hist.n_sparse, hist.scatter)
    return AnalysisOutput(
        pca=pca,
        bins=bins,
        layer_ids=plan.layers["layer_id"].to_numpy(np.int64),
        layer_counts=hist.counts,
        model_ids=plan.models["model_id"].to_numpy(np.int64),
        model_counts=model_counts,
        decile_counts=decile_counts,
        groupings=grouping_outputs(plan, hist, bins.edges, q),
        histograms_2d=histograms_2d(plan, hist, bins.edges_2d),
        layer_stats=stats,
        model_depth_range=model_depth_range(stats),
        model_pairs=model_pairs(plan, hist.counts, bins.edges, q),
        models=analysed_models(plan, hist.n),
        provenance={},
    )
