"""The new rows of an extraction, decided one checkpoint at a time in manifest order. Pure pandas.

:meth:`Ledger.place` takes each read checkpoint's summary in manifest order, whatever order the
reads finished in, and decides what becomes of it: new rows appended after the existing ones
(returned as a :class:`.staging.Placement`), or none (failed, a duplicate of a stored model, an
unchanged file touched or moved, a changed file kept without ``--replace-changed``; see
:mod:`.rerun`). :meth:`Ledger.tables` then gives the two tables to commit.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd

from filtershift import store
from filtershift.extraction.manifest import META_COLUMNS, Entry
from filtershift.extraction.rerun import file_fingerprint, live_rows_by_name
from filtershift.extraction.staging import Placement, Staged


class Ledger:
    """The committed tables plus the models placed so far in this run."""

    def __init__(self, models: pd.DataFrame, layers: pd.DataFrame, replace_changed: bool = False):
        self.models = models.reset_index(drop=True)
        self.layers = store.accounted_layers(self.models, layers)
        self.replace_changed = replace_changed
        self.start = int(self.layers["stop"].max()) if len(self.layers) else 0
        self.stop = self.start
        ok = self.models["status"] == "ok"
        self.known_sha = dict(zip(self.models.loc[ok, "sha256"], self.models.loc[ok, "model_id"]))
        self.rows_of_name = live_rows_by_name(self.models)
        self.next_model = int(self.models["model_id"].max()) + 1 if len(self.models) else 0
        self.next_layer = int(self.layers["layer_id"].max()) + 1 if len(self.layers) else 0
        self.new_models: list[dict] = []
        self.new_layers: list[pd.DataFrame] = []

    def place(self, entry: Entry, result: Staged) -> tuple[Staged, Placement | None]:
        """Record ``entry``'s outcome; returns it (a duplicate becomes ``skipped``) and where its
        rows go, or None when it adds no rows. A result replaces the failed or skipped row of its
        name; a changed file replaces the ``ok`` row only with ``replace_changed``."""
        models = self.models
        ok_row, dead_rows = self.rows_of_name.get(entry.name, (None, []))
        if ok_row is not None and result.status == "ok" and result.sha256 == models.at[ok_row, "sha256"]:
            models.loc[ok_row, ["path", "size_bytes", "mtime_ns"]] = [str(entry.path), *file_fingerprint(entry)]  # touched or moved
            return replace(result, placement=None), None
        if result.status == "ok" and result.sha256 in self.known_sha:
            result = Staged(sha256=result.sha256, status="skipped", error=f"same content as model {self.known_sha[result.sha256]}")
        if ok_row is not None and (result.status == "failed" or not self.replace_changed):
            if result.status != "failed":
                print(f"warning: {entry.label} changed since it was extracted as model {models.at[ok_row, 'model_id']}; "
                      "kept the stored version (pass --replace-changed to replace it)")
            return replace(result, placement=None), None  # an unreadable new file never replaces a stored version
        if ok_row is not None:
            model_id, self.next_model = self.next_model, self.next_model + 1
            self.known_sha.pop(models.at[ok_row, "sha256"], None)
            models.loc[ok_row, ["status", "error"]] = [store.REMOVED, f"replaced by model {model_id}: the file changed"]
        elif dead_rows:
            model_id = int(models.at[dead_rows[0], "model_id"])
        else:
            model_id, self.next_model = self.next_model, self.next_model + 1
        self.models = models.drop(index=dead_rows)
        self.new_models.append(model_record(entry, result, model_id))
        if result.status != "ok":
            return replace(result, placement=None), None
        self.known_sha[result.sha256] = model_id
        placement = Placement(start=self.stop, first_layer=self.next_layer)
        frame = pd.DataFrame(result.layers)
        sizes = frame["n_filters"].to_numpy(np.int64)
        stops = self.stop + np.cumsum(sizes)
        frame.insert(0, "layer_id", np.arange(self.next_layer, self.next_layer + len(frame), dtype=np.int32))
        frame.insert(1, "model_id", model_id)
        frame["start"], frame["stop"] = stops - sizes, stops
        self.new_layers.append(frame[store.LAYER_COLUMNS])
        self.next_layer += len(frame)
        self.stop = int(stops[-1])
        return result, placement

    @property
    def n_new_models(self) -> int:
        return sum(1 for m in self.new_models if m["status"] == "ok")

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(models, layers) to commit: the stored rows updated, the new ones appended."""
        layers = _concat([self.layers, *self.new_layers]).astype(store.LAYER_DTYPES)
        models = _concat([self.models, pd.DataFrame(self.new_models)])
        models = models.sort_values("model_id", kind="stable").reset_index(drop=True)
        return models.astype({c: t for c, t in store.MODEL_DTYPES.items() if c in models.columns}), layers


def model_record(entry: Entry, result: Staged, model_id: int) -> dict:
    size, mtime = file_fingerprint(entry)
    return {
        "model_id": model_id,
        "name": entry.name,
        "path": str(entry.path),
        "format": entry.format,
        "sha256": result.sha256,
        **{c: entry.meta.get(c, "") for c in META_COLUMNS},
        **{k: v for k, v in entry.meta.items() if k not in META_COLUMNS},
        "arch": entry.arch,
        "n_layers": result.n_layers,
        "n_filters": result.n_filters,
        "n_conv": result.n_conv,
        "kernel_counts": json.dumps(result.kernel_counts, sort_keys=True),
        "rows_sha256": result.rows_sha256,
        "size_bytes": size,
        "mtime_ns": mtime,
        "status": result.status,
        "error": result.error,
    }


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate, ignoring empty frames (which would turn integer columns into floats)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
