"""Checks of a ``--where`` / ``--fit-on`` expression that name the likely mistake.

Pure: reads only the expression text and the column names, imports no I/O. The expression is a
pandas query (``DataFrame.eval``); pandas' own errors for the usual slips are cryptic (a single
``=`` gives "data type must provide an itemsize"), so :func:`diagnose` scans the text first and
says what is wrong and how to write it: a single ``=``, ``&&`` / ``||`` / ``!``, a quote that is
never closed, a name that is no column (with the nearest column). Text inside quotes is never
inspected, so ``name == 'a=b'`` is fine.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

# Names pandas' eval knows besides the columns: Python's operators and constants, pandas'
# DEFAULT_GLOBALS (pandas/core/computation/scope.py) and the frame's index.
_KNOWN_NAMES = frozenset({
    "and", "or", "not", "in", "is", "True", "False", "None",
    "inf", "Inf", "list", "tuple", "Timestamp", "datetime", "index",
})
# Operators written as in other languages, and what pandas spells instead.
_REPLACEMENTS = {
    "=": ("==", "a single '=' assigns; did you mean '=='?"),
    "=>": (">=", "'=>' is not an operator; did you mean '>='?"),
    "=<": ("<=", "'=<' is not an operator; did you mean '<='?"),
    "&&": ("and", "'&&' is not an operator here; use 'and'"),
    "||": ("or", "'||' is not an operator here; use 'or'"),
    "!": ("not ", "'!' alone is not an operator here; use 'not' (or '!=' to compare)"),
}
_QUOTES = "'\"`"
_OPERATOR_CHARS = "=!<>&|"


@dataclass(frozen=True)
class Token:
    """One piece of the expression: ``kind`` is name, number, string, column (backticks), op or other."""

    kind: str
    text: str
    start: int

    @property
    def stop(self) -> int:
        return self.start + len(self.text)


class UnclosedQuote(ValueError):
    """A quote opened at ``position`` is never closed."""

    def __init__(self, quote: str, position: int) -> None:
        super().__init__(f"the {quote} opened at character {position + 1} is never closed")
        self.quote = quote
        self.position = position


def tokens(expr: str) -> list[Token]:
    """Split ``expr`` into tokens; raise :class:`UnclosedQuote` for an unterminated string."""
    out: list[Token] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _QUOTES:
            stop = _closing_quote(expr, i)
            kind = "column" if ch == "`" else "string"
        elif ch.isalpha() or ch == "_":
            stop = _run_end(expr, i, lambda c: c.isalnum() or c == "_")
            kind = "name"
        elif ch.isdigit() or (ch == "." and expr[i + 1:i + 2].isdigit()):
            stop = _number_end(expr, i)
            kind = "number"
        elif ch in _OPERATOR_CHARS:
            stop = _run_end(expr, i, lambda c: c in _OPERATOR_CHARS)
            kind = "op"
        else:
            stop, kind = i + 1, "other"
        out.append(Token(kind, expr[i:stop], i))
        i = stop
    return out


def _run_end(expr: str, i: int, keep) -> int:
    while i < len(expr) and keep(expr[i]):
        i += 1
    return i


def _number_end(expr: str, i: int) -> int:
    """End of a number such as ``3``, ``0.5``, ``1e-3``."""
    i = _run_end(expr, i, lambda c: c.isalnum() or c in "._")
    while i < len(expr) and expr[i] in "+-" and expr[i - 1] in "eE":
        i = _run_end(expr, i + 1, lambda c: c.isalnum() or c in "._")
    return i


def _closing_quote(expr: str, start: int) -> int:
    """Index just past the quote that closes the one at ``start`` (backslash escapes the next char)."""
    quote, i = expr[start], start + 1
    while i < len(expr):
        if expr[i] == "\\":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise UnclosedQuote({"'": "single quote", '"': "double quote", "`": "backtick"}[quote], start)


def _split_operator(text: str) -> list[str]:
    """An operator run (``>=``, ``&&``, ``==!``) as the operators it is made of, longest first."""
    known = ("==", "!=", "<=", ">=", "=>", "=<", "&&", "||", "<", ">", "=", "!", "&", "|")
    parts, i = [], 0
    while i < len(text):
        part = next(op for op in known if text.startswith(op, i))
        parts.append(part)
        i += len(part)
    return parts


def operator_fix(expr: str, toks: list[Token]) -> tuple[str, list[str]] | None:
    """``(corrected expression, hints)`` when ``expr`` uses an operator pandas does not have."""
    pieces, hints, last = [], [], 0
    for tok in toks:
        if tok.kind != "op":
            continue
        parts = _split_operator(tok.text)
        if not any(p in _REPLACEMENTS for p in parts):
            continue
        fixed = []
        for p in parts:
            replacement, hint = _REPLACEMENTS.get(p, (p, None))
            fixed.append(replacement)
            if hint and hint not in hints:
                hints.append(hint)
        pieces += [expr[last:tok.start], "".join(fixed)]
        last = tok.stop
    if not hints:
        return None
    return "".join(pieces) + expr[last:], hints


def unknown_names(toks: list[Token], columns: Iterable[str]) -> list[str]:
    """The names in ``toks`` that are no column and nothing else pandas knows, in order of appearance.

    A name right after ``.`` is an attribute (``name.str.startswith('a')``) and one right before
    ``(`` a function (``abs(depth)``); both are left to pandas."""
    known = set(map(str, columns)) | _KNOWN_NAMES
    found: list[str] = []
    for k, tok in enumerate(toks):
        if tok.kind == "column":
            name = tok.text[1:-1]
        elif tok.kind == "name":
            after_dot = k > 0 and toks[k - 1].text == "."
            before_call = k + 1 < len(toks) and toks[k + 1].text == "("
            if after_dot or before_call:
                continue
            name = tok.text
        else:
            continue
        if name not in known and name not in found:
            found.append(name)
    return found


def suggest_column(name: str, columns: Iterable[str]) -> str | None:
    """The column whose name is nearest to ``name`` (difflib, case-insensitive), if any is close."""
    by_lower = {str(c).lower(): str(c) for c in columns}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def quoted(option: str, expr: str) -> str:
    """``option`` with ``expr`` as a user would type it in a shell."""
    plain = not any(c in expr for c in '"$`\\')
    return f'{option} "{expr}"' if plain else f"{option} {shlex.quote(expr)}"


def diagnose(expr: str, columns: Iterable[str], option: str = "--where") -> str | None:
    """What is wrong with ``expr`` and how to fix it, or None when no usual mistake is seen.

    Checked in order: an unclosed quote, an operator pandas lacks (the message gives the corrected
    expression), names that are no column (with the nearest column and the list of columns), a
    bare column name (a value, not a condition)."""
    columns = [str(c) for c in columns]
    try:
        toks = tokens(expr)
    except UnclosedQuote as exc:
        return f"{exc}; close it (text values are quoted, e.g. task == 'classification')."
    fix = operator_fix(expr, toks)
    if fix is not None:
        corrected, hints = fix
        return _sentence("; ".join(hints)) + f" Try {quoted(option, corrected)}."
    unknown = unknown_names(toks, columns)
    if unknown:
        return _unknown_message(unknown, columns)
    if len(toks) == 1 and toks[0].kind in ("name", "column"):
        return f"{expr} is a column, not a condition: compare it, e.g. {quoted(option, f'{expr} == ...')}."
    return None


def _sentence(text: str) -> str:
    return text if text.endswith(("?", ".")) else text + "."


def _unknown_message(unknown: list[str], columns: list[str]) -> str:
    parts = []
    for name in unknown:
        near = suggest_column(name, columns)
        parts.append(f"no column {name!r}" + (f" (did you mean {near!r}?)" if near else ""))
    hint = " Text values need quotes (task == 'classification')." if any(suggest_column(n, columns) is None for n in unknown) else ""
    return "; ".join(parts) + f".{hint} The columns are: {', '.join(columns)}."


def not_a_condition(expr: str, dtype: object, option: str = "--where") -> str:
    """The message for an expression that evaluates to values of ``dtype`` instead of true/false."""
    return (f"{quoted(option, expr)} must be a condition (true/false per layer), not a value (it gives {dtype}); "
            f"compare it, e.g. {quoted(option, f'{expr} > 0')}.")
