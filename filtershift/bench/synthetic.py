"""A synthetic filter database with realistic structure, written directly at the Zarr level.

Hundreds of models (tasks, data types, datasets, families) of 8-48 conv layers whose widths double
with depth, so layer sizes span 3·w .. 512·512 filters as in real CNNs; filters are conv-like, not
iid noise: a few smooth dominant directions (blur, edges) mixed per layer, a per-layer scale that
shrinks with depth, a per-model bias, and a share of all-zero (pruned) filters in some layers.

The store is keyed by N and seed (``synthetic-N-sS``) and reused when complete: the tables are
written last (``store.write_database``), so a folder without ``models.parquet`` is an interrupted
build and is rebuilt.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

TASKS = ("classification", "segmentation", "detection", "gan", "denoising")
DATA_TYPES = ("natural", "medical", "seismic", "satellite", "art")
FAMILIES = ("resnet", "vgg", "unet", "mobilenet", "densenet", "efficientnet")
FORMAT_VERSION = 1


def _basis() -> np.ndarray:
    """Nine orthonormal-ish conv-like 3x3 directions: blur, two edges, two second derivatives, ..."""
    g = np.array([1.0, 2.0, 1.0])
    d = np.array([-1.0, 0.0, 1.0])
    s = np.array([1.0, -2.0, 1.0])
    rows = [np.outer(a, b).ravel() for a, b in ((g, g), (g, d), (d, g), (g, s), (s, g), (d, d), (d, s), (s, d), (s, s))]
    b = np.array(rows)
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def synthetic_tables(n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The models and layers tables of ``n_rows`` filters (the last layer is trimmed to fit)."""
    rng = np.random.default_rng([seed, 1])
    # Model size scales so that a database has at least ~200 models (smaller bases when N is small).
    widths = np.array([4, 8, 16, 32, 64])
    mean_model = max(n_rows / 300, 2_000)
    models, layers = [], []
    row = layer_id = model_id = 0
    while row < n_rows:
        n_conv = int(rng.integers(8, 49))
        base = int(widths[min(int(rng.integers(0, len(widths))), int(np.clip(np.log2(mean_model / 10_000), 0, 4)))])
        in_ch = 3
        for ci in range(n_conv):
            out_ch = min(base * 2 ** (4 * ci // n_conv), 512)
            n = min(in_ch * out_ch, n_rows - row)
            if n <= 0:
                break
            r = ci / (n_conv - 1)
            layers.append((layer_id, model_id, f"features.{ci}.conv", ci, n_conv, r, max(int(np.ceil(round(10 * r, 9))) - 1, 0), in_ch, out_ch, 1, row, row + n, n))
            row += n
            layer_id += 1
            in_ch = out_ch
        models.append(dict(
            model_id=model_id, name=f"{FAMILIES[model_id % len(FAMILIES)]}-{model_id}", path=f"synthetic/{model_id}.pt",
            format="synthetic", sha256="", task=TASKS[int(rng.integers(0, len(TASKS)))],
            data_type=DATA_TYPES[int(rng.integers(0, len(DATA_TYPES)))], dataset=f"set{int(rng.integers(0, 12))}",
            family=FAMILIES[model_id % len(FAMILIES)], n_layers=n_conv, n_filters=0, status="ok", error="",
        ))
        model_id += 1
    cols = ["layer_id", "model_id", "name", "conv_index", "n_conv", "depth", "depth_decile", "in_channels", "out_channels", "groups", "start", "stop", "n_filters"]
    layer_df = pd.DataFrame(layers, columns=cols).astype({
        "layer_id": "int32", "model_id": "int32", "conv_index": "int32", "n_conv": "int32", "depth_decile": "int8",
        "in_channels": "int32", "out_channels": "int32", "groups": "int32", "start": "int64", "stop": "int64", "n_filters": "int64",
    })
    model_df = pd.DataFrame(models)
    counts = layer_df.groupby("model_id")["n_filters"].sum()
    model_df["n_filters"] = model_df["model_id"].map(counts).fillna(0).astype("int64")
    model_df["n_layers"] = model_df["model_id"].map(layer_df.groupby("model_id").size()).fillna(0).astype("int64")
    model_df["model_id"] = model_df["model_id"].astype("int32")
    return model_df, layer_df


def filter_block(rows: np.ndarray, starts: np.ndarray, depth: np.ndarray, seed: int) -> np.ndarray:
    """Conv-like float32 filters of the given (contiguous) rows; deterministic per row range."""
    basis = _basis().astype(np.float32)
    layer = np.searchsorted(starts, rows, side="right") - 1
    first, last = int(layer[0]), int(layer[-1])
    lr = np.random.default_rng([seed, 2, first])
    n_l = last - first + 1
    # Per layer: spectrum (early layers smooth/edge-dominated, deep layers flatter), scale, pruning.
    d = depth[first : last + 1][:, None]
    decay = 0.25 + 0.6 * d + lr.uniform(-0.1, 0.1, size=(n_l, 1))
    spectrum = np.exp(-np.arange(9)[None, :] / np.maximum(decay, 0.05) * 0.5).astype(np.float32)
    scale = (lr.uniform(0.02, 0.6, size=n_l) * (1.0 - 0.7 * depth[first : last + 1])).astype(np.float32)
    pruned = np.where(lr.random(n_l) < 0.15, lr.uniform(0.1, 0.6, size=n_l), 0.0)
    bias = lr.normal(0, 0.05, size=(n_l, 9)).astype(np.float32)
    rng = np.random.default_rng([seed, 3, int(rows[0])])
    z = rng.standard_normal(size=(len(rows), 9), dtype=np.float32)
    local = layer - first
    x = (z * spectrum[local]) @ basis + bias[local]
    x *= scale[local][:, None]
    zero = rng.random(len(rows)) < pruned[local]
    x[zero] = 0.0
    return x.astype(np.float32, copy=False)


def database_path(data: Path, n_rows: int, seed: int) -> Path:
    return Path(data) / f"synthetic-{n_rows}-s{seed}-v{FORMAT_VERSION}"


def ensure_database(data: Path, n_rows: int, seed: int = 0, log=print):
    """The synthetic database of ``n_rows`` filters under ``data`` (built once, then reused)."""
    import dask
    import dask.array as da

    from filtershift.store import (
        DEFAULT_CHUNK_ROWS,
        MODELS_TABLE,
        open_database,
        write_database,
    )

    path = database_path(data, n_rows, seed)
    if (path / MODELS_TABLE).exists():
        db = open_database(path)
        if db.n_rows == n_rows:
            return db, 0.0
    shutil.rmtree(path, ignore_errors=True)
    models, layers = synthetic_tables(n_rows, seed)
    starts = layers["start"].to_numpy(np.int64)
    depth = layers["depth"].to_numpy(np.float64)
    rows = da.arange(n_rows, chunks=DEFAULT_CHUNK_ROWS, dtype=np.int64)
    filters = da.map_blocks(filter_block, rows, starts, depth, seed, new_axis=1, chunks=(rows.chunks[0], (9,)), dtype=np.float32)
    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        db = write_database(path, filters, models, layers)
    seconds = time.perf_counter() - t
    if log:
        log(f"wrote {path}: {n_rows:,} filters, {len(layers):,} layers, {len(models):,} models, {n_rows * 36 / 1e9:.2f} GB in {seconds:.0f} s")
    return db, seconds
