"""Reading and checking a manifest: one row per checkpoint (docs/design.md §3).

A manifest is untrusted input. Problems that make the whole file unusable (unreadable, no ``path``
column, duplicate names) raise :class:`ManifestError` naming the file and the fix; problems of a
single row (missing file, unknown format, duplicate path) become that row's ``status`` and
``error`` so the other checkpoints still run.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from filtershift.errors import FiltershiftError
from filtershift.readers import FORMATS, detect_format

META_COLUMNS = ("task", "data_type", "dataset", "family")
KNOWN_COLUMNS = ("path", "name", "format", "arch", *META_COLUMNS)


class ManifestError(FiltershiftError, ValueError):
    """The manifest as a whole cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Entry:
    """One manifest row, resolved: an absolute path, a format, metadata, and a row-level problem."""

    row: int
    name: str
    path: Path
    format: str
    arch: str
    meta: dict = field(default_factory=dict)
    problem: str = ""
    problem_status: str = "failed"  # a duplicate row is 'skipped': its checkpoint is extracted once

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path})"


def read_manifest(manifest: str | os.PathLike) -> list[Entry]:
    """Read a CSV or YAML manifest into resolved entries (paths relative to its folder)."""
    manifest = Path(manifest).absolute()
    table = _read_table(manifest)
    if "path" not in table.columns:
        raise ManifestError(f"{manifest}: no 'path' column. Add a 'path' column (relative to {manifest.parent}) with one checkpoint per row.")
    table = table.fillna("").astype(str).apply(lambda col: col.str.strip())
    entries, seen_paths, seen_names = [], {}, {}
    for row, record in enumerate(table.to_dict("records"), start=1):
        raw_path = record["path"]
        path = (manifest.parent / raw_path).resolve() if raw_path else manifest.parent
        name = record.get("name") or Path(raw_path).with_suffix("").as_posix()
        if not record.get("name") and name in seen_names:
            name = raw_path  # 'm.pt' and 'm.onnx' side by side keep their suffixes
        if name in seen_names:
            raise ManifestError(f"{manifest}: row {row} repeats the name {name!r} of row {seen_names[name]}; names must be unique.")
        seen_names[name] = row
        fmt = record.get("format", "").lower()
        problem = ""
        if not raw_path:
            problem = "empty 'path'; give the checkpoint's path relative to the manifest"
        elif path in seen_paths:
            problem = f"duplicate of row {seen_paths[path]} (same path); remove one of the rows"
        elif not (path.is_file() or path.is_dir()):
            problem = f"file not found: {path}; fix the path (relative to {manifest.parent})"
        elif fmt and fmt not in FORMATS:
            problem = f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or leave it empty to infer"
        elif not fmt:
            try:
                fmt = detect_format(path)
            except ValueError as exc:
                problem = str(exc)
        seen_paths.setdefault(path, row)
        meta = {k: v for k, v in record.items() if k not in ("path", "name", "format", "arch")}
        for column in META_COLUMNS:
            meta.setdefault(column, "")
        entries.append(Entry(row=row, name=name, path=path, format=fmt, arch=record.get("arch", ""), meta=meta, problem=problem,
                             problem_status="skipped" if problem.startswith("duplicate") else "failed"))
    return entries


def _read_table(manifest: Path) -> pd.DataFrame:
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the manifest as UTF-8.") from exc
    if manifest.suffix.lower() in (".yaml", ".yml"):
        try:
            rows = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError(f"{manifest}: invalid YAML ({exc}).") from exc
        if isinstance(rows, dict) and "checkpoints" in rows:
            rows = rows["checkpoints"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ManifestError(f"{manifest}: a YAML manifest must be a list of mappings (one per checkpoint), each with a 'path'.")
        return pd.DataFrame(rows, dtype=object)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{manifest}: not a readable CSV ({exc}); one header row with a 'path' column, then one row per checkpoint.") from exc
