"""The analysis plan: everything a run will do, decided from the two tables before any filter moves.

Pure: takes the models and layers tables (pandas) and the store's row count and chunking; imports
neither zarr nor dask. The plan is a frozen value; tests inspect it without running anything.

Layers are the unit of everything: the analysed layers get positions ``0..L-1`` in row order, and
every grouping is a lookup ``layer position -> group code`` (docs/design.md §4: the plan holds
the lookups layer_id -> position -> group code). The streaming pass histograms per layer; any grouping,
weighting and bootstrap resample is then a sum over layers, with no further read of the filters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from filtershift.analysis.settings import N_BINS_2D, AnalysisSettings, invalid
from filtershift.analysis.where import diagnose, not_a_condition, quoted
from filtershift.errors import FiltershiftError

N_BINS = 70  # the paper's 70 uniform bins over [min, max] of all coefficients (docs/design.md §3)
MAX_GROUPS_BOOTSTRAP = 256
MODEL_GROUPING = "model"
# Model-table columns that clash with layer columns are exposed as model_<name> in --where/--by.
_CLASHING_MODEL_COLUMNS = ("name", "n_filters", "path", "status", "error")


class PlanError(FiltershiftError, ValueError):
    """An analysis that cannot be planned; the message says how to fix the command line."""


@dataclass(frozen=True, eq=False)
class Grouping:
    """One meta-grouping: ``codes[p]`` is the group of analysed layer position ``p``."""

    name: str
    columns: tuple[str, ...]
    labels: tuple[str, ...]
    codes: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class AnalysisPlan:
    """What ``filtershift analyze`` will compute, and over which rows and blocks of the store.

    ``layers`` is the analysed layers' table (layers joined with their model's columns) in row
    order; its position is the layer position used everywhere. ``layer_lookup[layer_id]`` is that
    position or -1 (not analysed); ``fit_lookup[layer_id]`` is True for the layers the PCA is
    fitted on. ``blocks`` / ``fit_blocks`` are the store chunks that hold analysed / fit rows.
    """

    scaling: str
    pca_method: str
    weighting: str
    groupings: tuple[Grouping, ...]
    layers: pd.DataFrame = field(repr=False)
    models: pd.DataFrame = field(repr=False)
    layer_lookup: np.ndarray = field(repr=False)
    fit_lookup: np.ndarray = field(repr=False)
    model_codes: np.ndarray = field(repr=False)
    blocks: tuple[int, ...] = field(repr=False)
    fit_blocks: tuple[int, ...] = field(repr=False)
    n_analysed: int = 0
    n_fit: int = 0
    where: str | None = None
    fit_on: str | None = None
    n_bins: int = N_BINS
    n_bins_2d: int = N_BINS_2D
    pairs: tuple[tuple[int, int], ...] = ()
    max_groups_2d: int = 64
    bootstrap: int = 0
    max_groups_bootstrap: int = MAX_GROUPS_BOOTSTRAP
    seed: int = 0
    basis: str | None = None
    reused: np.ndarray | None = field(default=None, repr=False)  # on a basis: per position, taken from it

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def groupings_2d(self) -> tuple[Grouping, ...]:
        return tuple(g for g in self.groupings if g.n_groups <= self.max_groups_2d)

    def grouping(self, name: str) -> Grouping:
        for g in self.groupings:
            if g.name == name:
                return g
        raise KeyError(name)

    def describe(self) -> str:
        """A short printable summary of the plan."""
        lines = [
            f"analysis: {self.n_analysed:,} filters in {self.n_layers:,} layers of {self.n_models:,} models"
            + (f" (where {self.where})" if self.where else ""),
            f"  PCA ({self.pca_method}, {self.scaling}) fitted on {self.n_fit:,} filters"
            + (f" (fit-on {self.fit_on})" if self.fit_on else ""),
            f"  reads {len(self.blocks)} store chunks ({len(self.fit_blocks)} for the fit); "
            f"{self.n_bins} bins, weighting by {self.weighting}"
            + (f", bootstrap B={self.bootstrap}" if self.bootstrap else ""),
        ]
        if self.reused is not None:
            lines.append(f"  on the basis {self.basis}: PCA and bins from it, {int(self.reused.sum()):,} layers taken from it, "
                         f"{int((~self.reused).sum()):,} read")
        for g in self.groupings:
            lines.append(f"  by {g.name}: {g.n_groups} groups" + ("" if g.n_groups <= self.max_groups_2d else " (no 2-D histograms)"))
        return "\n".join(lines)


def layer_table(models: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Layers joined with their model's columns (clashing model columns renamed ``model_<name>``)."""
    m = models.rename(columns={c: f"model_{c}" for c in _CLASHING_MODEL_COLUMNS if c in models.columns})
    m = m[[c for c in m.columns if c == "model_id" or c not in layers.columns]]
    table = layers.merge(m, on="model_id", how="left", validate="many_to_one")
    return table.sort_values("start", kind="stable").reset_index(drop=True)


