"""The fingerprint of a database's state: tells results computed from it from results of another state."""

from __future__ import annotations

import hashlib

from filtershift.store.database import FILTERS_STORE, LAYERS_TABLE, MODELS_TABLE, Database


def fingerprint(db: Database) -> str:
    """sha256 of the two tables, the arrays' metadata and the row count (the filters are not read)."""
    h = hashlib.sha256()
    for rel in (MODELS_TABLE, LAYERS_TABLE, f"{FILTERS_STORE}/zarr.json", f"{FILTERS_STORE}/filters/zarr.json", f"{FILTERS_STORE}/layer/zarr.json"):
        p = db.path / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.exists() else b"-")
    h.update(str(db.n_rows).encode())
    return h.hexdigest()
