"""Filter scale, group sizes and layer quality (paper Figs. 6, 10, 11, and the degeneracy
statistics): box plots and bars over the small tables of the results."""

from __future__ import annotations

import holoviews as hv
import pandas as pd

from filtershift.analysis.layerstats import TH_B, TH_K, TH_L, TH_X0
from filtershift.figures._style import MAX_WIDTH, WIDTH, decile_label, is_ordered, label_px, natural_order, note, pretty, short_labels

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
    """Filters and models per group on a log scale (Figs. 10–11); long group names shortened on the
    axis (in full in the hover); side by side where both fit the window, else one above the other."""
    df = counts.copy()
    df["group"] = df["group"].astype(str)
    order = natural_order(list(df["group"])) if is_ordered(by) else list(df.sort_values("n_filters", ascending=False)["group"])
    df = df.set_index("group").loc[order].reset_index()
    df["name"] = [decile_label(g) for g in df["group"]] if by == "depth_decile" else df["group"]
    df["group"] = df["name"].map(short_labels(df["name"]))
    g = hv.Dimension("group", label=pretty(by))
    name = hv.Dimension("name", label="group")
    filters = hv.Bars(df, g, [hv.Dimension("n_filters", label="filters (log scale)"), name]).opts(
        title=f"Filters per {pretty(by)}", logy=True, color="#3182bd")
    models = hv.Bars(df, g, [hv.Dimension("n_models", label="models (log scale)"), name]).opts(
        title=f"Models per {pretty(by)}", logy=True, color="#e6550d")
    side = 20 * len(df) + 160 <= MAX_WIDTH // 2
    w = int(min(MAX_WIDTH // 2 if side else MAX_WIDTH, max(320, 20 * len(df) + 160)))
    filters = filters.opts(ylim=(0.5, 2.0 * max(1, int(df["n_filters"].max()))))  # log axis: explicit lower bound
    models = models.opts(ylim=(0.5, 2.0 * max(1, int(df["n_models"].max()))))
    height = 260 + int(0.75 * label_px(df["group"]))  # the 45° tick labels below the bars
    return (filters + models).opts(hv.opts.Bars(width=w, height=height, xrotation=45, tools=["hover"], show_grid=True)).cols(2 if side else 1)


DEGENERATE_RULE = (
    "A layer is degenerate if its variance entropy H ≥ TH(n) − 0.02 (its filters are as spread over the 9 "
    "directions as n random filters: no structure learnt), or if H < 0.5 and its sparsity S ≥ 0.14 (many "
    f"near-zero filters). TH(n) = {TH_L:.4f} / (1 + exp(−{TH_K:.4f} (log2 n − {TH_X0:.4f}))) − {-TH_B:.4f}, "
    "n = the layer's number of filters (docs/design.md §2)."
)


def _box_or_note(df: pd.DataFrame, column: str, label: str, title: str, color: str, why: str) -> hv.Element:
    """A box plot of ``column`` per decile, or a note saying why there is nothing to see."""
    values = df[column].dropna()
    if values.empty or values.nunique() == 1:
        value = "no value" if values.empty else f"{values.iloc[0]:g} in every layer"
        return note(f"{title}: {label} is {value} — {why}", width=WIDTH // 3 + 20, height=360)
    return hv.BoxWhisker(df, DECILE, hv.Dimension(column, label=label, range=(0, 1) if column == "sparsity" else (None, None))).opts(
        title=title, box_fill_color=color)


def layer_quality(stats: pd.DataFrame) -> hv.Layout:
    """Per depth decile: sparsity and variance entropy of the layers (box plots) and the share of
    degenerate layers (bars) — the paper's quality statistics of docs/design.md §2 — and the
    degenerate rule written out; a constant statistic is a note saying so, not an empty box."""
    df = _with_decile(stats)
    sparsity = _box_or_note(df, "sparsity", "sparsity S (share of near-zero filters)", "Sparsity S by depth", "#a1d99b",
                            "no layer has near-zero filters.")
    entropy = _box_or_note(df, "variance_entropy", "variance entropy H (log10 units)", "Variance entropy H by depth",
                           "#fdae6b", "every layer spreads its variance alike.")
    share = df.groupby(["depth_decile", "decile"], sort=True)["degenerate"].agg(["mean", "size"]).reset_index()
    share["percent"] = 100 * share["mean"]
    degenerate = hv.Bars(share, DECILE, [hv.Dimension("percent", label="degenerate layers", unit="%", range=(0, 100)), "size"]).opts(
        title="Degenerate layers by depth" + ("" if share["percent"].any() else ": none"),
        color="#de2d26", tools=["hover"])
    rule = note(DEGENERATE_RULE, width=MAX_WIDTH - 3 * (WIDTH // 3 + 20), height=360)  # beside the panels
    return (sparsity + entropy + degenerate + rule).opts(
        hv.opts.BoxWhisker(width=WIDTH // 3 + 20, height=360, xrotation=45, show_grid=True),
        hv.opts.Bars(width=WIDTH // 3 + 20, height=360, xrotation=45, show_grid=True),
    ).cols(4).opts(title=f"Layer quality by depth decile ({len(df):,} layers)")


def phenotype_shares(phenotypes: pd.DataFrame, stats: pd.DataFrame) -> hv.Bars:
    """Share of layers of each automatic phenotype per depth decile (stacked bars)."""
    df = phenotypes if "depth_decile" in phenotypes else phenotypes.merge(stats[["layer_id", "depth_decile"]], on="layer_id", how="left")
    df = _with_decile(df)
    tab = df.groupby(["depth_decile", "decile", "phenotype"]).size().rename("n").reset_index()
    tab["percent"] = 100 * tab["n"] / tab.groupby("depth_decile")["n"].transform("sum")
    bars = hv.Bars(tab, [DECILE, hv.Dimension("phenotype", label="phenotype")], hv.Dimension("percent", label="layers", unit="%"))
    return bars.opts(stacked=True, title="Automatic phenotype of the layers by depth", width=WIDTH, height=360,
                     xrotation=30, tools=["hover"], legend_position="right", cmap={"sun": "#fdb863", "spikes": "#5e3c99", "symbols": "#1b9e77"})