def select(table: pd.DataFrame, expr: str | None, option: str) -> np.ndarray:
    """Boolean mask of the rows of ``table`` matching the pandas query ``expr`` (all if None).

    The usual mistakes are named before pandas sees the text (``analysis/where.py``)."""
    if not expr:
        return np.ones(len(table), dtype=bool)
    problem = diagnose(expr, table.columns, option)
    if problem:
        raise PlanError(f"{quoted(option, expr)}: {problem}")
    try:
        mask = table.eval(expr)
    except Exception as exc:  # pandas raises many kinds here; all mean a bad expression
        raise PlanError(
            f"{quoted(option, expr)} could not be evaluated ({type(exc).__name__}: {exc}). It is a pandas "
            f"expression over the layer and model columns: {', '.join(map(str, table.columns))}; "
            f"e.g. {option} \"data_type == 'natural' and depth_decile == 0\"."
        ) from None
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (len(table),):
        raise PlanError(not_a_condition(expr, mask.dtype, option))
    return mask


def make_grouping(name: str, table: pd.DataFrame, models: pd.DataFrame) -> Grouping:
    """The grouping ``name`` (a column, ``model``, or columns crossed with ``+``) over ``table``."""
    columns = tuple(c.strip() for c in name.split("+"))
    if columns == (MODEL_GROUPING,):
        ids = table["model_id"].to_numpy()
        uniq = np.unique(ids)
        names = models.set_index("model_id")["name"] if "name" in models.columns else pd.Series(dtype=str)
        labels = [str(names.get(m, m)) for m in uniq]
        if len(set(labels)) < len(labels):
            labels = [f"{m}:{lab}" for m, lab in zip(uniq, labels)]
        return Grouping(name, columns, tuple(labels), np.searchsorted(uniq, ids).astype(np.int64))
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PlanError(
            f"--by {name}: no column {', '.join(missing)}. Groupings are '{MODEL_GROUPING}' or columns of the "
            f"layers/models tables: {', '.join(map(str, table.columns))} (cross them with '+')."
        )
    keys = [_labels_of(table[c]) for c in columns]
    combined = keys[0] if len(keys) == 1 else pd.Series([" / ".join(t) for t in zip(*keys)], index=table.index)
    order = _group_order(table, columns, combined)
    lookup = {lab: i for i, lab in enumerate(order)}
    codes = combined.map(lookup).to_numpy(np.int64)
    return Grouping(name, columns, tuple(order), codes)


def _labels_of(col: pd.Series) -> pd.Series:
    out = col.astype(object).where(col.notna(), "NA")
    return out.map(lambda v: str(v))


