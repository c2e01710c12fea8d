"""The per-layer PCA moments of newly committed models (docs/design.md §3 ``layer_moments.npz``).

Each staging task computes its layers' moments while it holds the kernels in memory and stages
them beside the kernels (``moments.npz``); consolidation, right after the tables' commit and
under the writer lock, gives them their layer ids and adds them to ``DB/layer_moments.npz``, so
the staged rows are never read again for them. A staging folder without moments (left by an
older version) has them computed from its kernels. The file is a cache: if this step fails or is
killed, the first analysis that needs the moments reads those layers once.
"""

from __future__ import annotations

import sys
from functools import reduce
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from filtershift.analysis.moments import LayerMoments, StackedMoments, layer_moments, to_arrays
from filtershift.extraction.staging import load_staged_kernels, load_staged_moments
from filtershift.store.moments import write_moments


def staged_moments(folder: str, layer_ids: np.ndarray, sizes: np.ndarray) -> LayerMoments:
    """The moments of one staged model's layers (``sizes[k]`` rows of ``layer_ids[k]`` in order)."""
    staged = load_staged_moments(folder, len(layer_ids))
    if staged is None or not np.array_equal(staged["n"], sizes):
        return layer_moments(load_staged_kernels(folder, mmap=True), layer_ids, sizes)
    return LayerMoments(np.asarray(layer_ids, np.int64),
                        StackedMoments(staged["n"].astype(np.int64), staged["raw_mean"], staged["raw_m2"]),
                        StackedMoments(staged["n"].astype(np.int64), staged["scaled_mean"], staged["scaled_m2"]))


def record_layer_moments(db: Path, models: list[tuple[str, np.ndarray, np.ndarray]], layers: pd.DataFrame) -> None:
    """Store the moments of the committed ``models`` — (staging folder, layer ids, layer sizes)
    each — given ``layers``, the committed layer table. A failure only warns (see the module)."""
    if not models:
        return
    tasks = [dask.delayed(staged_moments, pure=False)(folder, ids, sizes, dask_key_name=f"layer-moments-{i}")
             for i, (folder, ids, sizes) in enumerate(models)]
    try:
        merged = reduce(LayerMoments.merge, dask.compute(*tasks), LayerMoments.empty())
        write_moments(db, to_arrays(merged, layers), layers)
    except Exception as exc:  # noqa: BLE001 — a cache: the analysis recomputes what is missing
        print(f"warning: the PCA moments of the new layers were not stored ({type(exc).__name__}: {exc}); "
              "the first analysis computes them", file=sys.stderr)
