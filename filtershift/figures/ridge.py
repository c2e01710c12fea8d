"""Ridge plots: the coefficient distribution of each component per group, overlapping rows
(paper Figs. 2, 12–17). Reads the group histograms of the results only."""

from __future__ import annotations

import holoviews as hv
import numpy as np

from filtershift.analysis.types import GroupHistograms
from filtershift.figures._style import MAX_WIDTH, plot_width, decile_label, is_ordered, label_px, natural_order, pretty, short_labels, units

MASS = 0.998  # share of the coefficients inside the displayed range (the bins behind D are unchanged)
PANEL_WIDTH = 330  # plot area of one ridge panel
ROW_PX = 26  # height of one group's row; a panel is never lower than MIN_HEIGHT
MIN_HEIGHT = 260
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def ridge_order(hist: GroupHistograms, order: list[str] | None = None) -> list[str]:
    """Rows top to bottom: ``order`` if given, numeric groupings in order, else as analysed."""
    if order is not None:
        return [str(g) for g in order]
    labels = list(hist.labels)
    return natural_order(labels) if is_ordered(hist.by) else labels


def central_range(hist: GroupHistograms, component: int, mass: float = MASS) -> tuple[float, float]:
    """The coefficient range holding the central ``mass`` of all groups' coefficients of
    ``component`` (from the histogram counts, to the bin edges): a few outliers do not set it."""
    counts = np.asarray(hist.counts[:, component], dtype=np.float64).sum(axis=0)
    edges = np.asarray(hist.edges, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float(edges[0]), float(edges[-1])
    cum = np.cumsum(counts) / total
    tail = (1.0 - mass) / 2
    lo = int(np.searchsorted(cum, tail, side="right"))
    hi = int(np.searchsorted(cum, 1.0 - tail, side="left"))
    return float(edges[lo]), float(edges[min(hi + 1, len(edges) - 1)])


def tick_labels(hist: GroupHistograms, rows: list[str]) -> dict[str, str]:
    """``group (n)`` per row (n: its filters), the group shortened to fit beside the panel."""
    index = {g: i for i, g in enumerate(hist.labels)}
    text = short_labels([decile_label(g) if hist.by == "depth_decile" else g for g in rows], 22)
    return {g: f"{t} ({int(hist.n_filters[index[g]]):,})" for g, t in zip(rows, text.values())}


def ridge_plot(hist: GroupHistograms, component: int, order: list[str] | None = None, overlap: float = 1.6,
               q: float | None = None, width: int | None = None, scaling: str = "scaled", labels: bool = True) -> hv.Polygons:
    """One component's coefficient distribution per group, each row normalised to its own peak and
    drawn ``overlap`` rows high; the first group of :func:`ridge_order` is the top row. The x range
    is the central 99.8 % of the coefficients (:func:`central_range`); ``labels`` puts the group
    names on the y axis (the first panel of a row of panels)."""
    rows = ridge_order(hist, order)
    index = {g: i for i, g in enumerate(hist.labels)}
    centres = 0.5 * (hist.edges[1:] + hist.edges[:-1])
    xdim = hv.Dimension("c", label=f"coefficient c{component + 1} ({units(scaling)}; central {100 * MASS:g} %)")
    names = tick_labels(hist, rows)
    ydim = hv.Dimension("y", label=pretty(hist.by))
    polys, ticks = [], []
    for r, g in enumerate(rows):
        base = float(len(rows) - 1 - r)
        p = hist.probabilities[index[g], component]
        peak = float(p.max()) or 1.0
        top = base + overlap * p / peak
        # one closed polygon per group: along the density, back along the baseline
        polys.append({"c": np.r_[centres, centres[::-1]], "y": np.r_[top, np.full_like(top, base)], "group": g,
                      "filters": int(hist.n_filters[index[g]])})
        ticks.append((base, names[g]))
    colors = {g: PALETTE[r % len(PALETTE)] for r, g in enumerate(rows)}
    shapes = hv.Polygons(polys, [xdim, ydim], ["group", "filters"]).opts(
        color="group", cmap=colors, alpha=0.55, line_color="black", line_width=0.6, tools=["hover"], show_legend=False)
    title = f"c{component + 1}" + (f" (PC {component + 1}, {100 * q:.1f} % of variance)" if q is not None else "")
    margin = label_px(names.values()) + 30 if labels else 20
    return shapes.opts(
        title=title, yticks=ticks, width=width or PANEL_WIDTH + margin, height=max(MIN_HEIGHT, ROW_PX * len(rows) + 120),
        ylabel=f"{pretty(hist.by)} (filters)", xlabel=xdim.label, show_grid=False, ylim=(-0.1, len(rows) - 1 + overlap + 0.1),
        xlim=central_range(hist, component), yaxis="left" if labels else None,
    )


def ridge_grid(hist: GroupHistograms, q: np.ndarray | None = None, components: tuple[int, ...] = tuple(range(9)),
               order: list[str] | None = None, scaling: str = "scaled") -> hv.Layout:
    """Ridge plots of every component in ``components`` (3 per row, the group names on the first of
    a row) for the groups of ``hist``; 2 per row where the names leave no room for 3."""
    first = ridge_plot(hist, components[0], order, scaling=scaling)
    per_row = 3 if plot_width(first) + 2 * (PANEL_WIDTH + 20) <= MAX_WIDTH else 2
    panels = [ridge_plot(hist, c, order, q=None if q is None else float(q[c]), scaling=scaling, labels=k % per_row == 0)
              for k, c in enumerate(components)]
    return hv.Layout(panels).cols(per_row).opts(
        title=f"Distribution of the PCA coefficients by {pretty(hist.by)} (each row normalised to its peak)")

