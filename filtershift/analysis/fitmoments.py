"""The PCA's moments from the stored per-layer moments (docs/design.md §2 "PCA", §4 "reads").

The fit set is a union of layers, so its moments are the Chan merge of the layers' stored
moments: no read of the filters. Layers whose moments are not stored (a database made before
moments were stored, an interrupted commit) are read once — only the store chunks that hold them
— and their moments are stored for the next analysis when the writer lock is free and the database
writable; otherwise they are used for this analysis only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from filtershift.analysis.moments import to_arrays, to_layer_moments
from filtershift.analysis.passes import layer_moments_pass
from filtershift.analysis.pca import Moments
from filtershift.analysis.plan import AnalysisPlan, chunk_blocks


@dataclass(frozen=True)
class FitMoments:
    """The fit set's moments and how they were obtained (for the provenance)."""

    moments: Moments
    n_layers_stored: int  # fit layers whose moments were stored already
    n_layers_read: int  # fit layers read now
    n_chunks_read: int
    stored: str | None  # None: nothing to store, "stored", or why not


def fit_layer_ids(plan: AnalysisPlan) -> np.ndarray:
    """The layer ids of the plan's fit set, ascending."""
    return np.flatnonzero(plan.fit_lookup).astype(np.int64)


def fit_moments(db, plan: AnalysisPlan, chunks) -> FitMoments:
    """The moments of the fit set of ``plan`` over the database ``db`` (a
    :class:`filtershift.store.Database`), reading only the chunks of fit layers without stored moments."""
    fit_ids = fit_layer_ids(plan)
    stored = to_layer_moments(db.layer_moments())
    missing = fit_ids[~np.isin(fit_ids, stored.layer_id)]
    note, blocks = None, ()
    if len(missing):
        table = db.layers[db.layers["layer_id"].isin(missing)]
        blocks = chunk_blocks(table["start"].to_numpy(), table["stop"].to_numpy(), db.chunk_rows)
        wanted = np.zeros_like(plan.fit_lookup)
        wanted[missing] = True
        computed = layer_moments_pass(chunks, blocks, wanted)
        note = db.store_layer_moments(to_arrays(computed, db.layers)) or "stored"
        stored = stored.merge(computed)
    return FitMoments(stored.fit_moments(fit_ids, plan.scaling), len(fit_ids) - len(missing), len(missing), len(blocks), note)
