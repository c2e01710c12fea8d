"""The filter database on disk (docs/design.md §3): one Zarr v3 group and two Parquet tables.

This is the one module that touches the database's storage. The two tables are the commit record:
rows of ``filters.zarr`` beyond the rows they account for are not part of the database (an
interrupted append), and are overwritten by the next append.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np  # dask.array is imported where used: it takes 0.4 s, and extraction workers never need it
import pandas as pd
import zarr

from filtershift.schema import LAYER_COLUMNS, LAYER_DTYPES, MODEL_COLUMNS, MODEL_DTYPES
from filtershift.store.arrays import layer_of_rows, read_rows, resize_rows
from filtershift.store.errors import DatabaseError
from filtershift.store.files import atomic_write, exclusive_lock
from filtershift.store.moments import matching, read_moments, remove_moments, save_moments

FILTERS_STORE = "filters.zarr"
MODELS_TABLE = "models.parquet"
LAYERS_TABLE = "layers.parquet"
RESULTS_DIR = "results"

# 2**18 rows = 9 MiB per chunk. Measured here on a (20M, 9) store (docs/design.md §5, README):
# reads of 256k-row chunks beat 1M-row chunks (fresh buffers above ~32 MiB are page-faulted
# on every chunk on these VMs), and 3x3 float32 weights barely compress, so no codec by default.
DEFAULT_CHUNK_ROWS = 262_144

# Model statuses (docs/design.md §3). Only ``ok`` models have rows in the database; a ``removed``
# model's rows stay in filters.zarr, accounted for by its layers, but leave every analysis.
OK, FAILED, SKIPPED, REMOVED = "ok", "failed", "skipped", "removed"


@dataclass(frozen=True)
class Database:
    """An opened filter database: the two tables in memory, the arrays lazily as dask arrays."""

    path: Path
    models: pd.DataFrame
    layers: pd.DataFrame
    n_rows: int
    chunk_rows: int

    def filters(self, chunk_rows: int | None = None) -> da.Array:
        """The ``(N, 9)`` float32 filters as a lazy dask array (one task per chunk)."""
        import dask.array as da
        arr = da.from_zarr(str(self.path / FILTERS_STORE), component="filters", chunks=(chunk_rows or self.chunk_rows, 9))
        return arr[: self.n_rows]

    def layer_ids(self, chunk_rows: int | None = None) -> da.Array:
        """The ``(N,)`` int32 ``layer_id`` of every row, chunked like :meth:`filters`."""
        import dask.array as da
        arr = da.from_zarr(str(self.path / FILTERS_STORE), component="layer", chunks=(chunk_rows or self.chunk_rows,))
        return arr[: self.n_rows]

    def chunks(self) -> StoreChunks:
        """The store as chunks each task reads itself (see :class:`StoreChunks`); the rows' layers
        come from the layer table's row ranges, never from the ``layer`` array."""
        ordered = self.layers.sort_values("start", kind="stable")
        return StoreChunks(str(self.path / FILTERS_STORE), self.n_rows, self.chunk_rows,
                           ordered["start"].to_numpy(np.int64), ordered["stop"].to_numpy(np.int64),
                           ordered["layer_id"].to_numpy(np.int32))

    def layer_moments(self) -> dict[str, np.ndarray]:
        """The stored per-layer PCA moments of this database's layers (those not stored, or stale,
        are absent; see :mod:`filtershift.store.moments`)."""
        return matching(read_moments(self.path), self.layers)

    def store_layer_moments(self, arrays: dict[str, np.ndarray]) -> str | None:
        """Keep computed per-layer moments for the next analysis, under the writer lock without
        waiting; None when stored, else why they were not (busy or read-only database)."""
        return save_moments(self.path, arrays, writer_lock, lambda: accounted_layers(*read_tables(self.path)))

    def read_rows(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[start, stop)`` (default: all) in memory as (filters, layer_id), without dask."""
        return read_rows(str(self.path / FILTERS_STORE), start, self.n_rows if stop is None else min(stop, self.n_rows))


_OPEN_GROUPS: dict[tuple, zarr.Group] = {}


@dataclass(frozen=True, eq=False)
class StoreChunks:
    """Store chunks read inside the task that uses them: ``read(b)`` returns the rows of chunk ``b``
    that belong to a layer of the database as (filters (n, 9) float32, layer_id (n,) int32). Small
    and picklable (a path and the layers' row ranges, not the data). The ``layer_id`` of each row
    comes from the ranges ``[starts, stops)`` (sorted; rows of a layer are contiguous), so the
    ``layer`` array is never opened: the reads move only the filters.

    Given two dask arrays from ``from_zarr``, every chunk's partial would depend on two separate
    read tasks, which the distributed scheduler places independently, shipping chunks between
    worker processes; reading both arrays in one task avoids that (measured in
    ``filtershift/analysis/passes.py``, :class:`ChunkSource`).

    No kernel read-ahead advice: asking for the next chunk files (``posix_fadvise(WILLNEED)``, two
    chunks ahead) made cold reads of a 52.7 GB store slower, 307 and 317 s against 287 and 298 s
    without (docs/performance.md, "Out of core"). A read task instead reads its next chunk itself,
    in a second thread (``analysis/passes.py``, ``_read_and_run``).
    """

    path: str
    n_rows: int
    chunk_rows: int
    starts: np.ndarray
    stops: np.ndarray
    layer_ids: np.ndarray

    def read(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = block * self.chunk_rows, min((block + 1) * self.chunk_rows, self.n_rows)
        x = self._plain_chunk(block, hi - lo)
        if x is None:
            x = self._group()["filters"][lo:hi]
        first = int(np.searchsorted(self.stops, lo, side="right"))
        last = int(np.searchsorted(self.starts, hi, side="left"))
        a = np.clip(self.starts[first:last], lo, hi) - lo
        b = np.clip(self.stops[first:last], lo, hi) - lo
        lid = np.repeat(self.layer_ids[first:last], b - a)
        if len(lid) == len(x):  # the layers tile the chunk (always, but for rows of removed models)
            return x, lid
        return np.concatenate([x[i:j] for i, j in zip(a.tolist(), b.tolist())]) if len(a) else x[:0], lid

    def _group(self) -> zarr.Group:
        # Opened once per process and store state: the metadata's mtime is in the key, so a worker
        # that outlives an append never reads through stale array shapes.
        stamp = os.stat(os.path.join(self.path, "filters", "zarr.json")).st_mtime_ns
        key = (self.path, stamp)
        group = _OPEN_GROUPS.get(key)
        if group is None:
            _OPEN_GROUPS.clear()
            group = _OPEN_GROUPS[key] = zarr.open_group(self.path, mode="r")
        return group

    def _plain_chunk(self, block: int, rows: int) -> np.ndarray | None:
        """The first ``rows`` rows of chunk ``block`` read straight from its file, when the array
        keeps chunks as plain little-endian float32 bytes (no codec: the default) and the file is
        one whole chunk; None otherwise (a codec, another layout, a chunk never written), and zarr
        decodes it. Zarr's read of a warm 9 MiB chunk costs 2.4 ms of CPU, this one 0.95 ms; the
        bytes and the array are the same (``tests/test_moments.py``)."""
        if not _plain_layout(self.path, self.chunk_rows):
            return None
        out = np.empty((self.chunk_rows, 9), dtype="<f4")
        view = memoryview(out).cast("B")
        try:
            with open(os.path.join(self.path, "filters", "c", str(block), "0"), "rb", buffering=0) as f:
                if os.fstat(f.fileno()).st_size != len(view):
                    return None
                done = 0
                while done < len(view) and (got := f.readinto(view[done:])):
                    done += got
        except FileNotFoundError:
            return None
        return out[:rows] if done == len(view) else None


_PLAIN_LAYOUT = {"data_type": "float32", "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                 "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}}}
_PLAIN: dict[tuple, bool] = {}


def _plain_layout(path: str, chunk_rows: int) -> bool:
    """Whether the ``filters`` array of the Zarr group ``path`` stores chunk ``b`` as the file
    ``filters/c/b/0`` of ``chunk_rows x 9`` little-endian float32 values and nothing else (checked
    once per process and metadata state)."""
    meta = os.path.join(path, "filters", "zarr.json")
    key = (path, chunk_rows, os.stat(meta).st_mtime_ns)
    if key not in _PLAIN:
        with open(meta) as f:
            m = json.load(f)
        grid = m.get("chunk_grid", {})
        _PLAIN[key] = (all(m.get(k) == v for k, v in _PLAIN_LAYOUT.items()) and not m.get("storage_transformers")
                       and m.get("zarr_format") == 3 and len(m.get("shape", ())) == 2 and m["shape"][1] == 9
                       and grid.get("name") == "regular" and grid.get("configuration", {}).get("chunk_shape") == [chunk_rows, 9])
    return _PLAIN[key]


def require_database(path: str | os.PathLike) -> Path:
    """``path`` made absolute, if it holds the three pieces of a database; otherwise a
    :class:`DatabaseError` naming the missing piece and the command that makes it."""
    path = Path(path).absolute()  # workers may run in another folder (an existing scheduler)
    for piece in (path / FILTERS_STORE, path / MODELS_TABLE, path / LAYERS_TABLE):
        if not piece.exists():
            raise DatabaseError(
                f"{path} is not a filter database: {piece.name} is missing. "
                f"Create one with `filtershift extract MANIFEST --db {path}`."
            )
    return path


def open_database(path: str | os.PathLike) -> Database:
    """Open the database at ``path``; errors name the missing piece and the command that makes it.
    Removed models (status ``removed``) are left out of ``models``, their layers out of ``layers``."""
    path = require_database(path)
    store = path / FILTERS_STORE
    models = live_models(pd.read_parquet(path / MODELS_TABLE))
    layers = committed_layers(models, pd.read_parquet(path / LAYERS_TABLE))
    group = zarr.open_group(str(store), mode="r")
    filters = group["filters"]
    n_rows = int(layers["stop"].max()) if len(layers) else 0
    if filters.shape[0] < n_rows:
        raise DatabaseError(
            f"{store}: the filters array has {filters.shape[0]} rows but {LAYERS_TABLE} accounts for "
            f"{n_rows}; the database is damaged. Run `filtershift verify {path}`, or rebuild it."
        )
    return Database(path=path, models=models, layers=layers, n_rows=n_rows, chunk_rows=int(filters.chunks[0]))


STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM)


def is_storage_error(exc: BaseException | None) -> bool:
    """A write failure of the database's file system (full, read-only, no permission)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_error_message(path: Path, exc: OSError) -> str:
    return (
        f"cannot write to {path}: {exc.strerror or exc} ({getattr(exc, 'filename', '') or path}). "
        "Nothing already stored was changed. Free space or choose a writable --db, then rerun: finished work is kept."
    )


def committed_layers(models: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The layers of models the models table holds as ``ok``. The models table is the commit
    record: layers of other models are leftovers of an interrupted extraction (layers are written
    just before models) and are not part of the database."""
    if not len(layers):
        return layers
    ok = models.loc[models["status"] == OK, "model_id"] if len(models) else []
    keep = layers["model_id"].isin(ok)
    return layers if keep.all() else layers[keep].reset_index(drop=True)


def live_models(models: pd.DataFrame) -> pd.DataFrame:
    """The rows of the models table that are not ``removed`` (at most one per name)."""
    if not len(models) or not (models["status"] == REMOVED).any():
        return models
    return models[models["status"] != REMOVED].reset_index(drop=True)


def accounted_layers(models: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The layers whose rows the store keeps: those of ``ok`` models (the database) and those of
    ``removed`` models (left out of every analysis, their rows not reclaimed). Layers of any other
    model are leftovers of an interrupted extraction, whose rows the next append overwrites."""
    if not len(layers):
        return layers
    kept = models.loc[models["status"].isin([OK, REMOVED]), "model_id"] if len(models) else []
    keep = layers["model_id"].isin(kept)
    return layers if keep.all() else layers[keep].reset_index(drop=True)


def remove_models(path: str | os.PathLike, names: list[str]) -> pd.DataFrame:
    """Drop the live models called ``names`` (all or nothing) and return their rows as they were.

    Under the writer lock, ``ok`` rows become ``removed``: their layers stay in layers.parquet and
    their rows in filters.zarr (nothing is compacted, the space is not reclaimed), but they leave
    every analysis. ``failed`` and ``skipped`` rows hold no filters and are deleted."""
    path = require_database(path)
    with writer_lock(path):
        models = pd.read_parquet(path / MODELS_TABLE)
        live = models["status"] != REMOVED
        unknown = [n for n in dict.fromkeys(names) if not (live & (models["name"] == n)).any()]
        if unknown:
            raise DatabaseError(
                f"{path} holds no model named {', '.join(map(repr, unknown))}; nothing was removed. "
                f"`filtershift info {path}` lists the models."
            )
        chosen = live & models["name"].isin(names)
        gone = models[chosen].reset_index(drop=True)
        stored = chosen & (models["status"] == OK)
        models.loc[stored, ["status", "error"]] = [REMOVED, "removed by `filtershift remove`"]
        write_table(models[~chosen | stored].reset_index(drop=True), path / MODELS_TABLE)  # the commit
    return gone


def writer_lock(path: Path):
    """Hold ``DB/.lock`` while writing: a second writer fails at once with a clear message. The
    operating system releases the lock when the holder dies, so a killed run never blocks."""
    return exclusive_lock(path / ".lock", f"{path} is being written by another filtershift process; wait for it to finish.", DatabaseError)


def write_table(df: pd.DataFrame, target: Path) -> None:
    """Write a Parquet table atomically (a temporary file renamed over the target)."""
    atomic_write(target, lambda tmp: df.to_parquet(tmp, index=False))


def read_tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The models and layers tables of ``path``, empty (with the contract's columns) if absent."""
    models_file, layers_file = path / MODELS_TABLE, path / LAYERS_TABLE
    models = pd.read_parquet(models_file) if models_file.exists() else pd.DataFrame(columns=MODEL_COLUMNS)
    layers = (
        pd.read_parquet(layers_file)
        if layers_file.exists()
        else pd.DataFrame({c: pd.Series(dtype=LAYER_DTYPES.get(c, "str")) for c in LAYER_COLUMNS})
    )
    return models, layers


def ensure_store(path: Path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> zarr.Group:
    """Open ``DB/filters.zarr`` for appending, creating the group and its two arrays if needed.
    The caller holds the writer lock: temporary files a killed writer left are removed."""
    store = path / FILTERS_STORE
    if store.exists():
        for leftover in store.rglob("*.partial"):  # zarr writes each file as <name>.<uuid>.partial, then renames it
            leftover.unlink(missing_ok=True)
        group = zarr.open_group(str(store), mode="r+")
        if "filters" not in group or "layer" not in group:
            raise DatabaseError(f"{store} exists but lacks the 'filters' or 'layer' array; remove it and re-extract.")
        return group
    path.mkdir(parents=True, exist_ok=True)
    remove_moments(path)  # moments of an earlier store in this folder describe other rows
    group = zarr.open_group(str(store), mode="w-", zarr_format=3)
    group.create_array("filters", shape=(0, 9), chunks=(chunk_rows, 9), dtype="float32", compressors=None, fill_value=0.0)
    group.create_array("layer", shape=(0,), chunks=(chunk_rows,), dtype="int32", compressors=None, fill_value=-1)
    group.attrs["format"] = "filtershift-db"
    group.attrs["format_version"] = 1
    return group


def aligned_chunks(start: int, n_rows: int, chunk_rows: int) -> tuple[int, ...]:
    """Row chunking of ``n_rows`` new rows written from row ``start`` such that every piece lies
    inside exactly one store chunk: a first piece up to the next chunk boundary, then whole chunks.
    Writing piece by piece then never has two tasks writing the same chunk."""
    if n_rows == 0:
        return (0,)
    first = min(n_rows, chunk_rows - start % chunk_rows)
    rest = n_rows - first
    sizes = [first] + [chunk_rows] * (rest // chunk_rows)
    if rest % chunk_rows:
        sizes.append(rest % chunk_rows)
    return tuple(sizes)


def append_rows(group: zarr.Group, start: int, filters: da.Array, layer: da.Array, compute: bool = True):
    """Write ``filters`` (n, 9) and ``layer`` (n,) at rows ``[start, start + n)`` of the store, one
    task per store chunk; earlier rows and whole chunks are untouched. With ``compute=False`` the
    store is returned as a delayed value to compute (e.g. with a progress bar)."""
    import dask.array as da
    n = int(filters.shape[0])
    stop = start + n
    resize_rows(group, stop)
    f_arr, l_arr = group["filters"], group["layer"]  # opened after the resize: their shapes are current
    rows = aligned_chunks(start, n, int(f_arr.chunks[0]))
    return da.store(
        [filters.astype(np.float32).rechunk((rows, 9)), layer.astype(np.int32).rechunk((rows,))],
        [f_arr, l_arr],
        regions=[(slice(start, stop), slice(0, 9)), (slice(start, stop),)],
        lock=False,
        compute=compute,
    )


def write_database(
    path: str | os.PathLike,
    filters: np.ndarray | da.Array,
    models: pd.DataFrame,
    layers: pd.DataFrame,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Database:
    """Write a whole new database from arrays and tables (synthetic data, imports, tests).

    ``layers`` needs ``layer_id``, ``model_id``, ``start`` and ``stop`` (rows of one layer are
    contiguous and the ranges tile ``[0, N)``); the ``layer`` array is derived from them.
    """
    import dask.array as da
    path = Path(path)
    if (path / FILTERS_STORE).exists():
        raise DatabaseError(f"{path / FILTERS_STORE} already exists; choose a new --db folder or remove it.")
    group = ensure_store(path, chunk_rows)
    filters = filters if isinstance(filters, da.Array) else da.from_array(np.asarray(filters), chunks=(chunk_rows, 9))
    starts = layers["start"].to_numpy(np.int64)
    stops = layers["stop"].to_numpy(np.int64)
    ids = layers["layer_id"].to_numpy(np.int32)
    n = int(filters.shape[0])
    layer = da.map_blocks(
        layer_of_rows, da.arange(n, chunks=filters.chunks[0], dtype=np.int64), starts, stops, ids, dtype=np.int32
    )
    append_rows(group, 0, filters, layer)
    write_table(layers, path / LAYERS_TABLE)
    write_table(models, path / MODELS_TABLE)
    return open_database(path)

