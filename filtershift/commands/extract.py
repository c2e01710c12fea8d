"""``filtershift extract MANIFEST --db DB``"""

from __future__ import annotations

import sys
from pathlib import Path

from filtershift import store
from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract (or add to) a filter database from a manifest of checkpoints",
        description="Extract every 3x3 kernel of every regular 2-D convolution of the manifest's checkpoints "
        "into DB (one dask task per checkpoint). Manifest rows are matched to stored models by name: a rerun skips "
        "what is done, retries failed and skipped rows (replacing them) and appends new rows. A file that changed "
        "under a stored name is refused unless --replace-changed.",
    )
    parser.add_argument("manifest", type=Path, help="CSV or YAML manifest, one row per checkpoint (docs/design.md §3)")
    parser.add_argument("--db", type=Path, required=True, help="database folder (created if missing)")
    parser.add_argument("--chunk-rows", type=int, default=store.DEFAULT_CHUNK_ROWS, help="rows per Zarr chunk of a new database (default %(default)s)")
    parser.add_argument(
        "--replace-changed", action="store_true",
        help="store the new version of a checkpoint whose file changed under a stored name; the old version is marked "
        "removed and its rows leave every analysis (they stay in filters.zarr, not reclaimed)",
    )
    add_cluster_arguments(parser)
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift import api

    args.db = args.db.absolute()  # workers may run in another folder (an existing scheduler)
    try:  # a ManifestError, or a changed file without --replace-changed, is printed by cli.main (exit 2)
        report = api.extract(args.manifest, args.db, chunk_rows=args.chunk_rows, progress=not args.no_progress, log=sys.stderr,
                             replace_changed=args.replace_changed, scheduler_scope=lambda: connect(settings_from_args(args)))
    except OSError as exc:
        if not store.is_storage_error(exc):
            raise
        print(f"error: {store.storage_error_message(args.db, exc)}", file=sys.stderr)
        return 3
    counts = report.statuses["status"].value_counts().to_dict()
    print(
        f"extracted {report.n_new_models} new model(s), {report.n_new_filters:,} filters in {report.seconds:.1f} s "
        f"into {args.db} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})"
    )
    problems = report.statuses[report.statuses["status"] != "ok"]
    for row in problems.itertuples():
        print(f"  {row.status}: {row.name} ({row.path}): {row.error}")
    return 1 if report.n_failed else 0
