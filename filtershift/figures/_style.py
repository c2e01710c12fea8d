"""Shared conventions of the figures: the bokeh backend, sizes, colour maps and group ordering."""

from __future__ import annotations

import textwrap

import holoviews as hv
import numpy as np

hv.renderer("bokeh")  # load the bokeh backend quietly (hv.extension prints notebook output)

WIDTH = 900
PANEL = 300
# Widest a whole figure may be: the report's column (1,400 px window less its margins) and a figure
# HTML page both hold it without horizontal scrolling (tests/test_figure_layout.py measures it).
MAX_WIDTH = 1280
CHAR_PX = 6.5  # width of one character of a tick label (bokeh's default 11 px font), for layout sums
TICK_CHARS = 28  # tick labels longer than this are shortened (full text in the hover)
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
DENSITY = "fire"
# Groupings whose labels are ordered numbers: kept in numeric order, never sorted by value.
ORDERED_GROUPINGS = ("depth_decile", "conv_index", "n_conv")


def shorten(text: str, n: int = TICK_CHARS) -> str:
    """``text`` cut to ``n`` characters with an ellipsis in the middle (names that differ at
    their end, like ``…-017``, stay apart)."""
    text = str(text)
    if len(text) <= n:
        return text
    tail = max(1, (n - 1) // 3)
    return text[: n - 1 - tail] + "…" + text[-tail:]


def short_labels(labels, n: int = TICK_CHARS) -> dict[str, str]:
    """A shortened, still distinct label per label (``#k`` appended where shortening made two equal)."""
    out, seen = {}, set()
    for k, lab in enumerate(labels):
        s = shorten(lab, n)
        if s in seen:
            s = shorten(lab, n - 4) + f" #{k}"
        seen.add(s)
        out[str(lab)] = s
    return out


def label_px(labels) -> int:
    """Pixels the longest of ``labels`` takes as a tick label."""
    return int(CHAR_PX * max((len(str(s)) for s in labels), default=1)) + 12


def plot_width(element: hv.Element) -> int:
    """The width an element's options give it (``PANEL`` if none)."""
    return int(hv.Store.lookup_options("bokeh", element, "plot").kwargs.get("width", PANEL))


def units(scaling: str) -> str:
    """The unit of coefficients under ``scaling``: what the axis labels say (never "scaled" for raw)."""
    return "scaled filter units" if scaling == "scaled" else "raw weight units"


def note(text: str, width: int = PANEL, height: int = 120) -> hv.Text:
    """A text panel in place of a plot that would show nothing (says why): the text wrapped to the
    panel, on a blank plot (plain bokeh, so the report's inlined BokehJS draws it)."""
    lines = textwrap.fill(text, max(20, int((width - 24) / CHAR_PX)))
    return hv.Text(0.02, 0.5, lines, halign="left", valign="center", fontsize=9).opts(
        width=width, height=max(height, 22 * (lines.count("\n") + 2)), xlim=(0, 1), ylim=(0, 1), xaxis=None, yaxis=None,
        toolbar=None, show_frame=False, text_color="#555", text_font_style="italic")


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
