"""The base of every error filtershift raises for bad input or a bad environment. The command line
prints such an error's message (which names the file and the fix) without a traceback."""


class FiltershiftError(Exception):
    """An error whose message is meant for the user: what is wrong, where, and how to fix it."""
