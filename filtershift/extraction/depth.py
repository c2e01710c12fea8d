"""Depth of a convolution layer inside its model (docs/design.md §2). Pure arithmetic."""

from __future__ import annotations

import numpy as np


def relative_depth(conv_index: int, n_conv: int) -> float:
    """Relative depth ``r = conv_index / (n_conv - 1)``; 0 for a model with a single conv index."""
    if n_conv <= 1:
        return 0.0
    return conv_index / (n_conv - 1)


def depth_decile(conv_index: int, n_conv: int) -> int:
    """Depth decile ``max(ceil(10 r) - 1, 0)`` computed in integers, so that a layer at exactly
    k/10 falls in the lower decile (the reference's bins [0, .1], (.1, .2], ..., (.9, 1])."""
    if n_conv <= 1:
        return 0
    m = n_conv - 1
    return max(-(-10 * conv_index // m) - 1, 0)


def depth_decile_from_float(depth: np.ndarray | float, tol: float = 1e-9) -> np.ndarray:
    """Depth decile of relative depths given as floats (imported data): ``ceil(10 r) - 1`` with
    ``10 r`` within ``tol`` of an integer treated as that integer."""
    scaled = np.asarray(depth, dtype=np.float64) * 10.0
    nearest = np.round(scaled)
    scaled = np.where(np.abs(scaled - nearest) <= tol, nearest, scaled)
    return np.clip(np.ceil(scaled) - 1, 0, 9).astype(np.int8)


def dense_rank(levels: list[int]) -> tuple[list[int], int]:
    """Map execution levels to consecutive conv indices ``0..n-1`` (equal levels share an index)."""
    distinct = sorted(set(levels))
    rank = {level: i for i, level in enumerate(distinct)}
    return [rank[level] for level in levels], len(distinct)


__all__ = ["relative_depth", "depth_decile", "depth_decile_from_float", "dense_rank"]
