"""The ``filtershift`` command line. Each subcommand lives in ``filtershift/commands/<name>.py``
and exposes ``register(subparsers)``; this module only assembles them."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import filtershift.commands
from filtershift import __version__
from filtershift.errors import FiltershiftError


def command_modules() -> list[str]:
    """Every module of ``filtershift.commands``, alphabetically (``--help`` lists them so)."""
    return sorted(m.name for m in pkgutil.iter_modules(filtershift.commands.__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filtershift",
        description="Extract the 3x3 convolution filters of many CNN checkpoints into one database and "
        "measure how their distributions shift between tasks, data types, architectures and depths.",
    )
    parser.add_argument("--version", action="version", version=f"filtershift {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(f"filtershift.commands.{name}").register(subparsers)
    for command in subparsers.choices.values():  # one flag for every command, so scripts can pass it to all
        if "--no-progress" not in command._option_string_actions:
            command.add_argument("--no-progress", action="store_true", help="accepted by every command; this one draws no progress")
    return parser


class _DropAllExit(logging.Filter):
    """After Ctrl-C, distributed leaves the interrupted gather's coroutines behind; they end in
    ``AllExit``, which asyncio logs as "Task exception was never retrieved" with a traceback, at a
    moment that depends on garbage collection. Nothing is lost: drop exactly those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "AllExit" and "AllExit" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    if not any(isinstance(f, _DropAllExit) for f in logging.getLogger("asyncio").filters):
        logging.getLogger("asyncio").addFilter(_DropAllExit())
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FiltershiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
