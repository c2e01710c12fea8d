"""``filtershift verify``: check a database's invariants and report every violation.

Table checks are pure pandas; the two array checks (every ``layer`` value matches its row range;
each model's rows hash to the checksum recorded at extraction) read the store once, one dask task
per chunk and per model.
"""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import zarr

from filtershift import store
from filtershift.store.arrays import layer_of_rows, rows_checksum

REQUIRED_MODEL_COLUMNS = ("model_id", "name", "status", "n_layers", "n_filters")


def check_tables(models: pd.DataFrame, layers: pd.DataFrame, n_array_rows: int, n_layer_rows: int) -> list[str]:
    """Violations visible from the tables and the arrays' shapes alone."""
    missing = [c for c in REQUIRED_MODEL_COLUMNS if c not in models.columns] + [c for c in store.LAYER_COLUMNS if c not in layers.columns]
    if missing:
        return [f"tables lack the columns {', '.join(missing)}"]
    problems = []
    if models["model_id"].duplicated().any():
        problems.append(f"models.parquet: duplicate model_id {sorted(models.loc[models['model_id'].duplicated(), 'model_id'].unique())[:5]}")
    if layers["layer_id"].duplicated().any():
        problems.append("layers.parquet: duplicate layer_id")
    problems += duplicate_names(models) + stale_layers(models, layers)
    kept = store.accounted_layers(models, layers).sort_values("start")
    problems += row_range_problems(kept)
    bad_n = kept[kept["stop"] - kept["start"] != kept["n_filters"]]
    if len(bad_n):
        problems.append(f"{len(bad_n)} layer(s) whose n_filters differs from stop - start (first: layer {bad_n['layer_id'].iloc[0]})")
    shape_n = kept[kept["in_channels"] * kept["out_channels"] != kept["n_filters"]]
    if len(shape_n):
        problems.append(f"{len(shape_n)} layer(s) whose n_filters differs from in_channels x out_channels")
    n_rows = int(kept["stop"].max()) if len(kept) else 0
    if n_array_rows < n_rows or n_layer_rows < n_rows:
        problems.append(f"filters.zarr holds {n_array_rows} filter rows and {n_layer_rows} layer rows; the tables account for {n_rows}")
    return problems + count_problems(models, store.committed_layers(models, layers))


def duplicate_names(models: pd.DataFrame) -> list[str]:
    """A name may have one live (not ``removed``) row; older versions of filtershift left a
    failed row beside the ok row of a fixed manifest row."""
    names = store.live_models(models)["name"]
    repeated = sorted(names[names.duplicated()].unique())
    if not repeated:
        return []
    return [f"models.parquet: {len(repeated)} name(s) with more than one live row ({', '.join(map(str, repeated[:5]))}); "
            "drop them with `filtershift remove DB NAME...` and extract them again"]


def stale_layers(models: pd.DataFrame, layers: pd.DataFrame) -> list[str]:
    """Layers of no ``ok`` or ``removed`` model: rows no model accounts for."""
    stale = layers[~layers["layer_id"].isin(store.accounted_layers(models, layers)["layer_id"])]
    if not len(stale):
        return []
    ids = sorted(stale["model_id"].unique())
    return [f"layers.parquet: stale rows: {len(stale)} layer(s), {int(stale['n_filters'].sum())} filter rows, of model_id(s) "
            f"{ids[:5]} that models.parquet holds neither as ok nor as removed (an interrupted extract: rerun it)"]


def row_range_problems(kept: pd.DataFrame) -> list[str]:
    """The row ranges of the kept layers (sorted by start) must tile ``[0, N)``."""
    starts, stops = kept["start"].to_numpy(np.int64), kept["stop"].to_numpy(np.int64)
    problems = []
    if len(starts) and starts[0] != 0:
        problems.append(f"row ranges start at {starts[0]}, not 0")
    for i in np.flatnonzero(starts[1:] != stops[:-1])[:5]:
        kind = "overlap" if starts[i + 1] < stops[i] else "gap"
        problems.append(f"row ranges {kind} between layer {kept['layer_id'].iloc[i]} (stop {stops[i]}) and layer {kept['layer_id'].iloc[i + 1]} (start {starts[i + 1]})")
    return problems


