"""Which analysed models (or groups) are nearest to a query model? Pure numpy and pandas.

Everything is computed from what an analysis stores (docs/design.md §3): its PCA, its bin edges and
the coefficient counts of its units, never from the filter store. A *unit* is a block of counts
that belongs to one model and one depth decile: a (model, decile) row of ``model_histograms.npz``
for the ``filters`` and ``models`` weightings, a layer of ``layer_histograms.npz`` for ``layers``.
A query is given as the same kind of blocks (the layers of a checkpoint, or the units of an
analysed model), so one rule builds every distribution: the weighting's unit sums of
:mod:`filtershift.analysis.histograms`, then its eps floor and normalisation. Hence
``D(query, model)`` for an analysed model is the D of the analysis's own ``model_pairs`` table.

Per neighbour the table holds D, D restricted to each depth decile (``NaN`` where either side has
no filters there), and each component's share ``q_i · symKL_i`` of D. A neighbour whose stored rows
have the query's checksum is an exact weight copy: it is flagged and not ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from filtershift.analysis.divergence import symmetric_kl
from filtershift.analysis.histograms import coefficient_counts, distributions, group_mass, unit_index, unit_masses
from filtershift.analysis.pca import prepare
from filtershift.analysis.plan import MODEL_GROUPING, PlanError, make_grouping, select
from filtershift.analysis.types import PCAResult
from filtershift.errors import FiltershiftError

N_DECILES = 10
N_TOP_COMPONENTS = 3
META_COLUMNS = ("task", "data_type", "dataset", "family")
CHECKSUM_COLUMN = "rows_sha256"


class NearestError(FiltershiftError, ValueError):
    """A query that cannot be answered; the message names the model, file or option and the fix."""


@dataclass(frozen=True, eq=False)
class Units:
    """Coefficient counts ``(U, 9, n_bins)`` of units, each of one model (``model``: its position in
    the analysed models table) and one depth decile (``decile``, 0..9)."""

    counts: np.ndarray
    model: np.ndarray
    decile: np.ndarray

    def of_model(self, position: int) -> "Units":
        """The units of one model, renumbered as model 0."""
        keep = self.model == position
        return Units(self.counts[keep], np.zeros(int(keep.sum()), dtype=np.int64), self.decile[keep])


def model_decile_units(decile_counts: np.ndarray) -> Units:
    """The non-empty (model, decile) blocks of ``decile_counts`` (M, 10, 9, n_bins)."""
    m, d = decile_counts.shape[:2]
    counts = decile_counts.reshape((m * d,) + decile_counts.shape[2:])
    keep = counts[:, 0].sum(axis=-1) > 0
    model = np.repeat(np.arange(m, dtype=np.int64), d)
    decile = np.tile(np.arange(d, dtype=np.int64), m)
    return Units(counts[keep], model[keep], decile[keep])


def layer_units(layer_counts: np.ndarray, layer_model: np.ndarray, layer_decile: np.ndarray) -> Units:
    """Layers as units (the ``layers`` weighting); ``layer_model`` gives each layer's model position."""
    return Units(np.asarray(layer_counts), np.asarray(layer_model, dtype=np.int64), np.clip(np.asarray(layer_decile, dtype=np.int64), 0, N_DECILES - 1))


@dataclass(frozen=True, eq=False)
class QueryCounts:
    """A checkpoint's filters binned with an analysis's edges: counts per layer ``(L, 9, n_bins)``
    and the share of its coefficients that fell outside the edges and were put in the edge bins."""

    counts: np.ndarray
    clipped: float


def query_counts(kernels: np.ndarray, layer_sizes: np.ndarray, pca: PCAResult, edges: np.ndarray) -> QueryCounts:
    """Scale raw float32 filters ``kernels`` (n, 9) as ``pca`` was fitted, project them, clip the
    coefficients to ``[edges[0], edges[-1]]`` (outliers go to the edge bins) and count them per
    layer (``layer_sizes``: filters per layer, in row order)."""
    c = pca.project(prepare(kernels, pca.scaling))
    lo, hi = float(edges[0]), float(edges[-1])
    outside = int(np.count_nonzero((c < lo) | (c > hi)))
    c = np.clip(c, lo, hi)
    bounds = np.concatenate([[0], np.cumsum(np.asarray(layer_sizes, dtype=np.int64))])
    counts = np.stack([coefficient_counts(c[a:b], edges) for a, b in zip(bounds[:-1], bounds[1:])])
    return QueryCounts(counts, outside / c.size if c.size else 0.0)


