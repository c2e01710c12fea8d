"""A model's report card: its layers' statistics placed among the analysed layers at the same depth
decile, its D to its own groups, and its nearest models. Pure numpy and pandas.

Percentile of a value v among the n reference values x at the same decile (mid-rank, so a value
equal to all of them sits at 50)::

    pct(v) = 100 · (#{x < v} + ½ #{x = v}) / n
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from filtershift.analysis.layerstats import is_degenerate, layer_entropy, layer_sparsity, threshold
from filtershift.analysis.nearest import META_COLUMNS, Query, Units, neighbours

STATISTICS = ("mean_range", "sparsity", "variance_entropy")


def checkpoint_layer_stats(kernels: np.ndarray, layers: pd.DataFrame) -> pd.DataFrame:
    """The ``layer_stats`` columns of a checkpoint's layers (raw float32 ``kernels`` in layer order,
    ``layers`` with ``name``, ``conv_index``, ``depth``, ``depth_decile``, ``n_filters``)."""
    bounds = np.concatenate([[0], np.cumsum(layers["n_filters"].to_numpy(np.int64))])
    blocks = [np.asarray(kernels[a:b], dtype=np.float64) for a, b in zip(bounds[:-1], bounds[1:])]
    out = layers[["name", "conv_index", "depth", "depth_decile", "n_filters"]].reset_index(drop=True).copy()
    out["mean_range"] = [float((w.max(axis=1) - w.min(axis=1)).mean()) for w in blocks]
    out["max_abs"] = [float(np.abs(w).max()) for w in blocks]
    out["sparsity"] = [layer_sparsity(w) for w in blocks]
    out["variance_entropy"] = [layer_entropy(w) for w in blocks]
    out["threshold"] = threshold(out["n_filters"].to_numpy())
    out["degenerate"] = [is_degenerate(w) for w in blocks]
    return out


def percentile(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each value among ``reference`` (NaN when there is no reference)."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    values = np.asarray(values, dtype=np.float64)
    if not len(ref):
        return np.full(len(values), np.nan)
    below = np.searchsorted(ref, values, side="left")
    upto = np.searchsorted(ref, values, side="right")
    return 100.0 * (below + 0.5 * (upto - below)) / len(ref)


def layer_percentiles(mine: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per layer of ``mine``: its statistics, their percentiles among the ``reference`` layers of the
    same depth decile (``<stat>_pct``), the degenerate flag and the share of degenerate reference
    layers at that decile."""
    out = mine[["name", "depth_decile", "n_filters", *STATISTICS, "degenerate"]].reset_index(drop=True).copy()
    by_decile = {int(k): g for k, g in reference.groupby("depth_decile")}
    empty = reference.iloc[:0]
    for stat in STATISTICS:
        out[f"{stat}_pct"] = np.concatenate([
            percentile([v], by_decile.get(int(d), empty)[stat].to_numpy()) for d, v in zip(out["depth_decile"], out[stat])
        ]) if len(out) else []
    out["degenerate_share"] = [float(by_decile[int(d)]["degenerate"].mean()) if int(d) in by_decile else np.nan for d in out["depth_decile"]]
    out["n_reference"] = [len(by_decile.get(int(d), empty)) for d in out["depth_decile"]]
    return out


def own_groups(models: pd.DataFrame, query_units: Units, units: Units, position: int | None, meta: dict, weighting: str,
               edges: np.ndarray, q: np.ndarray) -> pd.DataFrame:
    """Per metadata column: the query's own group (``meta[col]``, None for a checkpoint), D to it and
    its rank among the column's groups, and the nearest group with its D."""
    rows = []
    for col in [c for c in META_COLUMNS if c in models.columns and models[c].notna().any()]:
        table = neighbours(models, query_units, units, Query(by=col, top=10**9, model=position), weighting, edges, q)
        own = meta.get(col)
        mine = table[table["name"] == str(own)] if own is not None else table.iloc[:0]
        rows.append({
            "column": col, "own_group": None if own is None else str(own),
            "d_own": float(mine["d"].iloc[0]) if len(mine) else np.nan,
            "own_rank": int(mine["rank"].iloc[0]) if len(mine) else None,
            "n_groups": len(table), "nearest_group": str(table["name"].iloc[0]), "d_nearest": float(table["d"].iloc[0]),
        })
    return pd.DataFrame(rows, columns=["column", "own_group", "d_own", "own_rank", "n_groups", "nearest_group", "d_nearest"])
