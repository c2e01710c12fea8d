"""Bivariate "phenotype" plots of coefficient pairs (paper Fig. 5).

Two sources, one look (log colour scale, counts per pixel):

- :func:`histogram_density` draws the 2-D histograms of the results (``hist2d_<by>.npz``): small,
  no store access; one panel per group.
- :func:`coefficient_frame` projects the filters of chosen layers straight from the store (lazy,
  dask), and :func:`point_density` datashades all of them (``rasterize`` → counts per pixel), so
  100M points cost a streaming pass, not a browser full of glyphs.
"""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import holoviews as hv
import numpy as np
import pandas as pd
from holoviews.operation.datashader import rasterize

from filtershift.analysis.types import GroupHistograms2D, PCAResult, project
from filtershift.figures._style import DENSITY, shorten

CLABEL = "filters (log)"  # the colour-bar title: short; the captions say "per pixel"


def _pair_edges(edges: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges of c_i and c_j: the results hold one row per component (9, B2+1) or one shared row."""
    e = np.asarray(edges, dtype=np.float64)
    return (e[i], e[j]) if e.ndim == 2 else (e, e)


def _dims(i: int, j: int) -> list[hv.Dimension]:
    return [hv.Dimension(f"c{i + 1}", label=f"coefficient c{i + 1} (PC {i + 1})"),
            hv.Dimension(f"c{j + 1}", label=f"coefficient c{j + 1} (PC {j + 1})")]


def histogram_density(h: GroupHistograms2D, group: str, pair: tuple[int, int] = (0, 1), size: int = 300,
                      clim: tuple[float, float] | None = None, colorbar: bool = True) -> hv.Image:
    """The joint counts of coefficients ``pair`` for ``group`` of the 2-D histograms, log colour
    (``clim`` fixes the colour scale where panels share one colour bar)."""
    g = h.labels.index(group)
    p = h.pairs.index(tuple(pair))
    i, j = pair
    ei, ej = _pair_edges(h.edges, i, j)
    counts = np.asarray(h.counts[g, p], dtype=np.float64).T  # rows: c_j (y), columns: c_i (x)
    counts[counts == 0] = np.nan  # empty pixels stay transparent on a log scale
    img = hv.Image(counts[::-1], bounds=(ei[0], ej[0], ei[-1], ej[-1]), kdims=_dims(i, j),
                   vdims=[hv.Dimension("count", label=CLABEL)])
    # a shared colour bar goes below its panel: beside it, it would narrow the panels of its column
    bar = {} if clim is None else {"clim": clim, "colorbar_position": "bottom"}
    return img.opts(title=f"{shorten(group, 20)} ({int(np.nansum(counts)):,})", cmap=DENSITY, fontsize={"title": "9pt"},
                    cnorm="log", colorbar=colorbar, width=size + (80 if colorbar and clim is None else 0),
                    height=size + (80 if colorbar and clim is not None else 0), tools=["hover"], bgcolor="#f4f4f4", **bar)


def histogram_densities(h: GroupHistograms2D, pair: tuple[int, int] = (0, 1), max_panels: int = 12) -> hv.Layout:
    """One :func:`histogram_density` panel per group (the first ``max_panels``), one shared log
    colour scale and its one colour bar (on the last panel)."""
    groups = h.labels[:max_panels]
    p = h.pairs.index(tuple(pair))
    counts = np.asarray(h.counts[: len(groups), p], dtype=np.float64)
    clim = (1.0, max(2.0, float(counts.max()) if counts.size else 2.0))
    panels = [histogram_density(h, g, pair, size=300, clim=clim, colorbar=k == len(groups) - 1) for k, g in enumerate(groups)]
    return hv.Layout(panels).cols(3).opts(
        title=f"Joint distribution of c{pair[0] + 1} and c{pair[1] + 1} by {h.by.replace('_', ' ')} (one colour scale)")


def layer_rows(layers: pd.DataFrame, layer_ids) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of the chosen layers, in row order."""
    sel = layers[layers["layer_id"].isin(np.asarray(list(layer_ids)))].sort_values("start")
    return [(int(a), int(b)) for a, b in zip(sel["start"], sel["stop"]) if b > a]


def pair_coefficients(filters: da.Array, pca: PCAResult, pair: tuple[int, int]) -> da.Array:
    """Coefficients ``pair`` of (lazily) scaled or raw filters: ``(w - mean) · v``."""
    x = filters.astype(np.float64)
    if pca.scaling == "scaled":
        m = da.max(da.abs(x), axis=1, keepdims=True)
        x = x / da.where(m > 0, m, 1.0)
    return project(x, pca.mean, pca.components[list(pair)]).astype(np.float32)


def coefficient_frame(filters: da.Array, layers: pd.DataFrame, pca: PCAResult, layer_ids=None, pair: tuple[int, int] = (0, 1)) -> dd.DataFrame:
    """A lazy dask DataFrame ``c<i>, c<j>`` of the chosen layers' filters (all layers if None)."""
    if layer_ids is not None:
        ranges = layer_rows(layers, layer_ids)
        if not ranges:
            raise ValueError(f"no filters in layers {list(layer_ids)[:5]}…: pick layer_id values from layers.parquet")
        filters = da.concatenate([filters[a:b] for a, b in ranges]) if len(ranges) > 1 else filters[ranges[0][0]:ranges[0][1]]
    names = [f"c{pair[0] + 1}", f"c{pair[1] + 1}"]
    return dd.from_dask_array(pair_coefficients(filters, pca, pair), columns=names)


def point_density(frame, pair: tuple[int, int] = (0, 1), title: str = "", size: int = 300,
                  x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None) -> hv.Image:
    """Datashade every point of ``frame`` (pandas or dask) to counts per pixel, log colour scale.

    Static (``dynamic=False``): the image is aggregated once at ``size`` pixels and embeds in HTML
    or PNG without a live server.
    """
    i, j = pair
    points = hv.Points(frame, _dims(i, j))
    ranges = {} if x_range is None else {"x_range": x_range, "y_range": y_range}
    img = rasterize(points, dynamic=False, width=size, height=size, **ranges)
    img = img.redim(**{img.vdims[0].name: hv.Dimension("count", label=CLABEL)})
    return img.opts(title=title, cmap=DENSITY, cnorm="log", colorbar=True, width=size + 70, height=size,
                    tools=["hover"], bgcolor="#f4f4f4", clipping_colors={"NaN": "#f4f4f4", "min": "#f4f4f4"})
