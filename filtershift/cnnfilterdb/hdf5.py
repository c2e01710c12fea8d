"""Reading and writing CNN-Filter-DB HDF5 files: the I/O edge around :mod:`.mapping`.

Import streams ``/filters`` into ``DB/filters.zarr`` one store chunk per task. Each task opens the
HDF5 file itself (:class:`HDF5Rows`), so no h5py handle is shared between threads or pickled to
workers, and HDF5 converts float64 to float32 while reading (no float64 copy in memory). Progress is
recorded in ``DB/import-cnnfilterdb.json`` after every batch of chunks; the two tables, written last,
are the commit record (filtershift/store/database.py), so an interrupted import is never an openable database.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd

from filtershift.cnnfilterdb.mapping import (
    ColumnMap, FormatError, ImportTables, meta_from_csv_text, plan_export, plan_import,
)
from filtershift.store import (
    DEFAULT_CHUNK_ROWS, FILTERS_STORE, LAYERS_TABLE, MODELS_TABLE, DatabaseError, aligned_chunks, append_rows,
    ensure_store, layer_of_rows, open_database, resize_rows, write_table,
)
from filtershift.analysis.moments import LayerMoments, to_arrays
from filtershift.analysis.passes import FitContext, layer_moments_block, map_reduce
from filtershift.store.files import atomic_write, atomic_write_text
from filtershift.store.moments import write_moments

PROGRESS_FILE = "import-cnnfilterdb.json"
MAP_ATTRIBUTE = "filtershift"  # root attribute of an exported file: the ColumnMap as JSON
EMPTY_MODELS_KEY = "filtershift_models_without_layers"
FILTER_DATASETS = ("filters", "filter")  # the README of v1.0 calls it /filter, its code /filters
BATCH_CHUNKS = 64  # store chunks per progress checkpoint (64 x 256k rows = 16.8M rows); fewer batches cost less on a distributed cluster


@dataclass(frozen=True)
class HDF5Rows:
    """``/filters`` of an HDF5 file as a read-only ``(N, 9)`` float32 array-like for
    ``dask.array.from_array``: every read opens the file, so tasks share no h5py handle."""

    path: str
    dataset: str
    n_rows: int
    dtype: np.dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, 9)

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, key) -> np.ndarray:
        import h5py

        rows = key[0] if isinstance(key, tuple) else key
        start, stop, step = rows.indices(self.n_rows)
        if step != 1:
            raise IndexError("HDF5Rows reads contiguous row ranges only")
        with h5py.File(self.path, "r") as f:
            ds = f[self.dataset]
            out = np.empty((stop - start,) + ds.shape[1:], dtype=np.float32)
            if stop > start:
                ds.read_direct(out, np.s_[start:stop])  # HDF5 converts to float32 while reading
        out = out.reshape(stop - start, 9)
        return out[(slice(None),) + tuple(key[1:])] if isinstance(key, tuple) and len(key) > 1 else out


@dataclass(frozen=True)
class Source:
    """A CNN-Filter-DB file, checked and read except for its filters."""

    path: Path
    dataset: str
    n_rows: int
    dtype: str
    meta: pd.DataFrame
    meta_layout: str  # "dataframe" or "csv-bytes"
    column_map: ColumnMap | None
    models_without_layers: pd.DataFrame | None

    def fingerprint(self) -> dict:
        st = self.path.stat()
        return {"source": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "n_rows": self.n_rows, "dtype": self.dtype}


def read_source(path: str | os.PathLike) -> Source:
    """Open ``path``, check ``/filters``, read ``/meta`` (either layout); errors name the fix."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file; give the CNN-Filter-DB HDF5 file (dataset.h5).")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: not an HDF5 file ({exc}); if it ends in .xz, decompress it first (xz -dv FILE).") from exc
    with f:
        name = next((n for n in FILTER_DATASETS if n in f and isinstance(f[n], h5py.Dataset)), None)
        if name is None:
            raise FormatError(f"{path}: no /filters dataset (found {sorted(f.keys())}); this is not a CNN-Filter-DB file.")
        ds = f[name]
        if ds.dtype.kind != "f" or ds.dtype.itemsize not in (2, 4, 8):
            raise FormatError(f"{path}: /{name} has dtype {ds.dtype}; expected float64 or float32 filters. Convert the dataset to float.")
        if not (ds.ndim == 3 and ds.shape[1:] == (3, 3)) and not (ds.ndim == 2 and ds.shape[1] == 9):
            raise FormatError(f"{path}: /{name} has shape {ds.shape}; expected (N, 3, 3) or (N, 9) 3x3 filters.")
        n_rows, dtype = int(ds.shape[0]), str(ds.dtype)
        if "meta" not in f:
            raise FormatError(f"{path}: no /meta (found {sorted(f.keys())}); the layer table is needed to import the filters.")
        csv_meta = isinstance(f["meta"], h5py.Dataset)
        meta_text = bytes(bytearray(np.asarray(f["meta"][...]).tobytes())).decode("utf-8") if csv_meta else None
        raw_map = f.attrs.get(MAP_ATTRIBUTE)
        has_empty = EMPTY_MODELS_KEY in f
    if csv_meta:
        meta = meta_from_csv_text(meta_text.rstrip("\x00"))
    else:
        try:
            meta = pd.read_hdf(path, "meta")
        except Exception as exc:  # PyTables / pandas errors vary by version
            raise FormatError(f"{path}: /meta could not be read by pandas.read_hdf ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(meta, pd.DataFrame):
        raise FormatError(f"{path}: /meta holds a {type(meta).__name__}, not a DataFrame.")
    column_map = ColumnMap.from_json(raw_map.decode() if isinstance(raw_map, bytes) else str(raw_map)) if raw_map is not None else None
    empty = pd.read_hdf(path, EMPTY_MODELS_KEY) if has_empty else None
    return Source(path=path, dataset=name, n_rows=n_rows, dtype=dtype, meta=meta, meta_layout="csv-bytes" if csv_meta else "dataframe",
                  column_map=column_map, models_without_layers=empty)


def plan_from_source(source: Source, coerce_mixed: bool = False) -> ImportTables:
    tables = plan_import(source.meta, source.n_rows, str(source.path), source.column_map, coerce_mixed)
    if source.models_without_layers is not None and len(source.models_without_layers):
        extra = source.models_without_layers.astype({c: d for c, _, d in source.column_map.models}) if source.column_map else source.models_without_layers
        models = pd.concat([tables.models, extra[tables.models.columns]], ignore_index=True)
        models = models.sort_values("model_id", kind="stable").reset_index(drop=True)
        tables = ImportTables(models=models, layers=tables.layers, n_rows=tables.n_rows, notes=tables.notes)
    return tables


@dataclass(frozen=True)
class ImportResult:
    db: Path
    n_rows: int
    n_layers: int
    n_models: int
    resumed_from: int
    skipped: bool
    notes: tuple[str, ...]


def import_file(path: str | os.PathLike, db: str | os.PathLike, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                batch_chunks: int = BATCH_CHUNKS, coerce_mixed: bool = False, progress=None, source: Source | None = None,
                **compute_kwargs) -> ImportResult:
    """Import a CNN-Filter-DB file into the new filter database ``db`` (resumable, idempotent).

    Everything is validated before anything is written. ``compute_kwargs`` go to ``dask.store``
    (e.g. ``scheduler="synchronous"``); without them the current dask scheduler runs the import.
    ``progress(rows_done, n_rows)`` is called after each batch; ``source`` is ``read_source(path)``
    when the caller has it already.
    """
    db = Path(db)
    source = source if source is not None else read_source(path)
    tables = plan_from_source(source, coerce_mixed)
    fingerprint = source.fingerprint()
    marker = db / PROGRESS_FILE
    state = json.loads(marker.read_text()) if marker.exists() else None
    has_tables = (db / MODELS_TABLE).exists() or (db / LAYERS_TABLE).exists()
    if state is not None and state.get("fingerprint") != fingerprint:
        raise DatabaseError(
            f"{db} holds an import of {state.get('fingerprint', {}).get('source')} (or of an earlier version of "
            f"{source.path}); import into a new --db folder, or remove {db} to start over."
        )
    if has_tables and (state is None or not state.get("complete")):
        raise DatabaseError(f"{db} already holds a filter database; import into a new --db folder.")
    if state is not None and state.get("complete"):
        return ImportResult(db, source.n_rows, len(tables.layers), len(tables.models), source.n_rows, True, tables.notes)
    if state is None and (db / FILTERS_STORE).exists():
        raise DatabaseError(f"{db / FILTERS_STORE} exists but records no import of {source.path}; import into a new --db folder.")

    group = ensure_store(db, chunk_rows)
    chunk_rows = int(group["filters"].chunks[0])
    done = int(state["rows_done"]) if state else 0
    resumed_from = done
    computed = LayerMoments.empty()
    _write_json(marker, {"fingerprint": fingerprint, "rows_done": done, "complete": False})
    reader = HDF5Rows(str(source.path.resolve()), source.dataset, source.n_rows)
    starts = tables.layers["start"].to_numpy(np.int64)
    stops = tables.layers["stop"].to_numpy(np.int64)
    ids = tables.layers["layer_id"].to_numpy(np.int32)
    # One task per store chunk; each opens the file itself (h5py handles are neither thread-safe nor picklable).
    source_rows = da.from_array(reader, chunks=(chunk_rows, 9), lock=False, asarray=True, name=f"read-cnnfilterdb-{source.n_rows}")
    step = chunk_rows * max(1, batch_chunks)
    while done < source.n_rows:
        stop = min(source.n_rows, (done // step + 1) * step)
        rows = aligned_chunks(done, stop - done, chunk_rows)
        filters = source_rows[done:stop]
        index = da.arange(done, stop, chunks=rows, dtype=np.int64)
        layer = index.map_blocks(layer_of_rows, starts, stops, ids, dtype=np.int32)
        filters = filters.rechunk((rows, 9))
        moments = batch_moments(filters, layer, int(ids.max(initial=-1)) + 1)  # shares the batch's read tasks
        _, part = dask.compute(append_rows(group, done, filters, layer, compute=False), moments, **compute_kwargs)
        computed = computed.merge(part[0])
        done = stop
        _write_json(marker, {"fingerprint": fingerprint, "rows_done": done, "complete": False})
        if progress is not None:
            progress(done, source.n_rows)
    resize_rows(group, source.n_rows)  # an empty file, or a resume after the last batch
    write_table(tables.layers, db / LAYERS_TABLE)
    write_table(tables.models, db / MODELS_TABLE)
    _write_json(marker, {"fingerprint": fingerprint, "rows_done": done, "complete": True})
    # The layers' PCA moments, after the commit (a cache): on a resumed import, only of the layers
    # read whole in this run; the first analysis reads the others once.
    whole = tables.layers[tables.layers["start"] >= resumed_from]
    computed = computed.take(np.isin(computed.layer_id, whole["layer_id"].to_numpy(np.int64)))
    write_moments(db, to_arrays(computed, tables.layers), tables.layers)
    return ImportResult(db, source.n_rows, len(tables.layers), len(tables.models), resumed_from, False, tables.notes)


def batch_moments(filters: da.Array, layer: da.Array, n_ids: int) -> da.Array:
    """The per-layer PCA moments of a batch's rows (a (1,) object array holding a LayerMoments)."""
    return map_reduce(filters, layer, layer_moments_block, FitContext(np.ones(max(n_ids, 1), dtype=bool), "raw"),
                      LayerMoments.merge, label="layer-moments")


def export_file(db: str | os.PathLike, path: str | os.PathLike, float64: bool = False, batch_chunks: int = BATCH_CHUNKS,
                progress=None, **compute_kwargs) -> Path:
    """Write the database ``db`` as a CNN-Filter-DB file: ``/filters`` ``(N, 3, 3)`` float32 (or
    float64) and ``/meta`` via ``DataFrame.to_hdf``. Written to a temporary file renamed at the end."""
    database = open_database(db)
    meta, cmap, empty = plan_export(database.models, database.layers)
    path = Path(path)
    atomic_write(path, lambda tmp: _write_export(tmp, database, meta, cmap, empty, float64, batch_chunks, progress, compute_kwargs), suffix=".tmp")
    return path


def _write_json(target: Path, obj: dict) -> None:
    atomic_write_text(target, json.dumps(obj))


def _write_export(tmp: str, database, meta: pd.DataFrame, cmap: ColumnMap, empty: pd.DataFrame, float64: bool,
                  batch_chunks: int, progress, compute_kwargs: dict) -> None:
    """Fill the export file ``tmp``: ``/filters`` batch by batch, the column map, ``/meta``."""
    import h5py

    filters = database.filters()
    n = database.n_rows
    with h5py.File(tmp, "w") as f:
        out = f.create_dataset("filters", shape=(n, 3, 3), dtype=np.float64 if float64 else np.float32)
        step = database.chunk_rows * max(1, batch_chunks)
        for a in range(0, n, step):
            b = min(n, a + step)
            block = filters[a:b].compute(**compute_kwargs)
            out[a:b] = block.reshape(-1, 3, 3)
            if progress is not None:
                progress(b, n)
        f.attrs[MAP_ATTRIBUTE] = cmap.to_json()
    with warnings.catch_warnings():
        # to_hdf pickles text columns (object dtype), exactly as the reference's own files do.
        warnings.filterwarnings("ignore", message=r"\s*your performance may suffer as PyTables will pickle")
        meta.to_hdf(tmp, key="meta", mode="a")
        if len(empty):
            empty = empty.copy()
            for c in empty.columns:
                if pd.api.types.is_string_dtype(empty[c].dtype):
                    empty[c] = empty[c].astype(object)
            empty.to_hdf(tmp, key=EMPTY_MODELS_KEY, mode="a")
