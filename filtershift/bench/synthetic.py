"""The one generator of synthetic filter databases: for ``filtershift bench``, the figures' demo
data, the benchmarks and the tests.

A synthetic database is three choices, each a parameter:

- the models: one metadata mapping per model (``name``, ``task``, ``data_type``, ``dataset``,
  ``family`` and any further column), so their number and categories are the caller's;
- the layers of each model: one size per layer, ``n`` or ``(n, in_channels, out_channels)``;
- the filters: a *block function* ``block(rows, layers, seed)`` returning the float32 ``(len(rows), 9)``
  filters of the contiguous ``rows``, deterministic per seed — :func:`conv_like` (smooth directions,
  depth-dependent scale, pruned layers), :func:`mixed_gaussian`, or :func:`per_layer` of any draw.

:func:`model_tables` builds the two tables of docs/design.md §3 (pure; depths by the rule of
:mod:`filtershift.extraction.depth`), :func:`generate_filters` draws all filters in memory and
:func:`write_synthetic` writes them, in memory or lazily block by block, through
:func:`filtershift.store.write_database`.

:func:`realistic_tables` is the layout of ``filtershift bench``: hundreds of models (tasks, data
types, datasets, families) of 8-48 conv layers whose widths double with depth, so layer sizes span
3·w .. 512·512 filters as in real CNNs. :func:`ensure_database` keeps that database under a folder
keyed by N and seed (``synthetic-N-sS``) and reuses it when complete: the tables are written last,
so a folder without ``models.parquet`` is an interrupted build and is rebuilt.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from filtershift.extraction.depth import depth_decile, relative_depth
from filtershift.schema import LAYER_COLUMNS, LAYER_DTYPES, MODEL_COLUMNS, MODEL_DTYPES

TASKS = ("classification", "segmentation", "detection", "gan", "denoising")
DATA_TYPES = ("natural", "medical", "seismic", "satellite", "art")
FAMILIES = ("resnet", "vgg", "unet", "mobilenet", "densenet", "efficientnet")
FORMAT_VERSION = 1

Block = Callable[[np.ndarray, pd.DataFrame, int], np.ndarray]  # (rows, layers, seed) -> filters of the rows
Draw = Callable[[tuple, np.random.Generator], np.ndarray]  # (one row of the layers table, rng) -> its filters
LayerSize = int | tuple[int, int, int]
MODEL_DEFAULTS = {"path": "", "format": "synthetic", "sha256": "", "status": "ok", "error": ""}


# ------------------------------------------------------------------------------------------------
# Tables


def model_tables(
    models: Sequence[Mapping],
    layers: Sequence[Sequence[LayerSize]],
    layer_name: str = "features.{}",
    n_conv: Sequence[int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The models and layers tables of ``models[i]`` with the layers ``layers[i]`` (pure).

    Model ids count from 0, rows of the layers tile ``[0, N)`` in order; a layer given as ``n`` has
    one input channel and ``n`` output channels. ``layer_name`` is formatted with the conv index.
    ``n_conv[i]`` is the number of convs of model i (default: its stored layers), which sets depths.
    """
    model_rows, layer_rows, start = [], [], 0
    for model_id, (meta, sizes) in enumerate(zip(models, layers, strict=True)):
        first, convs = len(layer_rows), len(sizes) if n_conv is None else n_conv[model_id]
        for conv_index, size in enumerate(sizes):
            n, in_ch, out_ch = (size, 1, size) if isinstance(size, int) else size
            layer_rows.append({
                "layer_id": len(layer_rows), "model_id": model_id, "name": layer_name.format(conv_index),
                "conv_index": conv_index, "n_conv": convs, "depth": relative_depth(conv_index, convs),
                "depth_decile": depth_decile(conv_index, convs), "in_channels": in_ch, "out_channels": out_ch,
                "groups": 1, "start": start, "stop": start + n, "n_filters": n,
            })
            start += n
        n_filters = sum(row["n_filters"] for row in layer_rows[first:])
        model_rows.append({"model_id": model_id, **MODEL_DEFAULTS, **meta, "n_layers": len(sizes), "n_filters": n_filters})
    layers_df = pd.DataFrame(layer_rows, columns=LAYER_COLUMNS).astype(LAYER_DTYPES)
    models_df = pd.DataFrame(model_rows)
    models_df = models_df[[c for c in MODEL_COLUMNS if c in models_df] + [c for c in models_df if c not in MODEL_COLUMNS]]
    return models_df.astype({c: t for c, t in MODEL_DTYPES.items() if c in models_df}), layers_df