def _group_order(table: pd.DataFrame, columns: tuple[str, ...], combined: pd.Series) -> list[str]:
    """Groups sorted by their column values (numbers numerically), missing values last."""
    frame = table[list(columns)].copy()
    frame["_label"] = combined.to_numpy()
    frame = frame.drop_duplicates("_label")
    frame = frame.sort_values(list(columns), na_position="last", kind="stable")
    return frame["_label"].tolist()


def chunk_blocks(starts: np.ndarray, stops: np.ndarray, chunk_rows: int) -> tuple[int, ...]:
    """Indices of the store chunks that intersect any of the row ranges ``[start, stop)``."""
    blocks: set[int] = set()
    for a, b in zip(starts.tolist(), stops.tolist()):
        if b > a:
            blocks.update(range(a // chunk_rows, (b - 1) // chunk_rows + 1))
    return tuple(sorted(blocks))


def make_plan(models: pd.DataFrame, layers: pd.DataFrame, chunk_rows: int, settings: AnalysisSettings | None = None, **changes) -> AnalysisPlan:
    """Plan the analysis ``settings`` (with ``changes`` to its fields) of the database described by
    ``models`` and ``layers`` (pure)."""
    settings = replace(settings or AnalysisSettings(), **changes)
    if problem := invalid(settings):
        raise PlanError(problem)
    table = layer_table(models, layers)
    table = table[table["stop"] > table["start"]]
    where, fit_on = settings.where, settings.fit_on
    analysed = select(table, where, "--where")
    fit = select(table, fit_on, "--fit-on") if fit_on else analysed
    fit_table = table[fit]
    table = table[analysed].reset_index(drop=True)
    if table.empty:
        raise PlanError(f"--where {where!r} selects no filters; loosen the condition." if where else "the database holds no filters; extract some first.")
    if fit_table.empty or int((fit_table["stop"] - fit_table["start"]).sum()) < 9:
        raise PlanError(f"--fit-on {fit_on!r} selects fewer than 9 filters; a full-rank PCA needs at least 9.")
    max_id = int(max(layers["layer_id"].max(), 0))
    layer_lookup = np.full(max_id + 1, -1, dtype=np.int64)
    layer_lookup[table["layer_id"].to_numpy(np.int64)] = np.arange(len(table))
    fit_lookup = np.zeros(max_id + 1, dtype=bool)
    fit_lookup[fit_table["layer_id"].to_numpy(np.int64)] = True
    used_models = models[models["model_id"].isin(table["model_id"])].sort_values("model_id").reset_index(drop=True)
    model_codes = np.searchsorted(used_models["model_id"].to_numpy(), table["model_id"].to_numpy()).astype(np.int64)
    pair_list = (
        tuple((i, i + 1) for i in range(8)) if settings.pairs == "consecutive" else tuple((i, j) for i in range(9) for j in range(i + 1, 9))
    )
    return AnalysisPlan(
        scaling=settings.scaling,
        pca_method=settings.pca,
        weighting=settings.weighting,
        groupings=tuple(make_grouping(name, table, used_models) for name in settings.by),
        layers=table,
        models=used_models,
        layer_lookup=layer_lookup,
        fit_lookup=fit_lookup,
        model_codes=model_codes,
        blocks=chunk_blocks(table["start"].to_numpy(), table["stop"].to_numpy(), chunk_rows),
        fit_blocks=chunk_blocks(fit_table["start"].to_numpy(), fit_table["stop"].to_numpy(), chunk_rows),
        n_analysed=int((table["stop"] - table["start"]).sum()),
        n_fit=int((fit_table["stop"] - fit_table["start"]).sum()),
        where=where,
        fit_on=fit_on,
        n_bins_2d=settings.bins_2d,
        pairs=pair_list,
        max_groups_2d=settings.max_groups_2d,
        bootstrap=settings.bootstrap,
        seed=settings.seed,
        basis=settings.basis,
    )


# ----------------------------------------------------------------------------------------------
# Analyses on a frozen basis (``--basis RESULTS``)


def _pairs_option(pairs) -> str:
    consecutive = tuple((i, i + 1) for i in range(8))
    return "consecutive" if tuple(tuple(int(v) for v in p) for p in pairs) == consecutive else "all"


def basis_conflict(plan: AnalysisPlan, name: str, recorded: dict) -> str | None:
    """Why the basis ``name`` cannot serve ``plan``: the first of ``--scaling``, ``--where``,
    ``--fit-on``, ``--pairs``, ``--bins-2d`` that differs from what the basis was computed with
    (``recorded``: its scaling, where, fit_on, pairs as index pairs, n_bins_2d); None when all agree."""
    wanted = {"scaling": plan.scaling, "where": plan.where, "fit_on": plan.fit_on,
              "pairs": _pairs_option(plan.pairs), "bins_2d": plan.n_bins_2d}
    had = {"scaling": recorded.get("scaling"), "where": recorded.get("where"), "fit_on": recorded.get("fit_on"),
           "pairs": _pairs_option(recorded.get("pairs", ())), "bins_2d": recorded.get("n_bins_2d")}
    for key, value in wanted.items():
        if (value or None) != (had[key] or None):
            flag = "--" + key.replace("_", "-")
            shown = f"{flag} {had[key]!r}" if had[key] is not None else f"no {flag}"
            return (f"--basis {name} was computed with {shown}, this analysis asks for "
                    f"{f'{flag} {value!r}' if value is not None else f'no {flag}'}. A basis fixes the PCA and the bins, "
                    f"so give the same {flag} as the basis (or analyse without --basis).")
    return None


def reuse_basis(plan: AnalysisPlan, basis_layers: pd.DataFrame, basis_models: pd.DataFrame, chunk_rows: int,
                pca_method: str, n_fit: int) -> AnalysisPlan:
    """The plan on its basis: an analysed layer is taken from the basis when the basis holds it
    unchanged (``basis_layers``: its layer_stats, with layer_id, model_id, n_filters; same model,
    same size, and the model's ``sha256`` / ``rows_sha256`` in ``basis_models`` unchanged); only
    the other layers' store chunks are read, and no PCA is fitted (``pca_method`` and ``n_fit``
    are the basis's)."""
    table = plan.layers
    stored = basis_layers.drop_duplicates("layer_id").set_index("layer_id").reindex(table["layer_id"].to_numpy())
    same = stored["model_id"].to_numpy(np.float64) == table["model_id"].to_numpy(np.float64)
    same &= stored["n_filters"].to_numpy(np.float64) == table["n_filters"].to_numpy(np.float64)
    models = basis_models.drop_duplicates("model_id").set_index("model_id")
    for column in ("sha256", "rows_sha256"):
        if column in models.columns and column in table.columns:
            recorded = models[column].reindex(table["model_id"].to_numpy()).astype(str).to_numpy()
            same &= recorded == table[column].astype(str).to_numpy()
    new = table[~same]
    return replace(plan, reused=same, pca_method=pca_method, n_fit=n_fit, fit_blocks=(),
                   blocks=chunk_blocks(new["start"].to_numpy(), new["stop"].to_numpy(), chunk_rows))


def read_plan(plan: AnalysisPlan) -> AnalysisPlan:
    """The part of a plan on a basis that is read: the layers not taken from the basis, at
    positions ``0..n-1`` (group codes keep the whole plan's labels)."""
    positions = np.flatnonzero(~plan.reused)
    layers = plan.layers.iloc[positions].reset_index(drop=True)
    lookup = np.full_like(plan.layer_lookup, -1)
    lookup[layers["layer_id"].to_numpy(np.int64)] = np.arange(len(layers))
    return replace(
        plan, layers=layers, layer_lookup=lookup, model_codes=plan.model_codes[positions],
        groupings=tuple(replace(g, codes=g.codes[positions]) for g in plan.groupings),
        n_analysed=int((layers["stop"] - layers["start"]).sum()), reused=None,
    )
