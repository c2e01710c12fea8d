"""From per-layer counts to everything per group: histograms under a weighting, D matrices,
bootstrap intervals, counts, and the table of D between individual models. Pure: no filter is
read here — every group is a sum over its layers (docs/design.md §4).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from filtershift.analysis.histograms import distributions, group_mass, unit_index, unit_masses
from filtershift.analysis.plan import AnalysisPlan, Grouping
from filtershift.analysis.types import GroupHistograms
from filtershift.analysis.divergence import shift_matrix, upper_pairs


def group_histograms(plan: AnalysisPlan, grouping: Grouping, layer_counts: np.ndarray, edges: np.ndarray) -> GroupHistograms:
    """The histograms and distributions of ``grouping`` under ``plan.weighting``."""
    unit_of_layer, unit_group, unit_model = unit_index(grouping.codes, plan.model_codes)
    value, norm = unit_masses(layer_counts, unit_of_layer, len(unit_group), plan.weighting)
    mass = group_mass(value, norm, unit_group, grouping.n_groups, plan.weighting)
    n_filters = np.bincount(grouping.codes, weights=layer_counts[:, 0].sum(axis=-1), minlength=grouping.n_groups).astype(np.int64)
    if plan.weighting != "filters":
        mass = mass * n_filters[:, None, None]
    n_models = np.bincount(unit_group, minlength=grouping.n_groups).astype(np.int64)
    return GroupHistograms(
        by=grouping.name, labels=grouping.labels, counts=mass, probabilities=distributions(mass, edges),
        edges=edges, n_filters=n_filters, n_models=n_models,
    )


def group_counts(plan: AnalysisPlan, grouping: Grouping, layer_n: np.ndarray) -> pd.DataFrame:
    """Models, layers and filters per group (paper Figs. 10-11)."""
    _, unit_group, _ = unit_index(grouping.codes, plan.model_codes)
    g = grouping.n_groups
    return pd.DataFrame({
        "group": list(grouping.labels),
        "n_models": np.bincount(unit_group, minlength=g).astype(np.int64),
        "n_layers": np.bincount(grouping.codes, minlength=g).astype(np.int64),
        "n_filters": np.bincount(grouping.codes, weights=layer_n, minlength=g).astype(np.int64),
    })


def bootstrap_shift(plan: AnalysisPlan, grouping: Grouping, layer_counts: np.ndarray, edges: np.ndarray, weights: np.ndarray, d: np.ndarray) -> pd.DataFrame | None:
    """Percentile intervals (2.5 %, 97.5 %) of every D entry over ``plan.bootstrap`` resamples of the
    models within each group (with replacement; q fixed). ``None`` when there is nothing to resample
    (every group one model) or the grouping has more than ``plan.max_groups_bootstrap`` groups."""
    if plan.bootstrap <= 0 or grouping.n_groups > plan.max_groups_bootstrap:
        return None
    unit_of_layer, unit_group, _ = unit_index(grouping.codes, plan.model_codes)
    if len(unit_group) == grouping.n_groups:
        return None
    value, norm = unit_masses(layer_counts, unit_of_layer, len(unit_group), plan.weighting)
    rng = np.random.default_rng(plan.seed)
    members = [np.flatnonzero(unit_group == g) for g in range(grouping.n_groups)]
    samples = np.empty((plan.bootstrap, grouping.n_groups, grouping.n_groups))
    for b in range(plan.bootstrap):
        draw = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
        multiplicity = np.bincount(draw, minlength=len(unit_group))
        mass = group_mass(value, norm, unit_group, grouping.n_groups, plan.weighting, multiplicity)
        samples[b] = shift_matrix(distributions(mass, edges), weights)
    a, c = np.triu_indices(grouping.n_groups, k=0)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return pd.DataFrame({
        "group_a": [grouping.labels[i] for i in a],
        "group_b": [grouping.labels[i] for i in c],
        "d": d[a, c],
        "low": low[a, c],
        "high": high[a, c],
        "std": samples.std(axis=0, ddof=1)[a, c] if plan.bootstrap > 1 else np.zeros(len(a)),
    })


def model_pairs(plan: AnalysisPlan, layer_counts: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
    """D between every pair of analysed models, labelled same family / task / data type / dataset
    (False where either side is missing)."""
    grouping = Grouping("model", ("model",), tuple(str(i) for i in range(plan.n_models)), plan.model_codes)
    h = group_histograms(plan, grouping, layer_counts, edges)
    d = shift_matrix(h.probabilities, weights)
    a, b = upper_pairs(plan.n_models)
    models = plan.models
    out = pd.DataFrame({
        "model_a": models["model_id"].to_numpy(np.int64)[a],
        "model_b": models["model_id"].to_numpy(np.int64)[b],
        "name_a": models["name"].astype(str).to_numpy()[a] if "name" in models else "",
        "name_b": models["name"].astype(str).to_numpy()[b] if "name" in models else "",
        "d": d[a, b],
    })
    for col in ("family", "task", "data_type", "dataset"):
        if col in models.columns:
            v = models[col]
            known = v.notna().to_numpy()
            vals = v.astype(object).to_numpy()
            out[f"same_{col}"] = known[a] & known[b] & (vals[a] == vals[b])
        else:
            out[f"same_{col}"] = False
    return out
