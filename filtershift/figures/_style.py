"""Shared conventions of the figures: the bokeh backend, sizes, colour maps and group ordering."""

from __future__ import annotations

import holoviews as hv
import numpy as np

hv.renderer("bokeh")  # load the bokeh backend quietly (hv.extension prints notebook output)

WIDTH = 900
PANEL = 300
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
DENSITY = "fire"
# Groupings whose labels are ordered numbers: kept in numeric order, never sorted by value.
ORDERED_GROUPINGS = ("depth_decile", "conv_index", "n_conv")


def decile_label(d: int | str) -> str:
    """``3`` -> ``"3 (30–40 %)"``: the depth decile with the relative depth it covers."""
    d = int(d)
    lo = 0 if d == 0 else 10 * d
    return f"{d} ({lo}–{10 * (d + 1)} %)"


def is_ordered(by: str) -> bool:
    return any(part.strip() in ORDERED_GROUPINGS for part in by.split("+")) and all(
        part.strip() in ORDERED_GROUPINGS for part in by.split("+")
    )


def natural_order(labels: list[str] | tuple[str, ...]) -> list[str]:
    """Labels in numeric order where they are numbers, else as given."""
    def key(s: str) -> tuple:
        try:
            return (0, float(s), "")
        except ValueError:
            return (1, 0.0, s)

    return sorted(labels, key=key)


def pretty(by: str) -> str:
    """A grouping name for humans: ``task+data_type`` -> ``task × data type``."""
    return " × ".join(p.strip().replace("_", " ") for p in by.split("+"))


def percent(x: float) -> str:
    return f"{100 * x:.1f} %"


def symmetric_limit(a: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(a))) if np.size(a) else 1.0
    return m if m > 0 else 1.0
