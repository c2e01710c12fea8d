"""Figures of an analysis (paper Figs. 1–17) as holoviews objects (bokeh backend).

Each module holds pure functions of the small labelled results (:mod:`filtershift.analysis.results`)
that return holoviews objects: :mod:`~filtershift.figures.pca` (components, explained variance),
:mod:`~filtershift.figures.heatmaps` (D heatmaps, pairwise D), :mod:`~filtershift.figures.ridge`
(coefficient distributions), :mod:`~filtershift.figures.points` (bivariate densities, datashaded
from the store), :mod:`~filtershift.figures.scale` (filter scale, counts, layer quality),
:mod:`~filtershift.figures.phenotype` (automatic layer phenotypes). :mod:`~filtershift.figures.catalog`
lists what a results folder yields; :mod:`~filtershift.figures.save` writes HTML and PNG.

The re-exports below load on first use: importing a light submodule (``figures.formats``) does not
import holoviews and bokeh (8-11 s here).
"""

__all__ = ["Figure", "build_figures", "phenotypes"]


def __getattr__(name: str):
    if name in __all__:
        from filtershift.figures import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
