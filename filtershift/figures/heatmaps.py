"""D matrices as heatmaps (paper Figs. 3, 7) and the distribution of pairwise D (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping

import holoviews as hv
import numpy as np
import pandas as pd

from filtershift.figures._style import (
    MAX_WIDTH, plot_width, PANEL, SEQUENTIAL, WIDTH, decile_label, is_ordered, label_px, natural_order, note, pretty, short_labels,
)

COLORBAR = 90  # pixels of the colour bar and its ticks

PAIR_ATTRIBUTES = ("family", "task", "data_type", "dataset")


def group_order(d: pd.DataFrame, by: str) -> list[str]:
    """Row/column order of a D matrix: numeric groupings (depth deciles, conv index) in their own
    order; any other grouping by ascending column mean of D (the most typical group first)."""
    labels = [str(s) for s in d.columns]
    if is_ordered(by):
        return natural_order(labels)
    means = d.mean(axis=0)
    return [str(s) for s in means.sort_values(kind="stable").index]


def axis_labels(by: str, labels: list[str], counts: pd.DataFrame | None) -> dict[str, str]:
    """Tick label per group: the group (a depth decile with its depth range) and its model count."""
    n_models = {} if counts is None else dict(zip(counts["group"].astype(str), counts["n_models"]))
    out = {}
    for lab in labels:
        text = decile_label(lab) if by == "depth_decile" else lab
        n = n_models.get(lab)
        out[lab] = f"{text} (n={n})" if n is not None else text
    return out


def shift_heatmap(d: pd.DataFrame, by: str, counts: pd.DataFrame | None = None, clim: tuple[float, float] | None = None,
                  size: int | None = None, max_width: int = MAX_WIDTH) -> hv.Element:
    """The D matrix of grouping ``by`` as a heatmap, rows and columns in :func:`group_order`,
    ticks ``group (n=models)`` (long names shortened, in full in the hover); ``clim`` fixes the
    colour scale (shared across panels). Cells of 36 px, the matrix at least 300 px and at most what ``max_width`` leaves; a
    matrix with one group, or all D = 0, says so instead of drawing a blank square."""
    order = group_order(d, by)
    if len(order) < 2:
        return note(f"D by {pretty(by)}: only one group ({order[0] if order else 'none'}), so no shift to show.")
    names = axis_labels(by, order, counts)
    ticks = short_labels([names[g] for g in order])
    ordered = [ticks[names[g]] for g in order]
    m = d.loc[order, order].to_numpy(np.float64)
    n = len(order)
    long = pd.DataFrame({
        "a": np.repeat(ordered, n), "b": np.tile(ordered, n), "D": m.ravel(),
    })
    full = np.array([names[g] for g in order], dtype=object)  # object, not arrow strings: holoviews reshapes vdims
    long["column"], long["row"] = pd.Series(np.repeat(full, n), dtype=object), pd.Series(np.tile(full, n), dtype=object)
    margin = label_px(ordered)  # the row ticks on the left, the rotated column ticks below
    side = size or int(np.clip(36 * n, PANEL, max_width - margin - COLORBAR))
    top = float(np.nanmax(m)) if np.isfinite(m).any() else 0.0
    title = f"D by {pretty(by)}" + (" — every D is 0: the groups' distributions are identical" if top == 0 else "")
    heat = hv.HeatMap(
        long,
        [hv.Dimension("a", label="group (column)"), hv.Dimension("b", label="group (row)")],
        [hv.Dimension("D", label="D (nats)"), hv.Dimension("column", label="column group"), hv.Dimension("row", label="row group")],
    ).redim.values(a=ordered, b=ordered[::-1])
    return heat.opts(
        title=title, cmap=SEQUENTIAL, colorbar=top > 0 or clim is not None,
        clim=clim or (0.0, top or 1.0), width=side + margin + COLORBAR, height=side + int(0.87 * margin) + 40,
        xrotation=60, tools=["hover"], xlabel=pretty(by), ylabel=pretty(by),
    )


def shift_heatmaps(matrices: Mapping[str, pd.DataFrame], counts: Mapping[str, pd.DataFrame] | None = None, shared_scale: bool = False) -> hv.Layout:
    """One heatmap per grouping; with ``shared_scale`` one colour scale (0 to the largest D) for all.
    Two per row where two fit the window, else one."""
    clim = None
    if shared_scale and matrices:
        clim = (0.0, max(float(np.nanmax(m.to_numpy())) for m in matrices.values()) or 1.0)
    half = [shift_heatmap(m, by, (counts or {}).get(by), clim=clim, max_width=MAX_WIDTH // 2) for by, m in matrices.items()]
    narrow = all(plot_width(p) <= MAX_WIDTH // 2 for p in half)
    panels = half if narrow else [shift_heatmap(m, by, (counts or {}).get(by), clim=clim) for by, m in matrices.items()]
    return hv.Layout(panels).cols(2 if narrow else 1).opts(
        shared_axes=False, title="Distribution shift D" + (" (shared colour scale)" if clim else ""))



def pair_categories(pairs: pd.DataFrame, attributes: tuple[str, ...] = PAIR_ATTRIBUTES) -> pd.DataFrame:
    """Long table of model pairs: one row per (pair, attribute) with ``relation`` = ``same <attr>``
    or ``different <attr>`` and the pair's ``d``."""
    rows = []
    for attr in attributes:
        col = f"same_{attr}"
        if col not in pairs.columns:
            continue
        same = pairs[col].to_numpy(bool)
        rows.append(pd.DataFrame({
            "attribute": attr.replace("_", " "),
            "relation": np.where(same, "same", "different"),
            "d": pairs["d"].to_numpy(np.float64),
        }))
    if not rows:
        return pd.DataFrame({"attribute": pd.Series(dtype=str), "relation": pd.Series(dtype=str), "d": pd.Series(dtype=float)})
    return pd.concat(rows, ignore_index=True)


def pair_shift_distribution(pairs: pd.DataFrame, kind: str = "box") -> hv.Element:
    """D between every two models, split by whether they share family, task, data type, data set
    (Fig. 4), as box (``kind="box"``) or violin plots."""
    long = pair_categories(pairs)
    kdims = [hv.Dimension("attribute", label="shared attribute"), hv.Dimension("relation", label="pair")]
    vdim = hv.Dimension("d", label="D between the two models (nats)")
    element = (hv.Violin if kind == "violin" else hv.BoxWhisker)(long, kdims, vdim)
    return element.opts(
        title=f"Shift between pairs of models ({len(pairs):,} pairs), by shared attribute",
        width=WIDTH, height=400, box_fill_color="relation", cmap="Category10", show_legend=False, tools=["hover"],
    ) if kind == "box" else element.opts(
        title=f"Shift between pairs of models ({len(pairs):,} pairs), by shared attribute", width=WIDTH, height=400,
    )
