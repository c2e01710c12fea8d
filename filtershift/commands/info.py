"""``filtershift info DB``"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="summarise a filter database", description="Models, layers and filters per task, data type and format; store size on disk.")
    parser.add_argument("db", type=Path, help="database folder")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.store.info import summarize
    from filtershift.store import open_database

    print(summarize(open_database(args.db)))  # a DatabaseError is printed by cli.main (exit 2)
    return 0
