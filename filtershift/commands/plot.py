"""``filtershift plot DB --name NAME [--out DIR]``: every figure of an analysis as HTML and PNG."""

from __future__ import annotations

import sys
from pathlib import Path

from filtershift.figures.formats import FORMATS


def add_figure_arguments(parser) -> None:
    """Options shared by ``plot`` and ``report``."""
    parser.add_argument("db", type=Path, help="filter database folder")
    parser.add_argument("--name", default="scaled", help="results name under DB/results/ (default %(default)s)")
    parser.add_argument("--subsets", default="", metavar="NAME,...",
                        help="other results of this DB (e.g. analyses with --where / --fit-on per task) whose PCAs are "
                        "compared in the explained-variance and component figures; 'auto': every other complete results folder")
    parser.add_argument("--shared-scale", action="store_true", help="one colour scale for all D heatmaps")
    parser.add_argument("--no-store", action="store_true", help="do not read the filter store (skips the datashaded layer examples)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot", help="render the figures of an analysis (HTML and PNG)",
        description="Render every figure of DB/results/NAME (principal components, D matrices, ridge plots, "
        "phenotype densities, filter scale, layer quality) as interactive HTML and PNG. PNG needs chromium and "
        "chromium-driver (headless).",
    )
    add_figure_arguments(parser)
    parser.add_argument("--out", type=Path, help="output folder (default DB/results/NAME/figures)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated: {', '.join(FORMATS)} (default %(default)s)")
    parser.set_defaults(func=execute)


def load_inputs(args):
    """``(results, db or None, subsets)`` from the command line; raises the readers' errors."""
    from filtershift.analysis.results import load_results
    from filtershift.store import DatabaseError, open_database

    results = load_results(args.db, args.name)
    db = None
    if not args.no_store:
        try:
            db = open_database(args.db)
        except DatabaseError as exc:
            print(f"note: {exc} (layer examples skipped)", file=sys.stderr)
    return results, db, subset_pcas(args.db, args.name, args.subsets)


def subset_pcas(db_path: Path, name: str, subsets: str) -> dict:
    from filtershift.analysis.results import complete_analyses, load_results
    from filtershift.figures.catalog import subset_label

    if subsets == "auto":
        names = [n for n in complete_analyses(db_path) if n != name]
    else:
        names = [s.strip() for s in subsets.split(",") if s.strip()]
    out = {}
    for n in names:
        r = load_results(db_path, n)
        out[subset_label(r) if subset_label(r) not in out else n] = r.pca
    return out


def execute(args) -> int:
    from filtershift.analysis.results import ResultsError
    from filtershift.figures.catalog import build_figures
    from filtershift.figures.save import ExportError, save_figures

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if bad := [f for f in formats if f not in FORMATS]:
        print(f"error: --formats {','.join(bad)}: choose from {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        results, db, subsets = load_inputs(args)
        figures = build_figures(results, db, subsets, shared_scale=args.shared_scale)
        out = args.out or results.path / "figures"
        written = save_figures(figures, out, formats)
    except (ResultsError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files for {len(figures)} figures to {out}")
    return 0
