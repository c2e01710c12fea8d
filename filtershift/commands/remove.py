"""``filtershift remove DB NAME...``"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "remove",
        help="drop models from a filter database",
        description="Drop the named models from DB, all or none. At once, their rows in models.parquet are marked "
        "'removed' (failed or skipped rows, which hold no filters, are deleted) and they leave every analysis "
        "and info; results computed before are then reported stale by verify. Their filter rows stay "
        "in filters.zarr: nothing compacts a database, so the space is never reclaimed in place (extract the "
        "manifest into a new --db to reclaim it). Extracting a removed name again stores it anew.",
    )
    parser.add_argument("db", type=Path, help="database folder")
    parser.add_argument("names", nargs="+", metavar="NAME", help="model names, as `filtershift info DB` lists them")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.store import remove_models

    gone = remove_models(args.db, args.names)  # a DatabaseError is printed by cli.main (exit 2)
    n_rows = int(gone.loc[gone["status"] == "ok", "n_filters"].sum())
    print(f"removed {len(gone)} model(s) from {args.db.absolute()}: {', '.join(dict.fromkeys(gone['name']))}; "
          f"their {n_rows:,} filter rows stay in filters.zarr (not reclaimed) and leave every analysis")
    return 0