def realistic_tables(n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bench layout of ``n_rows`` filters (the last layer is trimmed to fit)."""
    rng = np.random.default_rng([seed, 1])
    # Model size scales so that a database has at least ~200 models (smaller bases when N is small).
    widths = np.array([4, 8, 16, 32, 64])
    mean_model = max(n_rows / 300, 2_000)
    models, layers = [], []
    row = 0
    while row < n_rows:
        n_conv = int(rng.integers(8, 49))
        base = int(widths[min(int(rng.integers(0, len(widths))), int(np.clip(np.log2(mean_model / 10_000), 0, 4)))])
        sizes, in_ch = [], 3
        for ci in range(n_conv):
            out_ch = min(base * 2 ** (4 * ci // n_conv), 512)
            n = min(in_ch * out_ch, n_rows - row)
            if n <= 0:
                break
            sizes.append((n, in_ch, out_ch))
            row += n
            in_ch = out_ch
        model_id = len(models)
        family = FAMILIES[model_id % len(FAMILIES)]
        models.append({
            "name": f"{family}-{model_id}", "path": f"synthetic/{model_id}.pt", "task": TASKS[int(rng.integers(0, len(TASKS)))],
            "data_type": DATA_TYPES[int(rng.integers(0, len(DATA_TYPES)))], "dataset": f"set{int(rng.integers(0, 12))}",
            "family": family,
        })
        layers.append((sizes, n_conv))  # a model cut off at N keeps the depths drawn for it
    return model_tables(models, [s for s, _ in layers], layer_name="features.{}.conv", n_conv=[n for _, n in layers])


# ------------------------------------------------------------------------------------------------
# Distributions: block functions ``block(rows, layers, seed) -> float32 (len(rows), 9)``


def _basis() -> np.ndarray:
    """Nine orthonormal-ish conv-like 3x3 directions: blur, two edges, two second derivatives, ..."""
    g = np.array([1.0, 2.0, 1.0])
    d = np.array([-1.0, 0.0, 1.0])
    s = np.array([1.0, -2.0, 1.0])
    rows = [np.outer(a, b).ravel() for a, b in ((g, g), (g, d), (d, g), (g, s), (s, g), (d, d), (d, s), (s, d), (s, s))]
    b = np.array(rows)
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def conv_like(rows: np.ndarray, layers: pd.DataFrame, seed: int) -> np.ndarray:
    """Conv-like filters, not iid noise: a few smooth dominant directions (blur, edges) mixed per
    layer, a per-layer scale that shrinks with depth, a per-layer bias, and a share of all-zero
    (pruned) filters in some layers. Deterministic per row range, so any block can be drawn alone."""
    starts = layers["start"].to_numpy(np.int64)
    depth = layers["depth"].to_numpy(np.float64)
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


def per_layer(draw: Draw) -> Block:
    """A block function that draws whole layers in order from one generator seeded by ``seed``:
    ``draw(layer, rng)`` gives the ``layer.n_filters`` filters of one row of the layers table.
    Every block redraws the layers before it, so this suits small in-memory databases."""

    def block(rows: np.ndarray, layers: pd.DataFrame, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        ordered = layers.sort_values("start")
        last = int(np.searchsorted(ordered["start"].to_numpy(), rows[-1], side="right"))
        parts = [np.asarray(draw(layer, rng), dtype=np.float32) for layer in ordered.iloc[:last].itertuples()]
        drawn = np.concatenate(parts) if parts else np.zeros((0, 9), np.float32)
        return drawn[rows]

    return block


def conv_mixing(seed: int, decay: tuple[float, float] = (2.0, 0.2)) -> np.ndarray:
    """A random 9x9 mixing whose rows shrink linearly from ``decay[0]`` to ``decay[1]``: a few
    dominant directions, as in trained filters."""
    return np.random.default_rng(seed).normal(size=(9, 9)) * np.linspace(*decay, 9)[:, None]


def gaussian(
    mixing: np.ndarray | None = None,
    layer_scale: tuple[float, float] | None = None,
    offset: float = 0.0,
    row_scale: tuple[float, float] | None = None,
    pruned: Mapping[int, float] | None = None,
) -> Draw:
    """A per-layer draw: standard normal filters, times ``mixing`` (9 x 9), times a per-layer scale
    drawn from ``layer_scale``, plus a per-layer offset of standard deviation ``offset``, times a
    per-filter scale from ``row_scale``; ``pruned[layer_id]`` zeroes that share of the layer's first
    filters."""

    def draw(layer: tuple, rng: np.random.Generator) -> np.ndarray:
        n = layer.n_filters
        w = rng.normal(size=(n, 9))
        if mixing is not None:
            w = w @ mixing
        if layer_scale is not None:
            w *= rng.uniform(*layer_scale)
        if offset:
            w += rng.normal(size=9) * offset
        if row_scale is not None:
            w *= rng.uniform(*row_scale, size=(n, 1))
        w[: int(n * (pruned or {}).get(layer.layer_id, 0.0))] = 0.0
        return w.astype(np.float32)

    return draw


# ------------------------------------------------------------------------------------------------
# Writing


def generate_filters(block: Block, layers: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """All filters of the layers, in memory: ``block`` over the whole row range."""
    n_rows = int(layers["n_filters"].sum())
    return block(np.arange(n_rows, dtype=np.int64), layers, seed)


def write_synthetic(
    path: str | Path,
    models: pd.DataFrame,
    layers: pd.DataFrame,
    filters: np.ndarray | Block,
    seed: int = 0,
    chunk_rows: int | None = None,
):
    """Write a new database at ``path`` through :func:`filtershift.store.write_database`: the
    filters an array, or a block function drawn lazily one store chunk at a time (on whatever dask
    scheduler is current). Returns the opened database."""
    import dask.array as da

    from filtershift.store import DEFAULT_CHUNK_ROWS, write_database

    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
    if callable(filters):
        rows = da.arange(int(layers["n_filters"].sum()), chunks=chunk_rows, dtype=np.int64)
        filters = da.map_blocks(filters, rows, layers, seed, new_axis=1, chunks=(rows.chunks[0], (9,)), dtype=np.float32)
    return write_database(Path(path), filters, models, layers, chunk_rows=chunk_rows)


def database_path(data: Path, n_rows: int, seed: int) -> Path:
    return Path(data) / f"synthetic-{n_rows}-s{seed}-v{FORMAT_VERSION}"


def ensure_database(data: Path, n_rows: int, seed: int = 0, log=print):
    """The bench's database of ``n_rows`` filters under ``data`` (built once, then reused):
    :func:`realistic_tables` with :func:`conv_like` filters. Returns ``(database, build seconds)``."""
    import dask

    from filtershift.store import MODELS_TABLE, open_database

    path = database_path(data, n_rows, seed)
    if (path / MODELS_TABLE).exists():
        db = open_database(path)
        if db.n_rows == n_rows:
            return db, 0.0
    shutil.rmtree(path, ignore_errors=True)
    models, layers = realistic_tables(n_rows, seed)
    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        db = write_synthetic(path, models, layers, conv_like, seed)
    seconds = time.perf_counter() - t
    if log:
        log(f"wrote {path}: {n_rows:,} filters, {len(layers):,} layers, {len(models):,} models, {n_rows * 36 / 1e9:.2f} GB in {seconds:.0f} s")
    return db, seconds
