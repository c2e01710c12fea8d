"""``DB/layer_moments.npz``: the stored per-layer PCA moments (docs/design.md §3).

One entry per layer: ``layer_id``, its row range ``start``/``stop``, ``n`` and, for each scaling,
``<scaling>_mean`` (9,) and ``<scaling>_m2`` (9, 9) (float64; see :mod:`filtershift.analysis.moments`).
The file is a cache of what the rows determine: an entry counts only while a committed layer has
the same id and row range (committed rows never change, and a layer id is never reused for other
rows once committed), so a stale, partial, foreign or damaged file costs a read, never a wrong
PCA. It is written atomically, after the tables' commit or under the writer lock.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from filtershift.store.errors import DatabaseError
from filtershift.store.files import LockedError, atomic_write

MOMENTS_FILE = "layer_moments.npz"
SHAPES = {
    "layer_id": (), "start": (), "stop": (), "n": (),
    "raw_mean": (9,), "raw_m2": (9, 9), "scaled_mean": (9,), "scaled_m2": (9, 9),
}
INTEGER_FIELDS = ("layer_id", "start", "stop", "n")


def read_moments(path: Path) -> dict[str, np.ndarray] | None:
    """The entries of ``DB/layer_moments.npz``, or None when it is absent or not a well-formed
    moments file (wrong members, shapes or dtypes, members larger than the file)."""
    target = Path(path) / MOMENTS_FILE
    try:
        size = target.stat().st_size
        with zipfile.ZipFile(target) as archive:
            infos = {i.filename: i for i in archive.infolist()}
            if set(infos) != {f"{k}.npy" for k in SHAPES} or any(i.file_size > size + 4096 for i in infos.values()):
                return None
        with np.load(target, allow_pickle=False) as data:
            arrays = {k: data[k] for k in SHAPES}
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError):
        return None
    k = len(arrays["layer_id"])
    for name, shape in SHAPES.items():
        a = arrays[name]
        kind = "iu" if name in INTEGER_FIELDS else "f"
        if a.shape != (k,) + shape or a.dtype.kind not in kind:
            return None
    return arrays


def matching(arrays: dict[str, np.ndarray] | None, layers: pd.DataFrame) -> dict[str, np.ndarray]:
    """The entries of ``arrays`` whose layer is in ``layers`` with the same row range and count
    (one entry per layer id; empty when there are none)."""
    if arrays is None or not len(layers):
        return {k: np.zeros((0,) + s, np.int64 if k in INTEGER_FIELDS else np.float64) for k, s in SHAPES.items()}
    table = layers.drop_duplicates("layer_id").set_index("layer_id")[["start", "stop"]]
    _, first = np.unique(arrays["layer_id"], return_index=True)
    picked = {k: v[first] for k, v in arrays.items()}
    found = table.reindex(picked["layer_id"])
    start, stop = found["start"].to_numpy(np.float64), found["stop"].to_numpy(np.float64)
    ok = (start == picked["start"]) & (stop == picked["stop"]) & (picked["n"] == stop - start)
    return {k: v[ok] for k, v in picked.items()}


def write_moments(path: Path, arrays: dict[str, np.ndarray], layers: pd.DataFrame) -> None:
    """Store ``arrays`` merged with the entries already stored, keeping only entries that match
    ``layers`` (the layers whose rows the store keeps). The caller holds the writer lock."""
    new = matching(arrays, layers)
    old = matching(read_moments(path), layers)
    keep_old = ~np.isin(old["layer_id"], new["layer_id"])
    merged = {k: np.concatenate([old[k][keep_old], new[k]]) for k in SHAPES}
    order = np.argsort(merged["start"], kind="stable")
    merged = {k: np.ascontiguousarray(v[order]).astype(np.int64 if k in INTEGER_FIELDS else np.float64) for k, v in merged.items()}
    atomic_write(Path(path) / MOMENTS_FILE, lambda tmp: _save(tmp, merged))


def _save(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def save_moments(path: Path, arrays: dict[str, np.ndarray], writer_lock, read_layers) -> str | None:
    """Store ``arrays`` (computed by an analysis) under the writer lock, without waiting for it.
    ``read_layers()`` gives the layers whose rows the store keeps, read inside the lock. Returns
    None when stored, else why not (another writer holds the lock, or the database is read-only);
    nothing is changed then, and the next analysis computes the moments again."""
    try:
        with writer_lock(path):
            write_moments(path, arrays, read_layers())
    except (LockedError, DatabaseError) as exc:
        return f"not stored: {exc}"
    except OSError as exc:
        return f"not stored: cannot write to {path} ({exc.strerror or exc})"
    return None


def remove_moments(path: Path) -> None:
    """Forget the stored moments (a new store is created where an old one was)."""
    (Path(path) / MOMENTS_FILE).unlink(missing_ok=True)
