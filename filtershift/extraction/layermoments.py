"""The per-layer PCA moments of newly committed models (docs/design.md §3 ``layer_moments.npz``).

Each read task computes its layers' moments while it holds the kernels in memory, and the write
task stages them (``moments.npz``); right after the tables' commit, under the writer lock, they get
their layer ids and join ``DB/layer_moments.npz``, so no row is read again for them. The file is a
cache: if this step fails or is killed, the first analysis that needs the moments reads those
layers once.
"""

from __future__ import annotations

import sys
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from filtershift.analysis.moments import LayerMoments, StackedMoments, to_arrays
from filtershift.extraction.staging import load_staged_moments
from filtershift.store.moments import write_moments


def staged_moments(folder: str, first_layer: int, n_layers: int) -> LayerMoments | None:
    """The moments of one written checkpoint's layers, given ids from ``first_layer`` (None if missing)."""
    staged = load_staged_moments(folder, n_layers)
    if staged is None:
        return None
    n = staged["n"].astype(np.int64)
    return LayerMoments(np.arange(first_layer, first_layer + n_layers, dtype=np.int64),
                        StackedMoments(n, staged["raw_mean"], staged["raw_m2"]), StackedMoments(n, staged["scaled_mean"], staged["scaled_m2"]))


def record_layer_moments(db: Path, models: list[tuple[str, int, int]], layers: pd.DataFrame) -> None:
    """Store the moments of the committed ``models`` — (staging folder, first layer id, number of
    layers) each — given ``layers``, the committed layer table. A failure only warns (see the module)."""
    if not models:
        return
    try:
        parts = [m for m in (staged_moments(*model) for model in models) if m is not None]
        merged = reduce(LayerMoments.merge, parts, LayerMoments.empty())
        write_moments(db, to_arrays(merged, layers), layers)
    except Exception as exc:  # noqa: BLE001 — a cache: the analysis recomputes what is missing
        print(f"warning: the PCA moments of the new layers were not stored ({type(exc).__name__}: {exc}); "
              "the first analysis computes them", file=sys.stderr)
