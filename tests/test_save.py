"""HTML figures share one copy of BokehJS per folder (``_bokeh/``), load it by a relative path,
and open offline from ``file://`` in headless Chromium."""

from __future__ import annotations

import re

import pytest

from filtershift.figures.catalog import build_figures
from filtershift.figures.save import ASSETS_DIR, save_figures
from filtershift.figures.synthetic import analyze_synthetic, write_synthetic_database


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    import dask

    with dask.config.set(scheduler="synchronous"):
        db = write_synthetic_database(tmp_path_factory.mktemp("save") / "db", filters_per_layer=128)
        results = analyze_synthetic(db, by=("task",))
    figs = {f.key: f for f in build_figures(results, db)}
    return [figs["pca_components"], figs["shift_matrices"]]


@pytest.fixture(scope="module")
def folder(figures, tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    save_figures(figures, out, formats=("html",))
    return out


def script_sources(page: str) -> list[str]:
    return re.findall(r'<script src="([^"]+)"', page)


def test_one_bokehjs_copy_per_folder_referenced_relatively(figures, folder):
    assets = sorted((folder / ASSETS_DIR).iterdir())
    bokeh_core = [p for p in assets if p.name.startswith("bokeh-") and "BEGIN bokeh.min.js" in p.read_text()[:200]]
    assert len(bokeh_core) == 1 and bokeh_core[0].stat().st_size > 1_000_000
    for fig in figures:
        page_path = folder / f"{fig.key}.html"
        assert page_path.stat().st_size < 200_000
        page = page_path.read_text()
        sources = script_sources(page)
        assert f"{ASSETS_DIR}/{bokeh_core[0].name}" in sources
        assert all(not re.match(r"[a-z]+:|/", src) for src in sources)  # relative: no scheme, no root
        assert {folder / src for src in sources} <= set(assets)
        assert "BEGIN bokeh.min.js" not in page and "cdn.bokeh.org" not in page


def test_scripts_rewritten_only_when_missing_or_different(figures, folder):
    assets = {p.name: p.stat().st_ino for p in (folder / ASSETS_DIR).iterdir()}
    save_figures(figures[:1], folder, formats=("html",))
    assert {p.name: p.stat().st_ino for p in (folder / ASSETS_DIR).iterdir()} == assets  # untouched
    damaged = folder / ASSETS_DIR / next(iter(assets))
    good = damaged.read_text()
    damaged.write_text("truncated")
    (folder / ASSETS_DIR / next(iter(reversed(assets)))).unlink()
    save_figures(figures[:1], folder, formats=("html",))
    assert damaged.read_text() == good
    assert sorted(p.name for p in (folder / ASSETS_DIR).iterdir()) == sorted(assets)
    assert not [p for p in (folder / ASSETS_DIR).iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.browser
def test_figure_opens_offline_from_file_url(figures, folder, chromium):
    driver = chromium(1400, 1000)
    driver.get((folder / f"{figures[1].key}.html").as_uri())
    driver.set_script_timeout(60)
    # BokehJS drew the plot when a view is indexed and its canvas sits in the page's shadow roots
    state = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        function canvases(root) {
          let n = root.querySelectorAll('canvas').length;
          for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) n += canvases(el.shadowRoot); }
          return n;
        }
        (function poll() {
          const views = (window.Bokeh && Bokeh.index) ? Object.keys(Bokeh.index).length : 0;
          const n = canvases(document);
          if ((views > 0 && n > 0) || Date.now() - t0 > 50000) { done([typeof window.Bokeh, views, n]); }
          else { setTimeout(poll, 200); }
        })();
    """)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert state[0] == "object" and state[1] > 0 and state[2] > 0, state
    assert errors == [], errors
