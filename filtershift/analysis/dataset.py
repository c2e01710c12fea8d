"""An analysis as one labelled ``xarray.Dataset``, and its Zarr form ``DB/results/NAME/dataset.zarr``.

Built from the results' own files (through the accessors of
:class:`filtershift.analysis.results.Results`), so it holds exactly what the CSV, JSON and npz files
hold. Variables and dimensions (``<by>`` is a grouping as given to ``--by``, e.g. ``task`` or
``task+data_type``; ``B`` = 70 bins, ``B2`` = the 2-D bins per axis)::

    coordinates   component (9) 0..8; weight (9) 0..8, the kernel entry (row-major 3x3);
                  bin (B) the bin centres, with bin_lower, bin_upper (bin); bin_edges (bin_edge: B + 1)
    pca_mean (weight), pca_components (component, weight), explained_variance (component),
    explained_variance_ratio (component)                       -- pca.json
    hist_<by>, prob_<by> (<by>_group, component, bin)          -- hist_<by>.npz counts, probabilities
    n_filters_<by>, n_models_<by>, n_layers_<by> (<by>_group)  -- counts_<by>.csv
    shift_<by> (<by>_group_a, <by>_group_b)                    -- shift_<by>.csv, the matrix D
    shift_<by>_low / _high / _std (<by>_group_a, <by>_group_b) -- shift_<by>_ci.csv (with a bootstrap)
    hist2d_<by> (<by>_group, pair, bin2d_x, bin2d_y) with pair_x, pair_y (pair) the components and
    bin2d_edges (component, bin2d_edge)                        -- hist2d_<by>.npz ("all" included)
    layer_hist (layer, component, bin), coordinate layer = layer_id, layer_model_id (layer)
    model_hist (model, component, bin), model_decile_hist (model, depth_decile, component, bin),
    coordinate model = model_id, model_name (model)            -- the per-layer and per-model npz

Labels are strings (numpy ``StringDType``), e.g. ``ds.shift_task.sel(task_group_a="classification")``.
The attributes record the analysis name, scaling, PCA method, groupings, creation time, database
fingerprint and the parameters (as JSON). xarray (and, for the Zarr form, zarr inside xarray) is
imported on first use; this module never imports zarr itself.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

DATASET_STORE = "dataset.zarr"
LABELS = np.dtypes.StringDType()


def group_dim(by: str, side: str = "") -> str:
    """The dimension of the groups of ``by`` (``task_group``; ``task_group_a`` / ``_b`` for D)."""
    return f"{by}_group{'_' + side if side else ''}"


def results_dataset(results: Any) -> xr.Dataset:
    """The analysis ``results`` (a :class:`filtershift.analysis.results.Results`) as one Dataset."""
    import xarray as xr

    parts = [xr.Dataset(coords=_bin_coords(results.bins.edges)), _pca(results.pca)]
    parts += [_grouping(results, by) for by in results.groupings]
    parts += [_histograms_2d(h, results.bins.edges_2d) for h in map(results.histograms_2d, results.groupings_2d) if h is not None]
    parts.append(_per_layer_and_model(results))
    ds = xr.merge(parts, compat="equals", join="exact", combine_attrs="drop")
    ds.attrs = {
        "format": "filtershift-results", "name": results.name, "scaling": results.pca.scaling, "pca_method": results.pca.method,
        "groupings": list(results.groupings), "groupings_2d": list(results.groupings_2d), "created": results.created,
        "database_fingerprint": results.database_fingerprint or "", "parameters": json.dumps(results.parameters, default=str),
    }
    return ds


def _labels(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=LABELS)


def _bin_coords(edges: np.ndarray) -> dict[str, Any]:
    return {
        "component": np.arange(9), "weight": np.arange(9), "bin": (edges[:-1] + edges[1:]) / 2,
        "bin_lower": ("bin", edges[:-1]), "bin_upper": ("bin", edges[1:]), "bin_edges": ("bin_edge", edges),
    }


def _pca(pca) -> xr.Dataset:
    import xarray as xr

    return xr.Dataset({
        "pca_mean": ("weight", pca.mean), "pca_components": (("component", "weight"), pca.components),
        "explained_variance": ("component", pca.explained_variance),
        "explained_variance_ratio": ("component", pca.explained_variance_ratio),
    })


def _grouping(results: Any, by: str) -> xr.Dataset:
    import xarray as xr

    h, d, counts = results.histograms(by), results.shift(by), results.counts(by).set_index("group")
    g, a, b = group_dim(by), group_dim(by, "a"), group_dim(by, "b")
    hist_dims = (g, "component", "bin")
    out = xr.Dataset(
        {
            f"hist_{by}": (hist_dims, h.counts), f"prob_{by}": (hist_dims, h.probabilities),
            f"n_filters_{by}": (g, counts.loc[list(h.labels), "n_filters"].to_numpy()),
            f"n_models_{by}": (g, counts.loc[list(h.labels), "n_models"].to_numpy()),
            f"n_layers_{by}": (g, counts.loc[list(h.labels), "n_layers"].to_numpy()),
            f"shift_{by}": ((a, b), d.to_numpy()),
        },
        coords={g: _labels(h.labels), a: _labels(d.index), b: _labels(d.columns)},
    )
    ci = results.shift_ci(by)
    if ci is not None:
        position = {label: i for i, label in enumerate(d.index)}
        i, j = ci["group_a"].map(position).to_numpy(), ci["group_b"].map(position).to_numpy()
        for column in ("low", "high", "std"):
            matrix = np.full(d.shape, np.nan)
            matrix[i, j] = matrix[j, i] = ci[column].to_numpy()  # the table holds one triangle
            out[f"shift_{by}_{column}"] = ((a, b), matrix)
    return out


def _histograms_2d(h, edges_2d: np.ndarray) -> xr.Dataset:
    import xarray as xr

    g = group_dim(h.by)
    pairs = np.asarray(h.pairs, dtype=np.int64).reshape(-1, 2)
    return xr.Dataset(
        {f"hist2d_{h.by}": ((g, "pair", "bin2d_x", "bin2d_y"), h.counts)},
        coords={g: _labels(h.labels), "pair_x": ("pair", pairs[:, 0]), "pair_y": ("pair", pairs[:, 1]),
                "bin2d_edges": (("component", "bin2d_edge"), edges_2d)},
    )


def _per_layer_and_model(results: Any) -> xr.Dataset:
    import xarray as xr

    layer_id, layer_counts = results.layer_histograms()
    model_id, model_counts, decile_counts = results.model_histograms()
    names = results.models().set_index("model_id")["name"]
    layer_model = results.layer_stats().set_index("layer_id")["model_id"]
    return xr.Dataset(
        {
            "layer_hist": (("layer", "component", "bin"), layer_counts),
            "model_hist": (("model", "component", "bin"), model_counts),
            "model_decile_hist": (("model", "depth_decile", "component", "bin"), decile_counts),
        },
        coords={
            "layer": layer_id, "layer_model_id": ("layer", layer_model.loc[layer_id].to_numpy()),
            "model": model_id, "model_name": ("model", _labels(names.loc[model_id])), "depth_decile": np.arange(decile_counts.shape[1]),
        },
    )


def write_dataset(ds: xr.Dataset, target: Path) -> None:
    """Write ``ds`` as the Zarr v3 group ``target``: into a temporary folder beside it, then renamed
    over the previous one, so a reader sees the old group or the new one, never a half-written one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    with warnings.catch_warnings():
        # zarr-python keeps a v3 group's consolidated metadata in zarr.json, which the v3 spec does not
        # define yet (it warns so); with it xarray.open_zarr(path) opens the group with no warning.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        ds.to_zarr(str(tmp), mode="w-", zarr_format=3, consolidated=True)
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
