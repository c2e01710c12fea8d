"""Regenerate the gallery docs/figures.md: a small PNG of every figure of the demo's analyses.

    filtershift run jobs/demo.yaml          # once, if runs/demo/demo.db does not exist yet
    python docs/make_gallery.py [--db runs/demo/demo.db] [--analyses scaled raw] [--width 600]

Every figure :func:`filtershift.figures.catalog.build_figures` draws for an analysis is rendered
by BokehJS in headless Chromium (:func:`filtershift.figures.save.save_png`, the same path as
``filtershift plot --formats png``), scaled to ``--width`` pixels, reduced to a 256-colour palette
and written as ``docs/figures/<analysis>-<key>.png``; PNGs of figures that no longer exist are
removed. docs/figures.md lists each figure with its title and caption.
"""

from __future__ import annotations

import argparse
import html
import io
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def small_png(source: Path, width: int) -> bytes:
    """``source`` scaled to ``width`` pixels wide (never enlarged), as an optimised palette PNG."""
    from PIL import Image

    with Image.open(source) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def render_analysis(db: Path, name: str, out: Path, width: int, driver) -> list[tuple[str, object]]:
    """Write ``out/<name>-<key>.png`` for every figure of analysis ``name``; return (file, figure)."""
    from filtershift.analysis.results import load_results
    from filtershift.figures.catalog import build_figures
    from filtershift.figures.save import save_png
    from filtershift.store import open_database
    from filtershift.store.files import atomic_write_bytes

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fig in build_figures(load_results(db, name), open_database(db)):
            full = save_png(fig.obj, Path(tmp) / f"{fig.key}.png", driver)
            target = out / f"{name}-{fig.key}.png"
            atomic_write_bytes(target, small_png(full, width))
            rows.append((target.name, fig))
    return rows


def gallery_page(sections: dict[str, list[tuple[str, object]]], db: Path) -> str:
    """The Markdown page: one section per analysis, each figure's title, caption and PNG."""
    lines = ["# Figure gallery", "",
             f"Every figure of the demo's analyses (`{db.name}`, `jobs/demo.yaml`), as `filtershift plot` draws it,",
             "scaled down. Regenerate with `python docs/make_gallery.py` after `filtershift run jobs/demo.yaml`;",
             "the interactive HTML versions are in `runs/demo/figures/<analysis>/`.", ""]
    for name, rows in sections.items():
        lines += [f"## Analysis `{name}`", ""]
        lines += [f"- [{html.escape(fig.title)}](#{name}-{fig.key})" for _, fig in rows] + [""]
        for file, fig in rows:
            lines += [f'<a id="{name}-{fig.key}"></a>', "", f"### {fig.title}", "", fig.caption, "",
                      f"![{fig.title}](figures/{file})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from filtershift.figures.save import png_driver
    from filtershift.store.files import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runs/demo/demo.db"))
    parser.add_argument("--analyses", nargs="+", default=["scaled", "raw"])
    parser.add_argument("--width", type=int, default=600)
    args = parser.parse_args(argv)
    if not (args.db / "results").is_dir():
        parser.error(f"no analyses in {args.db}; run `filtershift run jobs/demo.yaml` first (or pass --db)")
    out = DOCS / "figures"
    out.mkdir(exist_ok=True)
    with png_driver() as driver:
        sections = {name: render_analysis(args.db, name, out, args.width, driver) for name in args.analyses}
    written = {file for rows in sections.values() for file, _ in rows}
    for stale in out.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    atomic_write_text(DOCS / "figures.md", gallery_page(sections, args.db))
    print(f"{len(written)} figures, {sum((out / f).stat().st_size for f in written):,} bytes -> {DOCS / 'figures.md'}")


if __name__ == "__main__":
    main()
