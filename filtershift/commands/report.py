"""``filtershift report DB --name NAME``: one self-contained HTML page with every figure."""

from __future__ import annotations

from pathlib import Path

from filtershift.commands.plot import add_figure_arguments, load_inputs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="one self-contained HTML report of an analysis",
        description="Bundle every figure of DB/results/NAME, the run's parameters and a table of contents in one "
        "HTML file with BokehJS inlined (opens offline).",
    )
    add_figure_arguments(parser)
    parser.add_argument("--output", "-o", type=Path, help="report file (default DB/results/NAME/report.html)")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.figures.catalog import build_figures
    from filtershift.figures.report import write_report

    results, db, subsets = load_inputs(args)
    figures = build_figures(results, db, subsets, shared_scale=args.shared_scale)
    path = write_report(results, figures, args.output or results.path / "report.html")
    print(f"wrote {path} ({len(figures)} figures)")
    return 0