def group_distributions(units: Units, unit_codes: np.ndarray, n_groups: int, weighting: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distributions ``(n_groups, 9, n_bins)`` of the groups ``unit_codes`` assigns units to (code
    < 0: left out), built as the analysis builds a group's (its weighting's unit sums, eps floor,
    normalisation), and whether each group has any filters."""
    keep = unit_codes >= 0
    codes, model, counts = unit_codes[keep], units.model[keep], units.counts[keep]
    if not len(codes):
        return distributions(np.zeros((n_groups,) + units.counts.shape[1:]), edges), np.zeros(n_groups, dtype=bool)
    unit_of_row, unit_group, _ = unit_index(codes, model)
    value, norm = unit_masses(counts, unit_of_row, len(unit_group), weighting)
    mass = group_mass(value, norm, unit_group, n_groups, weighting)
    present = np.bincount(codes, weights=counts[:, 0].sum(axis=-1), minlength=n_groups) > 0
    return distributions(mass, edges), present


def grouped_distributions(units: Units, group_of_model: np.ndarray, n_groups: int, weighting: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group its whole distribution ``(G, 9, B)`` and its per-decile ones ``(G, 10, 9, B)``
    with their presence ``(G, 10)``; ``group_of_model[m]`` is model m's group (< 0: none)."""
    codes = group_of_model[units.model]
    whole, _ = group_distributions(units, codes, n_groups, weighting, edges)
    decile_codes = np.where(codes >= 0, codes * N_DECILES + units.decile, -1)
    per_decile, present = group_distributions(units, decile_codes, n_groups * N_DECILES, weighting, edges)
    shape = (n_groups, N_DECILES)
    return whole, per_decile.reshape(shape + per_decile.shape[1:]), present.reshape(shape)


@dataclass(frozen=True, eq=False)
class Shifts:
    """D from the query to each group: ``d`` (G,), ``components`` (G, 9) = ``q_i · symKL_i`` (they
    sum to d), and ``deciles`` (G, 10), NaN where the query or the group has no filters there."""

    d: np.ndarray
    components: np.ndarray
    deciles: np.ndarray


def shifts(query: Units, groups: Units, group_of_model: np.ndarray, n_groups: int, weighting: str, edges: np.ndarray, q: np.ndarray) -> Shifts:
    """D (docs/design.md §2) between the query (all its units one model) and every group."""
    p, p_dec, p_present = grouped_distributions(query, np.zeros(1, dtype=np.int64), 1, weighting, edges)
    g, g_dec, g_present = grouped_distributions(groups, group_of_model, n_groups, weighting, edges)
    skl = symmetric_kl(p, g)
    deciles = symmetric_kl(p_dec, g_dec) @ q
    deciles[~(p_present & g_present)] = np.nan
    return Shifts(d=skl @ q, components=skl * q, deciles=deciles)


@dataclass(frozen=True)
class Query:
    """What is asked: the analysed model (``model``, its position) or a checkpoint (``model`` None),
    the grouping, how many ranked neighbours, which candidate models (``where``), the rows checksum."""

    by: str = MODEL_GROUPING
    top: int = 10
    where: str | None = None
    model: int | None = None
    checksum: str = ""


def candidate_groups(models: pd.DataFrame, query: Query) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each analysed model's group code (-1: not a candidate) and the group labels."""
    if query.by != MODEL_GROUPING and query.by not in models.columns and not all(c.strip() in models.columns for c in query.by.split("+")):
        raise NearestError(
            f"--by {query.by}: not a column of the analysed models. nearest compares whole models: group them by "
            f"'{MODEL_GROUPING}' or by model columns: {', '.join(map(str, models.columns))} (cross them with '+')."
        )
    try:
        chosen = select(models, query.where, "--where")
    except PlanError as exc:
        raise NearestError(str(exc)) from None
    if query.by == MODEL_GROUPING and query.model is not None:
        chosen = chosen.copy()
        chosen[query.model] = False
    if not chosen.any():
        raise NearestError(f"--where {query.where!r} leaves no model to compare with; loosen the condition.")
    grouping = make_grouping(query.by, models[chosen].reset_index(drop=True), models)
    codes = np.full(len(models), -1, dtype=np.int64)
    codes[np.flatnonzero(chosen)] = grouping.codes
    return codes, grouping.labels