def count_problems(models: pd.DataFrame, committed: pd.DataFrame) -> list[str]:
    """Each ok model's layer and filter counts must agree with its layers."""
    per_model = committed.groupby("model_id").agg(n_layers=("layer_id", "size"), n_filters=("n_filters", "sum"))
    ok_models = models[models["status"] == "ok"].set_index("model_id")
    joined = ok_models[["n_layers", "n_filters"]].join(per_model.add_suffix("_layers"), how="left").fillna(0)
    wrong = joined[(joined["n_layers"] != joined["n_layers_layers"]) | (joined["n_filters"] != joined["n_filters_layers"])]
    return [
        f"model {model_id}: models.parquet says {int(row.n_layers)} layers / {int(row.n_filters)} filters, layers.parquet holds {int(row.n_layers_layers)} / {int(row.n_filters_layers)}"
        for model_id, row in wrong.head(5).iterrows()
    ]


def _layer_block_mismatches(store_path: str, start: int, stop: int, starts: np.ndarray, stops: np.ndarray, ids: np.ndarray) -> int:
    got = zarr.open_group(store_path, mode="r")["layer"][start:stop]
    expected = layer_of_rows(np.arange(start, stop), starts, stops, ids)
    return int(np.count_nonzero(got != expected))


def _model_checksum(store_path: str, start: int, stop: int) -> str:
    return rows_checksum(zarr.open_group(store_path, mode="r")["filters"][start:stop])


def verify(path: str | Path) -> list[str]:
    """Every invariant violation of the database at ``path`` (an empty list: all is well)."""
    path = store.require_database(path)  # not a database at all: a DatabaseError, like every command
    try:
        models = pd.read_parquet(path / store.MODELS_TABLE)
        layers = pd.read_parquet(path / store.LAYERS_TABLE)
        group = zarr.open_group(str(path / store.FILTERS_STORE), mode="r")
        filters_arr, layer_arr = group["filters"], group["layer"]
    except Exception as exc:  # unreadable pieces are themselves the finding
        return [f"cannot open the database: {type(exc).__name__}: {exc}"]
    problems = []
    if filters_arr.dtype != np.float32 or filters_arr.ndim != 2 or filters_arr.shape[1] != 9:
        problems.append(f"filters array is {filters_arr.dtype} {filters_arr.shape}, expected float32 (N, 9)")
    if layer_arr.dtype != np.int32:
        problems.append(f"layer array is {layer_arr.dtype}, expected int32")
    problems += check_tables(models, layers, filters_arr.shape[0], layer_arr.shape[0])
    if problems:
        return problems
    kept = store.accounted_layers(models, layers).sort_values("start")  # removed models' rows keep their ids
    store_path = str(path / store.FILTERS_STORE)
    chunk = int(layer_arr.chunks[0])
    n_rows = int(kept["stop"].max()) if len(kept) else 0
    layer_tasks = []
    for lo in range(0, n_rows, chunk):
        hi = min(lo + chunk, n_rows)
        sel = kept[(kept["stop"] > lo) & (kept["start"] < hi)]
        layer_ranges = (sel["start"].to_numpy(np.int64), sel["stop"].to_numpy(np.int64), sel["layer_id"].to_numpy())
        layer_tasks.append(dask.delayed(_layer_block_mismatches)(store_path, lo, hi, *layer_ranges, dask_key_name=f"verify-layer-{lo // chunk}"))
    ok = models[(models["status"] == "ok")]
    checks = []
    if "rows_sha256" in ok.columns:
        ranges = kept.groupby("model_id").agg(start=("start", "min"), stop=("stop", "max"))
        for row in ok[ok["rows_sha256"].fillna("") != ""].itertuples():
            if row.model_id in ranges.index:
                r = ranges.loc[row.model_id]
                checks.append((row.model_id, row.rows_sha256, dask.delayed(_model_checksum)(store_path, int(r.start), int(r.stop), dask_key_name=f"verify-checksum-{row.model_id}")))
    mismatches, sums = dask.compute(layer_tasks, [c[2] for c in checks])
    for i, count in enumerate(mismatches):
        if count:
            problems.append(f"layer array chunk {i}: {count} row(s) whose layer_id does not match the layer row ranges")
    for (model_id, recorded, _), actual in zip(checks, sums):
        if actual != recorded:
            problems.append(f"model {model_id}: its filter rows do not match the checksum recorded at extraction")
    return problems
