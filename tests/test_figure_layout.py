"""Figures that fit and say what they show: every figure renders for 1, 3 and 40 groups with
60-character group names; a raw analysis never says "scaled"; opened in headless Chromium at
1400 x 1000 no figure and not the report is wider than the window."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest

from filtershift.bench.synthetic import model_tables, write_synthetic
from filtershift.figures import catalog
from filtershift.figures.synthetic import analyze_synthetic, draw_filters

LONG = 60
TASKS = ("classification", "segmentation", "generation")


def family_name(i: int, n_groups: int) -> str:
    """Group ``i`` of ``n_groups``: 60 characters, distinct in the first and last characters."""
    head = f"family-{i:03d}-"
    return (head + "very-long-architecture-name-" * 3)[: LONG - 4] + f"-{i:03d}" if n_groups > 1 else "x" * LONG


def grouped_database(path, n_groups: int, filters_per_layer: int = 96):
    """A database of ``max(n_groups, 2)`` models in ``n_groups`` families named with 60 characters,
    3 tasks (1 task when there is 1 group), 4 layers each of sun, spikes and symbols filters."""
    n_models = max(n_groups, 2)
    meta = [{"name": f"m{i}", "family": family_name(i % n_groups, n_groups), "task": TASKS[i % 3] if n_groups > 1 else TASKS[0],
             "data_type": "natural", "dataset": "shapes"} for i in range(n_models)]
    models, layers = model_tables(meta, [[filters_per_layer] * 4] * n_models)
    rng = np.random.default_rng(0)
    kinds = ("sun", "spikes", "symbols", "sun")
    filters = np.concatenate([draw_filters(kinds[ci], n, rng, scale=0.2 / (1 + ci))
                              for ci, n in zip(layers["conv_index"], layers["n_filters"])])
    return write_synthetic(path, models, layers, filters)


def analysed_groups(path, n_groups: int, scaling: str = "scaled"):
    import dask

    with dask.config.set(scheduler="synchronous"):
        db = grouped_database(path, n_groups)
        return db, analyze_synthetic(db, name=scaling, by=("family", "task", "depth_decile"), scaling=scaling)


def rendered_texts(model) -> list[str]:
    """Every title, axis label and colour-bar title of a rendered bokeh model."""
    from bokeh.models import Axis, ColorBar, Plot, Title

    texts = [t.text for t in model.select({"type": Title})]
    texts += [a.axis_label for a in model.select({"type": Axis}) if a.axis_label]
    texts += [c.title for c in model.select({"type": ColorBar}) if c.title]
    texts += [str(p.title.text) for p in model.select({"type": Plot}) if p.title is not None]
    return texts


@pytest.mark.parametrize("n_groups", [1, 3, 40])
def test_every_figure_renders_with_long_names(tmp_path, n_groups):
    from bokeh.models import Plot

    db, results = analysed_groups(tmp_path / "db", n_groups)
    figures = catalog.build_figures(results, db)
    assert {"shift_matrices", "layer_quality", "phenotypes", "counts_family"} <= {f.key for f in figures}
    for f in figures:
        model = hv.render(f.obj, backend="bokeh")
        plots = list(model.select({"type": Plot}))
        assert plots, f.key
        for p in plots:
            assert (p.width or 0) <= 1400, (f.key, p.width)
        for text in rendered_texts(model):
            assert len(text) <= 90, (f.key, text)  # long labels are shortened (full text in the hover)


def test_raw_analysis_never_says_scaled(tmp_path):
    db, results = analysed_groups(tmp_path / "db", 3, scaling="raw")
    assert results.pca.scaling == "raw"
    for f in catalog.build_figures(results, db):
        words = [f.title, f.caption, *rendered_texts(hv.render(f.obj, backend="bokeh"))]
        assert not [w for w in words if "scaled" in w.lower() and "unscaled" not in w.lower()], f.key


# ------------------------------------------------------------------------------------------------
# In the browser: one database of 24 long-named families (every figure kind drawn), analysed once

WINDOW = (1400, 1000)
MEASURE = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
function rights(node, out) {  // bounding right edge of every canvas and bokeh root, through shadow roots
  for (const el of node.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS' || el.hasAttribute('data-root-id') || el.classList.contains('bk-Figure')) {
      out.push(el.getBoundingClientRect().right + window.scrollX);
    }
    if (el.shadowRoot) rights(el.shadowRoot, out);
  }
  return out;
}
(function poll() {
  const views = (window.Bokeh && Bokeh.index) ? Object.keys(Bokeh.index).length : 0;
  const canvases = rights(document, []).length;
  if ((views > 0 && canvases > 0) || Date.now() - t0 > 30000) {
    setTimeout(() => done({views: views, scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                          right: Math.max(0, ...rights(document, []))}), 500);
  } else { setTimeout(poll, 200); }
})();
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from filtershift.figures.report import write_report
    from filtershift.figures.save import save_html

    out = tmp_path_factory.mktemp("layout")
    db, results = analysed_groups(out / "db", 24, scaling="raw")
    figures = catalog.build_figures(results, db)
    paths = [save_html(f.obj, out / f"{f.key}.html", f.title) for f in figures]
    return [write_report(results, figures, out / "report.html"), *paths]


@pytest.mark.browser
def test_report_and_figures_fit_a_1400_px_window(pages, chromium):
    driver = chromium(*WINDOW)
    too_wide, says_scaled = {}, []
    driver.set_window_size(*WINDOW)
    driver.set_script_timeout(60)
    for path in pages:
        driver.get(path.as_uri())
        m = driver.execute_async_script(MEASURE)
        assert m["views"] > 0 and m["right"] > 0, (path.name, m)  # drawn, so measured
        if m["scroll"] > m["inner"] or m["right"] > m["inner"]:
            too_wide[path.name] = m
        text = driver.execute_script("return document.body.innerText")
        if "scaled" in text.lower().replace("unscaled", ""):  # the analysis is raw
            says_scaled.append(path.name)
    assert too_wide == {} and says_scaled == [], (too_wide, says_scaled)


def test_subset_rows_and_distinct_fits(tmp_path):
    from filtershift.figures import pca

    db, results = analysed_groups(tmp_path / "db", 3)
    assert list(catalog.distinct_pcas(results, {"again": results.pca})) == [catalog.subset_label(results)]  # once
    layout = pca.pc_images_subsets({"all": results.pca, "x" * LONG: results.pca})
    hv.render(layout, backend="bokeh")
    assert len(layout) == 18 and list(layout)[9].opts.get().kwargs["ylabel"] == catalog.shorten("x" * LONG, 18)