def neighbours(models: pd.DataFrame, query_units: Units, units: Units, query: Query, weighting: str, edges: np.ndarray, q: np.ndarray) -> pd.DataFrame:
    """The neighbour table, sorted by D: ``name``, ``d``, ``copy``, ``rank`` (copies: none; ranks
    beyond ``query.top`` dropped), metadata (or ``n_models`` for groups), ``d_decile_0..9``,
    ``d_pc_1..9`` and ``top_components``."""
    group_of_model, labels = candidate_groups(models, query)
    s = shifts(query_units, units, group_of_model, len(labels), weighting, edges, q)
    table = pd.DataFrame({"name": list(labels), "d": s.d})
    table["copy"] = _copies(models, group_of_model, len(labels), query)
    if query.by == MODEL_GROUPING:
        member = np.zeros(len(labels), dtype=np.int64)
        member[group_of_model[group_of_model >= 0]] = np.flatnonzero(group_of_model >= 0)
        for col in [c for c in META_COLUMNS if c in models.columns]:
            table[col] = models[col].to_numpy()[member]
    else:
        table["n_models"] = np.bincount(group_of_model[group_of_model >= 0], minlength=len(labels))
    for k in range(N_DECILES):
        table[f"d_decile_{k}"] = s.deciles[:, k]
    for i in range(s.components.shape[1]):
        table[f"d_pc_{i + 1}"] = s.components[:, i]
    table["top_components"] = [tuple(int(i) + 1 for i in np.argsort(-row, kind="stable")[:N_TOP_COMPONENTS]) for row in s.components]
    return rank(table, query.top)


def rank(table: pd.DataFrame, top: int) -> pd.DataFrame:
    """Sort by D, number the non-copies 1, 2, ... (copies get no rank), keep the copies and the
    first ``top`` ranked rows."""
    table = table.sort_values("d", kind="stable").reset_index(drop=True)
    ranked = ~table["copy"].to_numpy()
    table.insert(0, "rank", pd.array(np.where(ranked, np.cumsum(ranked), 0), dtype="Int64"))
    table.loc[~ranked, "rank"] = pd.NA
    keep = ~ranked | (table["rank"].fillna(0).to_numpy() <= top)
    return table[keep].reset_index(drop=True)


def _copies(models: pd.DataFrame, group_of_model: np.ndarray, n_groups: int, query: Query) -> np.ndarray:
    """Per group: is it one model whose rows checksum equals the query's (an exact weight copy)?"""
    out = np.zeros(n_groups, dtype=bool)
    if query.by != MODEL_GROUPING or not query.checksum or CHECKSUM_COLUMN not in models.columns:
        return out
    same = (models[CHECKSUM_COLUMN].astype(object).to_numpy() == query.checksum) & (group_of_model >= 0)
    out[group_of_model[same]] = True
    return out


def model_position(models: pd.DataFrame, name: str) -> int:
    """The position of the analysed model called ``name`` (or with that model_id)."""
    names = models["name"].astype(str).to_numpy() if "name" in models.columns else np.array([], dtype=str)
    hits = np.flatnonzero(names == name)
    if not len(hits) and name.isdigit():
        hits = np.flatnonzero(models["model_id"].to_numpy() == int(name))
    if len(hits) != 1:
        close = [n for n in names if name.lower() in n.lower()][:5]
        problem = "is not one of the analysed models" if not len(hits) else f"names {len(hits)} analysed models; give its model_id"
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise NearestError(f"--model {name!r} {problem}.{hint} A model outside the analysis is queried with --checkpoint PATH.")
    return int(hits[0])
