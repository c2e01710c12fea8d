"""How a rerun of ``extract`` matches manifest rows to the database: by name (docs/design.md §3).

The models table holds at most one live row per name (``removed`` rows are history). A manifest
row whose name is stored

- ``ok`` from the same file (path, size and mtime unchanged) is *current*: no task;
- ``ok`` from a file with another fingerprint but the stored content hash is *touched* (or moved):
  a task, then only the recorded path, size and mtime are updated;
- ``ok`` from a file whose content differs is *changed*: refused, naming the file and
  ``--replace-changed``; with that flag the new version gets a new ``model_id`` and the old row
  becomes ``removed`` (its rows stay in the store, left out of every analysis);
- ``failed`` or ``skipped``, or not at all, is *retried*: a task, whose result replaces the old
  row under the same ``model_id`` (a failed row has no rows in the store).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from filtershift.errors import FiltershiftError
from filtershift.store import REMOVED
from filtershift.extraction.manifest import Entry
from filtershift.readers import model_files
from filtershift.readers.files import fingerprint, sha256_model

CURRENT, STAGE, CHANGED = "current", "stage", "changed"
REPLACE_FLAG = "--replace-changed"


class ChangedCheckpointError(FiltershiftError, ValueError):
    """A checkpoint's file changed under a stored name; the message names it and the flag."""


@dataclass(frozen=True)
class StoredModel:
    """What the models table records of the stored ``ok`` version of a name."""

    model_id: int
    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str


def file_fingerprint(entry: Entry) -> tuple[int, int]:
    """(size, mtime) of the checkpoint's files, or (-1, -1) when they cannot be listed."""
    try:
        return fingerprint(model_files(entry.path, entry.format))
    except (OSError, ValueError):
        return -1, -1


def stored_by_name(models: pd.DataFrame) -> dict[str, StoredModel]:
    """The ``ok`` row of each name (the last one, should a damaged table hold several)."""
    if not len(models):
        return {}
    ok = models[models["status"] == "ok"]
    return {
        row.name: StoredModel(int(row.model_id), str(row.path), int(row.size_bytes), int(row.mtime_ns), str(row.sha256))
        for row in ok.itertuples()
    }


def classify(entry: Entry, stored: StoredModel | None) -> str:
    """:data:`CURRENT`, :data:`STAGE` or :data:`CHANGED` for one manifest row (hashes the file
    only when its fingerprint differs from the stored one)."""
    if stored is None or entry.problem or not entry.path.exists():
        return STAGE
    if (str(entry.path), *file_fingerprint(entry)) == (stored.path, stored.size_bytes, stored.mtime_ns):
        return CURRENT
    try:
        sha = sha256_model(entry.path, model_files(entry.path, entry.format))
    except (OSError, ValueError):
        return STAGE  # the read task reports the problem
    return STAGE if sha == stored.sha256 else CHANGED


def refuse_changed(changed: tuple[Entry, ...], db: Path) -> None:
    """Raise :class:`ChangedCheckpointError` naming the changed files and the flag, if any."""
    if not changed:
        return
    files = "; ".join(f"{e.name}: {e.path}" for e in changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
    raise ChangedCheckpointError(
        f"{len(changed)} checkpoint(s) changed since they were extracted into {db} ({files}). Nothing was changed. "
        f"Rerun `filtershift extract` with `{REPLACE_FLAG}` to store the new versions (the old versions' rows leave every analysis), "
        "or give the new files new names in the manifest."
    )


def live_rows_by_name(models: pd.DataFrame) -> dict[str, tuple[object | None, list]]:
    """name -> (index of its ``ok`` row or None, indexes of its ``failed`` / ``skipped`` rows)."""
    out: dict[str, tuple[object | None, list]] = {}
    for index, name, status in zip(models.index, models["name"], models["status"]):
        ok_row, dead = out.get(name, (None, []))
        if status == "ok":
            ok_row = index
        elif status != REMOVED:
            dead = [*dead, index]
        out[name] = (ok_row, dead)
    return out
