"""Principal components as 3x3 images and their explained variance (paper Figs. 1, 8, 9)."""

from __future__ import annotations

from collections.abc import Mapping

import holoviews as hv
import numpy as np

from filtershift.analysis.types import PCAResult
from filtershift.figures._style import DIVERGING, MAX_WIDTH, WIDTH, percent, shorten, symmetric_limit

COLORBAR = 90  # pixels the shared colour bar adds to the last panel


def pc_titles(pca: PCAResult) -> list[str]:
    """``"PC 1 · 41.2 % (Σ 41.2 %)"`` per component: its explained-variance ratio and the cumulative one."""
    q = pca.explained_variance_ratio
    cum = np.cumsum(q)
    return [f"PC {i + 1} · {percent(q[i])}\n(Σ {percent(cum[i])})" for i in range(len(q))]  # two lines: fits 130 px


def pc_images(pca: PCAResult, label: str = "all filters", size: int = (MAX_WIDTH - COLORBAR) // 9 - 4) -> hv.Layout:
    """The 9 principal components as 3x3 kernels (one row of 9 panels, one shared diverging colour
    scale), titled with explained variance and its cumulative sum (Fig. 1; Fig. 8 per subset)."""
    lim = symmetric_limit(pca.components)
    titles = pc_titles(pca)
    panels = []
    for i, v in enumerate(pca.components):
        img = hv.Image(
            np.asarray(v, dtype=np.float64).reshape(3, 3)[::-1],  # hv.Image rows run bottom-up
            bounds=(0, 0, 3, 3),
            kdims=[hv.Dimension("kx", label="kernel column"), hv.Dimension("ky", label="kernel row")],
            vdims=[hv.Dimension("w", label="weight")],  # the colour-bar title: short (the caption says unit-norm)
        )
        panels.append(img.opts(
            title=titles[i], width=size + (COLORBAR if i == len(pca.components) - 1 else 0), height=size, cmap=DIVERGING, clim=(-lim, lim), xaxis=None, yaxis=None,
            colorbar=i == len(pca.components) - 1, tools=["hover"], toolbar=None, fontsize={"title": "8pt"},
        ))
    n = len(pca.components)
    return hv.Layout(panels).cols(n).opts(
        title=f"Principal components of {shorten(label, 60)} (n = {pca.n_filters:,} filters, {pca.scaling})")


def pc_images_subsets(pcas: Mapping[str, PCAResult]) -> hv.Layout:
    """One row of component images per fitted subset (Fig. 8): rows share nothing but the layout."""
    panels: list = []
    for label, pca in pcas.items():
        row = list(pc_images(pca, label=label, size=110).values())
        for p, t in zip(row, pc_titles(pca)):
            p.opts(title=t.split(" (")[0])  # "PC 1 · 41.2 %": fits the small panel
        # the subset names the row: the first panel's y axis label (shortened; all names in the caption)
        row[0] = row[0].opts(yaxis="left", yticks=[(1.5, "")], ylabel=shorten(label, 18), width=110 + 24)
        panels.extend(row)
    return hv.Layout(panels).cols(9).opts(title="Principal components fitted on each subset")


def explained_variance(pcas: Mapping[str, PCAResult]) -> hv.Overlay:
    """Cumulative explained variance over the number of components, one curve per fitted subset
    (Fig. 9: by task and data type when the subsets are those)."""
    curves = []
    for label, pca in pcas.items():
        k = np.arange(1, len(pca.explained_variance_ratio) + 1)
        cum = 100 * np.cumsum(pca.explained_variance_ratio)
        data = (k, cum)
        kd = hv.Dimension("k", label="number of principal components")
        vd = hv.Dimension("cumulative", label="cumulative explained variance", unit="%", range=(0, 100))
        name = shorten(label, 40)
        curves.append(hv.Curve(data, kd, vd, label=name) * hv.Scatter(data, kd, vd, label=name).opts(size=6, tools=["hover"]))
    # the legend sits beside the plot: inside it would hide the curves
    return hv.Overlay(curves).opts(
        title="Cumulative explained variance of the PCA", width=WIDTH // 2 + 150 + 290, height=380,
        legend_position="right", show_grid=True, xticks=list(range(1, 10)),
    )
