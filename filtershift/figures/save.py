"""Writing figures: interactive HTML (bokeh) and PNG.

An HTML figure holds only its own plot; BokehJS (and any extension script its models need) is
written once per folder into ``_bokeh/``, as files named by their content hash, and loaded by a
relative ``<script src>``: a figures folder opens offline (``file://``) and 36 figures share one
copy of the ~1.8 MB of JavaScript instead of inlining ~3 MB each. (The single-file report,
:mod:`filtershift.figures.report`, still inlines everything.)

PNG goes through bokeh's ``export_png``, i.e. a headless Chromium driven by Selenium: the PNG is
a screenshot of exactly the HTML figure (one renderer, no second styling path as with
matplotlib). Debian ships ``chromium`` and ``chromium-driver`` from one source package, so their
versions always match (version skew is what usually breaks Selenium in CI), and we pass the
driver's path ourselves so Selenium Manager never tries to download one. One browser is started
per run and reused for every figure (:func:`png_driver`).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import holoviews as hv

from filtershift.errors import FiltershiftError
from filtershift.figures.formats import FORMATS
from filtershift.store.files import atomic_write, atomic_write_text

ASSETS_DIR = "_bokeh"
# Raw scripts shorter than this (e.g. ``Bokeh.set_log_level``) stay inline in the page.
MIN_ASSET_CHARS = 4096
PAGE_STYLE = "html, body { box-sizing: border-box; display: flow-root; margin: 0; padding: 0; }"

CHROMIUM_OPTIONS = (
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


class ExportError(FiltershiftError, RuntimeError):
    """PNG export is impossible here; the message says what to install."""


def script_assets(models: list) -> tuple[dict[str, str], list[str]]:
    """The JavaScript the bokeh ``models`` need: ``({file name: text}, [inline snippets])``.

    Pure. Each large script becomes a file named ``<bundle>-<sha256[:12]>.js`` (the bundle's name
    from BokehJS' ``/* BEGIN name.min.js */`` header), so another BokehJS version gets another
    file and figures written by either keep working. Scripts bokeh would load from a server's
    ``static/`` folder (panel's es-module shims, for widgets no figure uses) are left out."""
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    files, inline = {}, []
    for text in bundle_for_objs_and_resources(models, INLINE).js_raw:
        if len(text) < MIN_ASSET_CHARS:
            inline.append(text)
            continue
        header = re.match(r"\s*/\* BEGIN ([\w.-]+?)(?:\.min)?\.js \*/", text)
        stem = header.group(1) if header else "script"
        files[f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.js"] = text
    return files, inline


def figure_page(title: str, div: str, script: str, sources: list[str], inline: list[str]) -> str:
    """One figure's HTML page loading its scripts from ``sources`` (relative URLs). Pure."""
    tags = "\n".join(f'<script src="{html.escape(src)}"></script>' for src in sources)
    snippets = "\n".join(f"<script>{text}</script>" for text in inline)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style>
{tags}
{snippets}
</head><body>
{div}
{script}
</body></html>
"""


def write_assets(folder: Path, files: dict[str, str]) -> None:
    """Write each script into ``folder``, atomically, only when missing or different."""
    for name, text in files.items():
        target = folder / name
        if not (target.is_file() and target.read_text(encoding="utf-8") == text):
            atomic_write_text(target, text)


def save_html(obj: hv.core.Dimensioned, path: Path, title: str) -> Path:
    """An interactive HTML figure loading BokehJS from ``<its folder>/_bokeh/`` (written if needed)."""
    from bokeh.embed import components

    path = Path(path)
    model = hv.render(obj, backend="bokeh")
    files, inline = script_assets([model])
    write_assets(path.parent / ASSETS_DIR, files)
    script, div = components(model)
    atomic_write_text(path, figure_page(title, div, script, [f"{ASSETS_DIR}/{name}" for name in files], inline))
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
