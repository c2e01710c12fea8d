"""Filter scale, group sizes and layer quality (paper Figs. 6, 10, 11, and the degeneracy
statistics): box plots and bars over the small tables of the results."""

from __future__ import annotations

import holoviews as hv
import pandas as pd

from filtershift.figures._style import WIDTH, decile_label, is_ordered, natural_order, pretty

DECILE = hv.Dimension("decile", label="depth decile (relative depth of the layer)")


def _with_decile(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["decile"] = [decile_label(d) for d in out["depth_decile"]]
    return out.sort_values("depth_decile", kind="stable")


def range_by_decile(model_depth_range: pd.DataFrame) -> hv.BoxWhisker:
    """Mean filter range (max − min of a filter's 9 raw weights, averaged over a model's layers of
    that decile) across models, one box per depth decile (Fig. 6)."""
    df = _with_decile(model_depth_range)
    box = hv.BoxWhisker(df, DECILE, hv.Dimension("mean_range", label="mean filter range (max − min weight, raw units)"))
    return box.opts(
        title=f"Filter scale by depth ({df['model_id'].nunique()} models; one value per model and decile)",
        width=WIDTH, height=380, xrotation=30, logy=bool((df["mean_range"] > 0).all()), show_grid=True, box_fill_color="#9ecae1",
    )


def group_counts(counts: pd.DataFrame, by: str) -> hv.Layout:
    """Filters and models per group on a log scale (Figs. 10–11)."""
    df = counts.copy()
    df["group"] = df["group"].astype(str)
    order = natural_order(list(df["group"])) if is_ordered(by) else list(df.sort_values("n_filters", ascending=False)["group"])
    df = df.set_index("group").loc[order].reset_index()
    if by == "depth_decile":
        df["group"] = [decile_label(g) for g in df["group"]]
    g = hv.Dimension("group", label=pretty(by))
    filters = hv.Bars(df, g, hv.Dimension("n_filters", label="filters (log scale)")).opts(
        title=f"Filters per {pretty(by)}", logy=True, color="#3182bd")
    models = hv.Bars(df, g, hv.Dimension("n_models", label="models (log scale)")).opts(
        title=f"Models per {pretty(by)}", logy=True, color="#e6550d")
    w = int(min(WIDTH, max(320, 30 * len(df) + 160)))
    filters = filters.opts(ylim=(0.5, 2.0 * max(1, int(df["n_filters"].max()))))  # log axis: explicit lower bound
    models = models.opts(ylim=(0.5, 2.0 * max(1, int(df["n_models"].max()))))
    return (filters + models).opts(hv.opts.Bars(width=w, height=340, xrotation=45, tools=["hover"], show_grid=True)).cols(2)


def layer_quality(stats: pd.DataFrame) -> hv.Layout:
    """Per depth decile: sparsity and variance entropy of the layers (box plots) and the share of
    degenerate layers (bars) — the paper's quality statistics of docs/design.md §2."""
    df = _with_decile(stats)
    sparsity = hv.BoxWhisker(df, DECILE, hv.Dimension("sparsity", label="sparsity S (share of near-zero filters)", range=(0, 1))).opts(
        title="Layer sparsity by depth", box_fill_color="#a1d99b")
    entropy = hv.BoxWhisker(df, DECILE, hv.Dimension("variance_entropy", label="variance entropy H (log10 units)")).opts(
        title="Layer variance entropy by depth", box_fill_color="#fdae6b")
    share = df.groupby(["depth_decile", "decile"], sort=True)["degenerate"].agg(["mean", "size"]).reset_index()
    share["percent"] = 100 * share["mean"]
    degenerate = hv.Bars(share, DECILE, [hv.Dimension("percent", label="degenerate layers", unit="%", range=(0, 100)), "size"]).opts(
        title="Share of degenerate layers by depth", color="#de2d26", tools=["hover"])
    return (sparsity + entropy + degenerate).opts(
        hv.opts.BoxWhisker(width=WIDTH // 3 + 20, height=360, xrotation=45, show_grid=True),
        hv.opts.Bars(width=WIDTH // 3 + 20, height=360, xrotation=45, show_grid=True),
    ).cols(3).opts(title=f"Layer quality by depth decile ({len(df):,} layers)")


def phenotype_shares(phenotypes: pd.DataFrame, stats: pd.DataFrame) -> hv.Bars:
    """Share of layers of each automatic phenotype per depth decile (stacked bars)."""
    df = phenotypes if "depth_decile" in phenotypes else phenotypes.merge(stats[["layer_id", "depth_decile"]], on="layer_id", how="left")
    df = _with_decile(df)
    tab = df.groupby(["depth_decile", "decile", "phenotype"]).size().rename("n").reset_index()
    tab["percent"] = 100 * tab["n"] / tab.groupby("depth_decile")["n"].transform("sum")
    bars = hv.Bars(tab, [DECILE, hv.Dimension("phenotype", label="phenotype")], hv.Dimension("percent", label="layers", unit="%"))
    return bars.opts(stacked=True, title="Automatic phenotype of the layers by depth", width=WIDTH, height=360,
                     xrotation=30, tools=["hover"], legend_position="right", cmap={"sun": "#fdb863", "spikes": "#5e3c99", "symbols": "#1b9e77"})
