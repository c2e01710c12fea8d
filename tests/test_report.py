"""The report: one self-contained page with parameters, a table of contents and every figure;
opened in headless Chromium it loads without JavaScript errors (screenshot kept as an artefact)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from filtershift.figures.catalog import build_figures
from filtershift.figures.synthetic import analyze_synthetic, write_synthetic_database
from filtershift.figures.report import write_report

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import dask

    with dask.config.set(scheduler="synchronous"):
        db = write_synthetic_database(tmp_path_factory.mktemp("rep") / "db", filters_per_layer=256)
        results = analyze_synthetic(db, by=("task", "depth_decile"))
        analyze_synthetic(db, name="small", by=("task",), where="task == 'classification'")
    figures = build_figures(results, db)
    return results, figures, write_report(results, figures, results.path / "report.html")


def test_report_is_self_contained_with_toc(report):
    results, figures, path = report
    text = path.read_text()
    assert "cdn.bokeh.org" not in text and "<script src=" not in text  # BokehJS inlined
    toc = re.findall(r"<li><a href='#([^']+)'>", text)
    assert toc == [f.key for f in figures]
    for f in figures:
        assert f"id='{f.key}'" in text
    assert "Run parameters" in text and results.provenance["database"]["fingerprint"] in text


def test_report_command(report, tmp_path):
    from filtershift.cli import main

    results, _, _ = report
    db = results.path.parent.parent
    out = tmp_path / "r.html"
    # a one-grouping analysis keeps this fast; the full page is checked above and in the browser
    assert main(["report", str(db), "--name", "small", "--subsets", "auto", "--no-store", "-o", str(out)]) == 0
    assert out.stat().st_size > 1_000_000


@pytest.mark.browser
def test_report_in_headless_chromium(report, chromium):
    from selenium.webdriver.common.by import By

    _, figures, path = report
    driver = chromium(1500, 4000)
    driver.get(path.as_uri())
    driver.set_script_timeout(60)
    # BokehJS has drawn every root when each figure section holds a rendered bokeh view
    n_views = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const views = (window.Bokeh && Bokeh.index) ? Object.keys(Bokeh.index).length : 0;
          if (views >= arguments_n || Date.now() - t0 > 50000) { done(views); } else { setTimeout(poll, 200); }
        })();
    """.replace("arguments_n", str(len(figures))))
    assert n_views >= len(figures)  # every figure root has a view (layouts may add one more)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
    assert len(driver.find_elements(By.CSS_SELECTOR, "section.figure")) == len(figures)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    driver.save_screenshot(str(shot))
    from PIL import Image
    import numpy as np

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[0] >= 3000
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # figures drawn, not a blank page
