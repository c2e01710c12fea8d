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
    from filtershift.extraction.extract import plan_extraction, run_extraction
    from filtershift.extraction.manifest import read_manifest
    from filtershift.extraction.rerun import refuse_changed

    args.db = args.db.absolute()  # workers may run in another folder (an existing scheduler)
    entries = read_manifest(args.manifest)  # a ManifestError is printed by cli.main (exit 2)
    try:
        plan = plan_extraction(entries, args.db)
        print(plan.describe(), file=sys.stderr)
        if not args.replace_changed:
            refuse_changed(plan.changed, args.db)  # before any cluster starts (exit 2, via cli.main)
        if not plan.to_stage:
            from filtershift.extraction.extract import clean_staging

            with store.writer_lock(args.db):
                clean_staging(args.db)  # leftovers of a run killed after its commit
            print(f"database {args.db} is up to date", file=sys.stderr)
            return 0
        with connect(settings_from_args(args)):
            report = run_extraction(plan, chunk_rows=args.chunk_rows, show_progress=not args.no_progress, replace_changed=args.replace_changed)
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
