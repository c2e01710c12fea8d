"""``filtershift verify DB``"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a database's invariants",
        description="Row ranges tile the array, every layer value matches its range, counts agree between tables and "
        "arrays, each model's rows match the checksum recorded at extraction, each name has one live row, no layer "
        "belongs to no model (stale rows; rows of removed models are accounted for), and results refer to the "
        "current database. Exit 1 if any check fails, 2 if DB is not a database.",
    )
    parser.add_argument("db", type=Path, help="database folder")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.analysis.results import stale_analyses
    from filtershift.store.verify import verify

    problems = verify(args.db)  # not a database: a DatabaseError, printed by cli.main (exit 2)
    problems += stale_analyses(args.db)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{args.db}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
