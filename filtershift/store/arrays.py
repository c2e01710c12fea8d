"""The two arrays of ``DB/filters.zarr`` row by row: sizing, writing and reading a row range, the
checksum of a model's rows and the ``layer_id`` of every row (docs/design.md §3).

Every module outside the store that needs one of these calls it here; only the store opens zarr.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import zarr

from filtershift.store.errors import DatabaseError


def rows_checksum(filters: np.ndarray) -> str:
    """sha256 of rows as contiguous float32 bytes: the ``rows_sha256`` recorded per model at
    extraction and checked by ``verify``."""
    rows = np.ascontiguousarray(filters, dtype=np.float32)
    return hashlib.sha256(rows.reshape(-1).view(np.uint8)).hexdigest()  # hashed in place, not copied to bytes


def layer_of_rows(rows: np.ndarray, starts: np.ndarray, stops: np.ndarray, layer_ids: np.ndarray) -> np.ndarray:
    """The ``layer_id`` of each row, given layers by their row ranges ``[start, stop)`` (in any
    order; rows of one layer are contiguous). A row outside every range is an error."""
    order = np.argsort(starts, kind="stable")
    pos = np.searchsorted(starts[order], rows, side="right") - 1
    if np.any(pos < 0) or np.any(rows >= stops[order][pos]):
        raise DatabaseError("layer row ranges leave a gap: every row must belong to one layer")
    return layer_ids[order][pos].astype(np.int32)


def resize_rows(group: zarr.Group, n_rows: int) -> None:
    """Give both arrays ``n_rows`` rows (rows beyond are dropped, new rows read as fill values)."""
    if group["filters"].shape[0] != n_rows:
        group["filters"].resize((n_rows, 9))
        group["layer"].resize((n_rows,))


def grow_rows(group: zarr.Group, n_rows: int) -> None:
    """Give both arrays at least ``n_rows`` rows, never fewer than they have (while rows are placed
    one checkpoint at a time, rows written beyond by an interrupted run stay until the final size)."""
    if group["filters"].shape[0] < n_rows:
        resize_rows(group, n_rows)


def write_rows(store_path: str, start: int, filters: np.ndarray, layer: np.ndarray,
               between: Callable[[], None] | None = None) -> None:
    """Write ``filters`` and then ``layer`` at rows ``[start, start + n)`` of the sized store;
    ``between`` runs after the filters are written (a fault-injection point)."""
    group = zarr.open_group(store_path, mode="r+")
    group["filters"][start:start + len(filters)] = filters
    if between is not None:
        between()
    group["layer"][start:start + len(layer)] = layer


def read_rows(store_path: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` as (filters (n, 9) float32, layer_id (n,) int32), read without dask."""
    group = zarr.open_group(store_path, mode="r")
    return group["filters"][start:stop], group["layer"][start:stop]
