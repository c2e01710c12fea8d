"""``filtershift report``: every figure of an analysis in one self-contained HTML page.

The page inlines BokehJS (opens offline, can be mailed), lists the run's parameters, database,
timing and versions, and has a table of contents linking to one section per figure.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import holoviews as hv
from bokeh.embed import components
from bokeh.resources import INLINE

from filtershift.analysis.results import Results
from filtershift.store.files import atomic_write_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 1em 2em; color: #222; box-sizing: border-box; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-top: 0.6em; }
table.params { border-collapse: collapse; font-size: 0.9em; } .params td, .params th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
nav ol { columns: 2; } .caption { color: #555; max-width: 70em; } .figure { margin: 1em 0 2em; }
"""


def _rows(d: dict) -> str:
    out = []
    for k, v in d.items():
        text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        out.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(text)}</td></tr>")
    return "".join(out)


def parameters_html(results: Results) -> str:
    """Tables of the run: parameters, database, what was analysed, timing, versions."""
    titles = {"parameters": "Parameters", "basis": "Basis", "database": "Database", "analysed": "Analysed", "timing": "Timing (s)", "versions": "Versions"}
    return "\n".join(f"<h3>{titles[key]}</h3><table class='params'>{_rows(table)}</table>" for key, table in results.sections().items())


def inline_resources() -> str:
    """BokehJS (and the extensions holoviews registered) inlined; ``<script src=...>`` tags that
    point at a server's ``static/`` folder (panel's es-module-shims, only for panel's ESM widgets,
    which no figure uses) are dropped so the page needs no server and no network."""
    return "\n".join(line for line in INLINE.render().splitlines() if not re.match(r'\s*<script src="static/', line))


def render_report(results: Results, figures, title: str | None = None) -> str:
    """The whole page as one HTML string (pure: no files written)."""
    title = title or f"filtershift report: {results.path.parent.parent.name} / {results.path.name}"
    models = {f.key: hv.render(f.obj, backend="bokeh") for f in figures}
    script, divs = components(models)
    toc = "".join(f"<li><a href='#{f.key}'>{html.escape(f.title)}</a></li>" for f in figures)
    sections = "".join(
        f"<section class='figure' id='{f.key}'><h2>{html.escape(f.title)}</h2>"
        f"<p class='caption'>{html.escape(f.caption)}</p>{divs[f.key]}</section>"
        for f in figures
    )
    created = html.escape(results.created)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style>
{inline_resources()}
{script}
</head><body>
<h1>{html.escape(title)}</h1>
<p>Results <code>{html.escape(str(results.path))}</code>, analysed {created}. Distribution shift D is the
q-weighted symmetric KL divergence between the groups' PCA-coefficient histograms (Gavrikov &amp; Keuper 2021).</p>
<nav><h2 id="contents">Contents</h2><ol><li><a href="#run">Run parameters</a></li>{toc}</ol></nav>
<section id="run"><h2>Run parameters</h2>{parameters_html(results)}</section>
{sections}
</body></html>
"""


def write_report(results: Results, figures, path: Path, title: str | None = None) -> Path:
    path = Path(path)
    atomic_write_text(path, render_report(results, figures, title))  # a killed run leaves no half page
    return path
