"""Ridge plots: the coefficient distribution of each component per group, overlapping rows
(paper Figs. 2, 12–17). Reads the group histograms of the results only."""

from __future__ import annotations

import holoviews as hv
import numpy as np

from filtershift.analysis.types import GroupHistograms
from filtershift.figures._style import decile_label, is_ordered, natural_order, pretty

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def ridge_order(hist: GroupHistograms, order: list[str] | None = None) -> list[str]:
    """Rows top to bottom: ``order`` if given, numeric groupings in order, else as analysed."""
    if order is not None:
        return [str(g) for g in order]
    labels = list(hist.labels)
    return natural_order(labels) if is_ordered(hist.by) else labels


def ridge_plot(hist: GroupHistograms, component: int, order: list[str] | None = None, overlap: float = 1.6,
               q: float | None = None, width: int = 420) -> hv.Polygons:
    """One component's coefficient distribution per group, each row scaled to its own peak and
    drawn ``overlap`` rows high; the first group of :func:`ridge_order` is the top row."""
    rows = ridge_order(hist, order)
    index = {g: i for i, g in enumerate(hist.labels)}
    centres = 0.5 * (hist.edges[1:] + hist.edges[:-1])
    xdim = hv.Dimension("c", label=f"coefficient c{component + 1} (scaled filter units)")
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
        text = decile_label(g) if hist.by == "depth_decile" else g
        ticks.append((base, f"{text} ({int(hist.n_filters[index[g]]):,} filters)"))
    colors = {g: PALETTE[r % len(PALETTE)] for r, g in enumerate(rows)}
    shapes = hv.Polygons(polys, [xdim, ydim], ["group", "filters"]).opts(
        color="group", cmap=colors, alpha=0.55, line_color="black", line_width=0.6, tools=["hover"], show_legend=False)
    title = f"c{component + 1}" + (f" (PC {component + 1}, {100 * q:.1f} % of variance)" if q is not None else "")
    return shapes.opts(
        title=title, yticks=ticks, width=width, height=max(220, 34 * len(rows) + 120), ylabel=pretty(hist.by),
        xlabel=xdim.label, show_grid=False, ylim=(-0.1, len(rows) - 1 + overlap + 0.1),
    )


def ridge_grid(hist: GroupHistograms, q: np.ndarray | None = None, components: tuple[int, ...] = tuple(range(9)),
               order: list[str] | None = None) -> hv.Layout:
    """Ridge plots of every component in ``components`` (3 per row) for the groups of ``hist``."""
    panels = [ridge_plot(hist, c, order, q=None if q is None else float(q[c])) for c in components]
    return hv.Layout(panels).cols(3).opts(
        title=f"Distribution of the PCA coefficients by {pretty(hist.by)} (each row scaled to its peak)")
