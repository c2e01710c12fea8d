"""``filtershift analyze DB --by task,data_type,depth_decile [--scaling scaled|raw] [--name NAME]``"""

from __future__ import annotations

import sys
from pathlib import Path

from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args


def register(subparsers) -> None:
    from filtershift.analysis import settings

    parser = subparsers.add_parser(
        "analyze",
        help="PCA of the filters, grouped coefficient histograms, shift matrices and layer statistics",
        description="Fit a PCA of the (scaled) 3x3 filters, histogram their coefficients per group, measure the "
        "distribution shift D between every pair of groups and compute per-layer statistics, streaming the "
        "store in at most three reads. Writes DB/results/NAME/ (see filtershift/analysis/results.py). Every "
        "option below is also a key of a job spec's analysis (fit_on for --fit-on).",
    )
    parser.add_argument("db", type=Path, help="filter database folder")
    settings.add_arguments(parser)
    parser.add_argument("--threads", action="store_true", help="run on the local threaded scheduler (no cluster, no dashboard)")
    add_cluster_arguments(parser)
    parser.set_defaults(func=execute)


def execute(args) -> int:
    import dask

    from filtershift import api
    from filtershift.analysis.settings import from_args

    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func", "no_progress")}

    def scope():  # entered by api.analyze once the plan is checked, so a bad option starts no cluster
        return dask.config.set(scheduler="threads") if args.threads else connect(settings_from_args(args), out=sys.stderr)

    # a DatabaseError or PlanError is printed by cli.main (exit 2)
    results = api.analyze(args.db, settings=from_args(args), parameters=parameters, progress=not args.no_progress, scheduler_scope=scope)
    print(f"wrote {results.path}")
    return 0
