"""filtershift: filter databases of trained CNN checkpoints and the shift of their 3x3 filters.

The public API (docs/api.md)::

    import filtershift
    db = filtershift.open("db")                                # models, layers, filters, analyses()
    results = filtershift.analyze(db, by="task,data_type")     # on the current dask client, else threads
    results.dataset()                                          # an xarray.Dataset

The names below load on first use (module ``__getattr__``), so ``import filtershift`` imports
neither dask, torch, zarr, distributed nor bokeh.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "open": "filtershift.api",
    "extract": "filtershift.api",
    "analyze": "filtershift.api",
    "FilterDatabase": "filtershift.api",
    "synthetic_database": "filtershift.api",
    "AnalysisSettings": "filtershift.analysis.settings",
    "Results": "filtershift.analysis.results",
    "ResultsError": "filtershift.analysis.results",
    "FiltershiftError": "filtershift.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
