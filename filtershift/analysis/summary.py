"""From the three reads' per-layer sums to the whole output of an analysis: pure, no more reads.

Model and depth-decile histograms, every grouping's histograms, D matrix, counts and bootstrap,
the 2-D histograms, the layer statistics and the model pairs are all sums over the per-layer
counts of READ 3 (docs/design.md §4), so this module needs neither the store nor a client.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


def grouping_outputs(plan: AnalysisPlan, layer_counts: np.ndarray, layer_n: np.ndarray, edges: np.ndarray, q: np.ndarray) -> tuple[GroupingOutput, ...]:
    out = []
    for grouping in plan.groupings:
        h = group_histograms(plan, grouping, layer_counts, edges)
        d = shift_matrix(h.probabilities, q)
        out.append(GroupingOutput(
            histograms=h, shift=shift_frame(d, grouping.labels), counts=group_counts(plan, grouping, layer_n),
            shift_ci=bootstrap_shift(plan, grouping, layer_counts, edges, q, d),
        ))
    return tuple(out)


def histograms_2d(plan: AnalysisPlan, hist2d: tuple[np.ndarray, ...], edges_2d: np.ndarray) -> tuple[GroupHistograms2D, ...]:
    """The 2-D histograms of every analysed filter (group ``all``) and of each small grouping."""
    pairs = tuple(tuple(p) for p in plan.pairs)
    out = [GroupHistograms2D(ALL_GROUP, (ALL_GROUP,), pairs, hist2d[0], edges_2d)]
    for grouping, counts in zip(plan.groupings_2d, hist2d[1:]):
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
    stats = layer_statistics(plan.layers, hist.n, hist.range_sum, rng.max_abs, hist.n_sparse, hist.scatter)
    return assemble(plan, pca, bins, hist.counts, hist.n, stats, histograms_2d(plan, hist.hist2d, bins.edges_2d))


def assemble(plan: AnalysisPlan, pca: PCAResult, bins: Bins, layer_counts: np.ndarray, layer_n: np.ndarray,
             stats: pd.DataFrame, hists_2d: tuple[GroupHistograms2D, ...]) -> AnalysisOutput:
    """The output from the per-layer counts (L, 9, n_bins), filter counts (L,) and statistics of
    the plan's layers, and the 2-D histograms."""
    q = pca.explained_variance_ratio
    model_counts, decile_counts = model_histograms(plan, layer_counts)
    return AnalysisOutput(
        pca=pca,
        bins=bins,
        layer_ids=plan.layers["layer_id"].to_numpy(np.int64),
        layer_counts=layer_counts,
        model_ids=plan.models["model_id"].to_numpy(np.int64),
        model_counts=model_counts,
        decile_counts=decile_counts,
        groupings=grouping_outputs(plan, layer_counts, layer_n, bins.edges, q),
        histograms_2d=hists_2d,
        layer_stats=stats,
        model_depth_range=model_depth_range(stats),
        model_pairs=model_pairs(plan, layer_counts, bins.edges, q),
        models=analysed_models(plan, layer_n),
        provenance={},
    )


# ----------------------------------------------------------------------------------------------
# On a frozen basis (``--basis``): the basis's per-layer counts and statistics, plus the read layers'


@dataclass(frozen=True, eq=False)
class StoredBasis:
    """What an analysis on a basis takes from the basis's results."""

    name: str
    layer_ids: np.ndarray  # (Lb,) of its layer_histograms.npz
    layer_counts: np.ndarray  # (Lb, 9, n_bins)
    layer_stats: pd.DataFrame  # its layer_stats.parquet
    hist2d: dict[str, GroupHistograms2D]  # its 2-D histograms by grouping name ("all" included)
    group_filters: dict[str, dict[str, int]]  # per grouping of ``hist2d`` but "all": label -> n_filters


