"""The store's error: a database that is missing, malformed or inconsistent."""

from __future__ import annotations

from filtershift.errors import FiltershiftError


class DatabaseError(FiltershiftError, RuntimeError):
    """A database that is missing, malformed or inconsistent; the message says how to fix it."""
