"""Writing figures: interactive HTML (bokeh, resources inline: opens offline) and PNG.

PNG goes through bokeh's ``export_png``, i.e. a headless Chromium driven by Selenium: the PNG is
a screenshot of exactly the HTML figure (one renderer, no second styling path as with
matplotlib). Debian ships ``chromium`` and ``chromium-driver`` from one source package, so their
versions always match (version skew is what usually breaks Selenium in CI), and we pass the
driver's path ourselves so Selenium Manager never tries to download one. One browser is started
per run and reused for every figure (:func:`png_driver`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import holoviews as hv

from filtershift.errors import FiltershiftError
from filtershift.figures.formats import FORMATS
from filtershift.store.files import atomic_write

CHROMIUM_OPTIONS = (
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


class ExportError(FiltershiftError, RuntimeError):
    """PNG export is impossible here; the message says what to install."""


def save_html(obj: hv.core.Dimensioned, path: Path, title: str) -> Path:
    """One self-contained interactive HTML file (BokehJS inlined)."""
    atomic_write(path, lambda tmp: hv.save(obj, tmp, backend="bokeh", resources="inline", title=title), suffix=".html")
    return path


def find_chromedriver() -> str | None:
    for name in (os.environ.get("BOKEH_CHROMEDRIVER_PATH"), "chromedriver", "chromium.chromedriver"):
        if name and (found := shutil.which(name) or (name if os.path.isfile(name) else None)):
            return found
    return None


@contextlib.contextmanager
def png_driver() -> Iterator[object]:
    """A headless Chromium webdriver for :func:`save_png`, closed (with its profile) on exit."""
    driver_path = find_chromedriver()
    if driver_path is None:
        raise ExportError(
            "PNG export needs Chromium and its driver: `apt-get install chromium chromium-driver` (Debian/Ubuntu), "
            "or set BOKEH_CHROMEDRIVER_PATH; or write HTML only with `--formats html`."
        )
    try:
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.chrome.webdriver import WebDriver
    except ImportError as exc:
        raise ExportError("PNG export needs selenium: `pip install selenium` (or `--formats html`).") from exc
    profile = tempfile.mkdtemp(prefix="filtershift-chromium-")
    options = Options()
    for arg in ("--headless=new", "--hide-scrollbars", "--force-device-scale-factor=1", "--force-color-profile=srgb",
                *CHROMIUM_OPTIONS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    if binary := shutil.which("chromium") or shutil.which("chromium-browser"):
        options.binary_location = binary
    driver = WebDriver(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def save_png(obj: hv.core.Dimensioned, path: Path, driver: object) -> Path:
    """The figure as PNG, rendered by BokehJS in ``driver`` (see :func:`png_driver`)."""
    from bokeh.io import export_png

    figure = hv.render(obj, backend="bokeh")
    atomic_write(path, lambda tmp: export_png(figure, filename=tmp, webdriver=driver, timeout=30), suffix=".png")
    return path


def save_figures(figures, out: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write every :class:`~filtershift.figures.catalog.Figure` as ``out/<key>.<fmt>``."""
    written = []
    with png_driver() if "png" in formats else contextlib.nullcontext() as driver:
        for fig in figures:
            if "html" in formats:
                written.append(save_html(fig.obj, out / f"{fig.key}.html", fig.title))
            if "png" in formats:
                written.append(save_png(fig.obj, out / f"{fig.key}.png", driver))
    return written
