"""``filtershift analyze DB --by task,data_type,depth_decile [--scaling scaled|raw] [--name NAME]``"""

from __future__ import annotations

import sys
from pathlib import Path

from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args


def register(subparsers) -> None:
    from filtershift.analysis.plan import DEFAULT_PCA_METHOD, N_BINS_2D, PAIR_SETS, PCA_METHODS, SCALINGS, WEIGHTINGS

    parser = subparsers.add_parser(
        "analyze",
        help="PCA of the filters, grouped coefficient histograms, shift matrices and layer statistics",
        description="Fit a PCA of the (scaled) 3x3 filters, histogram their coefficients per group, measure the "
        "distribution shift D between every pair of groups and compute per-layer statistics, streaming the "
        "store in at most three reads. Writes DB/results/NAME/ (see filtershift/analysis/results.py).",
    )
    parser.add_argument("db", type=Path, help="filter database folder")
    parser.add_argument("--by", default="task,data_type,depth_decile",
                        help="comma-separated groupings: 'model' or any layer/model column, crossed with '+' "
                        "(e.g. task,data_type,family,model,depth_decile,conv_index,task+data_type); default %(default)s")
    parser.add_argument("--scaling", choices=SCALINGS, default="scaled", help="divide each filter by its max |w| (scaled, default) or not (raw)")
    parser.add_argument("--where", metavar="EXPR", help="analyse only layers matching this pandas expression over layer and model "
                        "columns, e.g. \"data_type == 'natural'\" or \"depth_decile == 0\"")
    parser.add_argument("--fit-on", metavar="EXPR", help="fit the PCA on the layers matching EXPR instead of on the analysed ones")
    parser.add_argument("--name", help="results name (default: the scaling, e.g. 'scaled')")
    parser.add_argument("--pca", choices=PCA_METHODS, default=DEFAULT_PCA_METHOD,
                        help="exact one-pass covariance (default; measured fastest) or dask-ml IncrementalPCA")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="filters",
                        help="pool a group's filters (default, the paper's), or average its layers' / models' distributions")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="B", help="B resamples of models within groups for confidence intervals of D (default 0: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--pairs", choices=PAIR_SETS, default="consecutive", help="component pairs of the 2-D histograms: (i, i+1) or all 36")
    parser.add_argument("--bins-2d", type=int, default=N_BINS_2D, help="bins per axis of the 2-D histograms (default %(default)s)")
    parser.add_argument("--max-groups-2d", type=int, default=64, help="2-D histograms only for groupings with at most this many groups (default %(default)s)")
    parser.add_argument("--threads", action="store_true", help="run on the local threaded scheduler (no cluster, no dashboard)")
    add_cluster_arguments(parser)
    parser.set_defaults(func=execute)


def execute(args) -> int:
    import dask

    from filtershift.analysis.plan import make_plan
    from filtershift.analysis.run import analyze
    from filtershift.store import open_database

    db = open_database(args.db)
    plan = make_plan(
        db.models, db.layers, db.chunk_rows, by=[b for b in args.by.split(",") if b.strip()],
        scaling=args.scaling, pca_method=args.pca, weighting=args.weighting, where=args.where,
        fit_on=args.fit_on, bootstrap=args.bootstrap, seed=args.seed, n_bins_2d=args.bins_2d,
        pairs=args.pairs, max_groups_2d=args.max_groups_2d,
    )
    name = args.name or args.scaling
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func", "no_progress")}
    scope = dask.config.set(scheduler="threads") if args.threads else connect(settings_from_args(args), out=sys.stderr)
    with scope:
        results = analyze(db, plan, name, parameters=parameters, log=not args.no_progress)
    print(f"wrote {results.path}")
    return 0
