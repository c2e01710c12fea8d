"""``filtershift info DB``"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="summarise a filter database", description="Models, layers and filters per task, data type and format; store size on disk.")
    parser.add_argument("db", type=Path, help="database folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from filtershift.info import summarize
    from filtershift.store import DatabaseError, open_database

    try:
        db = open_database(args.db)
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summarize(db))
    return 0