def summarize_on_basis(plan: AnalysisPlan, pca: PCAResult, bins: Bins, rng: RangeResult, hist: HistogramResult,
                       basis: StoredBasis) -> tuple[AnalysisOutput, dict[str, str]]:
    """The output of ``plan`` (on ``basis``, with ``plan.reused``) from the basis and from READ 2
    and READ 3 over the other layers (``rng``, ``hist``: over ``read_plan(plan)``); and the 2-D
    histograms that could not be composed, with the reason. A reused layer's counts and its
    ``layer_stats`` row are the basis's (each a function of that layer's rows alone)."""
    old, new = np.flatnonzero(plan.reused), np.flatnonzero(~plan.reused)
    ids = plan.layers["layer_id"].to_numpy(np.int64)
    counts = np.zeros((plan.n_layers,) + basis.layer_counts.shape[1:], dtype=np.int64)
    counts[old] = basis.layer_counts[pd.Index(basis.layer_ids).get_indexer(ids[old])]
    counts[new] = hist.counts
    read_stats = layer_statistics(plan.layers.iloc[new], hist.n, hist.range_sum, rng.max_abs, hist.n_sparse, hist.scatter)
    stored_stats = basis.layer_stats.drop_duplicates("layer_id").set_index("layer_id").loc[ids[old]].reset_index()
    stats = pd.concat([stored_stats[read_stats.columns], read_stats], ignore_index=True)
    stats = stats.iloc[np.argsort(np.concatenate([old, new]), kind="stable")].reset_index(drop=True)
    layer_n = stats["n_filters"].to_numpy(np.int64)
    hists_2d, skipped = composed_2d(plan, hist.hist2d, basis, layer_n, bins.edges_2d)
    return assemble(plan, pca, bins, counts, layer_n, stats, hists_2d), skipped


def composed_2d(plan: AnalysisPlan, read_hist2d: tuple[np.ndarray, ...], basis: StoredBasis, layer_n: np.ndarray,
                edges_2d: np.ndarray) -> tuple[tuple[GroupHistograms2D, ...], dict[str, str]]:
    """The 2-D histograms on a basis: per group the basis's (matched by label) plus the read
    layers'. Only per-group 2-D counts are stored, so a grouping is composed only when the basis
    has its 2-D histograms, every basis layer is reused, and each group holds the same reused
    filters as in the basis; the others are not written (returned with the reason)."""
    reused_ids = set(plan.layers["layer_id"].to_numpy(np.int64)[plan.reused].tolist())
    all_reused = set(np.asarray(basis.layer_ids).tolist()) <= reused_ids
    out, skipped = [], {}
    for h, grouping in zip(histograms_2d(plan, read_hist2d, edges_2d), (None,) + plan.groupings_2d):
        stored = basis.hist2d.get(h.by)
        if stored is None:
            skipped[h.by] = f"the basis {basis.name} has no 2-D histograms of '{h.by}'"
        elif not all_reused:
            skipped[h.by] = (f"the basis {basis.name} holds layers this analysis does not take from it (models removed "
                             "or changed, another selection); their share of the 2-D counts cannot be taken out")
        elif grouping is not None and _reused_group_filters(plan, grouping, layer_n) != basis.group_filters.get(h.by):
            skipped[h.by] = f"the groups of '{h.by}' hold other filters in the basis {basis.name}"
        else:
            counts = np.array(h.counts, dtype=np.int64)
            counts[[h.labels.index(label) for label in stored.labels]] += stored.counts
            out.append(replace(h, counts=counts))
    return tuple(out), skipped


def _reused_group_filters(plan: AnalysisPlan, grouping, layer_n: np.ndarray) -> dict[str, int]:
    """Per group label, the reused layers' filters (groups without any left out)."""
    sums = np.bincount(grouping.codes[plan.reused], weights=layer_n[plan.reused], minlength=grouping.n_groups)
    return {label: int(v) for label, v in zip(grouping.labels, sums) if v > 0}
