"""D matrices as heatmaps (paper Figs. 3, 7) and the distribution of pairwise D (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping

import holoviews as hv
import numpy as np
import pandas as pd

from filtershift.figures._style import PANEL, SEQUENTIAL, WIDTH, decile_label, is_ordered, natural_order, pretty

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


def shift_heatmap(d: pd.DataFrame, by: str, counts: pd.DataFrame | None = None, clim: tuple[float, float] | None = None, size: int | None = None) -> hv.HeatMap:
    """The D matrix of grouping ``by`` as a heatmap, rows and columns in :func:`group_order`,
    ticks ``group (n=models)``; ``clim`` fixes the colour scale (shared across panels)."""
    order = group_order(d, by)
    names = axis_labels(by, order, counts)
    ordered = [names[g] for g in order]
    m = d.loc[order, order]
    long = pd.DataFrame({
        "a": np.repeat([names[g] for g in order], len(order)),
        "b": np.tile(ordered, len(order)),
        "D": m.to_numpy().ravel(),
    })
    n = len(order)
    side = size or int(min(900, max(PANEL, 28 * n + 160)))
    heat = hv.HeatMap(
        long,
        [hv.Dimension("a", label="group (column)"), hv.Dimension("b", label="group (row)")],
        [hv.Dimension("D", label="distribution shift D (symmetric KL, nats)")],
    ).redim.values(a=ordered, b=ordered[::-1])
    return heat.opts(
        title=f"D by {pretty(by)}", cmap=SEQUENTIAL, colorbar=True,
        clim=clim or (0.0, float(np.nanmax(m.to_numpy())) or 1.0), width=side + 80, height=side,
        xrotation=60, tools=["hover"], xlabel=pretty(by), ylabel=pretty(by),
    )


def shift_heatmaps(matrices: Mapping[str, pd.DataFrame], counts: Mapping[str, pd.DataFrame] | None = None, shared_scale: bool = False) -> hv.Layout:
    """One heatmap per grouping; with ``shared_scale`` one colour scale (0 to the largest D) for all."""
    clim = None
    if shared_scale and matrices:
        clim = (0.0, max(float(np.nanmax(m.to_numpy())) for m in matrices.values()) or 1.0)
    panels = [shift_heatmap(m, by, (counts or {}).get(by), clim=clim) for by, m in matrices.items()]
    return hv.Layout(panels).cols(2).opts(shared_axes=False, title="Distribution shift D" + (" (shared colour scale)" if clim else ""))


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
