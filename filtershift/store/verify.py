"""``filtershift verify``: check a database's invariants and report every violation.

Table checks are pure pandas; the two array checks (every ``layer`` value matches its row range;
each model's rows hash to the checksum recorded at extraction) read the store once, one dask task
per chunk and per model.
"""

from __future__ import annotations

import json
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
    problems = []
    missing = [c for c in REQUIRED_MODEL_COLUMNS if c not in models.columns] + [c for c in store.LAYER_COLUMNS if c not in layers.columns]
    if missing:
        return [f"tables lack the columns {', '.join(missing)}"]
    if models["model_id"].duplicated().any():
        problems.append(f"models.parquet: duplicate model_id {sorted(models.loc[models['model_id'].duplicated(), 'model_id'].unique())[:5]}")
    if layers["layer_id"].duplicated().any():
        problems.append("layers.parquet: duplicate layer_id")
    ok = set(models.loc[models["status"] == "ok", "model_id"])
    orphans = layers[~layers["model_id"].isin(ok)]
    if len(orphans):
        problems.append(f"layers.parquet: {len(orphans)} layer(s) of models not committed as ok (an interrupted extract: rerun it)")
    committed = layers[layers["model_id"].isin(ok)].sort_values("start")
    starts, stops = committed["start"].to_numpy(np.int64), committed["stop"].to_numpy(np.int64)
    n_rows = int(stops[-1]) if len(stops) else 0
    if len(starts) and starts[0] != 0:
        problems.append(f"row ranges start at {starts[0]}, not 0")
    gaps = np.flatnonzero(starts[1:] != stops[:-1])
    for i in gaps[:5]:
        kind = "overlap" if starts[i + 1] < stops[i] else "gap"
        problems.append(f"row ranges {kind} between layer {committed['layer_id'].iloc[i]} (stop {stops[i]}) and layer {committed['layer_id'].iloc[i + 1]} (start {starts[i + 1]})")
    bad_n = committed[committed["stop"] - committed["start"] != committed["n_filters"]]
    if len(bad_n):
        problems.append(f"{len(bad_n)} layer(s) whose n_filters differs from stop - start (first: layer {bad_n['layer_id'].iloc[0]})")
    shape_n = committed[committed["in_channels"] * committed["out_channels"] != committed["n_filters"]]
    if len(shape_n):
        problems.append(f"{len(shape_n)} layer(s) whose n_filters differs from in_channels x out_channels")
    if n_array_rows < n_rows or n_layer_rows < n_rows:
        problems.append(f"filters.zarr holds {n_array_rows} filter rows and {n_layer_rows} layer rows; the tables account for {n_rows}")
    per_model = committed.groupby("model_id").agg(n_layers=("layer_id", "size"), n_filters=("n_filters", "sum"))
    ok_models = models[models["status"] == "ok"].set_index("model_id")
    joined = ok_models[["n_layers", "n_filters"]].join(per_model.add_suffix("_layers"), how="left").fillna(0)
    wrong = joined[(joined["n_layers"] != joined["n_layers_layers"]) | (joined["n_filters"] != joined["n_filters_layers"])]
    for model_id, row in wrong.head(5).iterrows():
        problems.append(f"model {model_id}: models.parquet says {int(row.n_layers)} layers / {int(row.n_filters)} filters, layers.parquet holds {int(row.n_layers_layers)} / {int(row.n_filters_layers)}")
    return problems


def _layer_block_mismatches(store_path: str, start: int, stop: int, starts: np.ndarray, stops: np.ndarray, ids: np.ndarray) -> int:
    got = zarr.open_group(store_path, mode="r")["layer"][start:stop]
    expected = layer_of_rows(np.arange(start, stop), starts, stops, ids)
    return int(np.count_nonzero(got != expected))


def _model_checksum(store_path: str, start: int, stop: int) -> str:
    return rows_checksum(zarr.open_group(store_path, mode="r")["filters"][start:stop])


def verify(path: str | Path) -> list[str]:
    """Every invariant violation of the database at ``path`` (an empty list: all is well)."""
    path = Path(path)
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
    committed = store.committed_layers(models, layers).sort_values("start")
    store_path = str(path / store.FILTERS_STORE)
    chunk = int(layer_arr.chunks[0])
    n_rows = int(committed["stop"].max()) if len(committed) else 0
    layer_tasks = []
    for lo in range(0, n_rows, chunk):
        hi = min(lo + chunk, n_rows)
        sel = committed[(committed["stop"] > lo) & (committed["start"] < hi)]
        layer_ranges = (sel["start"].to_numpy(np.int64), sel["stop"].to_numpy(np.int64), sel["layer_id"].to_numpy())
        layer_tasks.append(dask.delayed(_layer_block_mismatches)(store_path, lo, hi, *layer_ranges, dask_key_name=f"verify-layer-{lo // chunk}"))
    ok = models[(models["status"] == "ok")]
    checks = []
    if "rows_sha256" in ok.columns:
        ranges = committed.groupby("model_id").agg(start=("start", "min"), stop=("stop", "max"))
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
    problems += _check_results(path)
    return problems


def _check_results(path: Path) -> list[str]:
    """Every analysis under ``DB/results`` must have been computed from the present database."""
    results = path / store.RESULTS_DIR
    if not results.is_dir():
        return []
    from filtershift.analysis.run import fingerprint

    current = fingerprint(store.open_database(path))
    problems = []
    for provenance in sorted(results.glob("*/provenance.json")):
        recorded = json.loads(provenance.read_text()).get("database", {}).get("fingerprint")
        if recorded != current:
            problems.append(f"results '{provenance.parent.name}' were computed from another state of the database; rerun `filtershift analyze {path} --name {provenance.parent.name}`")
    return problems
