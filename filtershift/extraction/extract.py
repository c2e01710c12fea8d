"""``extract``: manifest -> staged checkpoints (one dask task each) -> consolidated database.

Plan first (:func:`plan_extraction`: which manifest rows need a task, from the database's own
record), run the staging tasks, then :func:`consolidate` appends the new models' rows after the
existing ones — in manifest order, whatever order the tasks finished in — and commits the two
tables. The tables are the commit record (see :mod:`filtershift.store`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from filtershift import store
from filtershift.extraction.chunkplan import ChunkWrite, plan_chunk_writes
from filtershift.extraction.layermoments import record_layer_moments
from filtershift.runtime.failpoints import failpoint
from filtershift.extraction.manifest import META_COLUMNS, Entry
from filtershift.extraction.rerun import CHANGED, CURRENT, classify, file_fingerprint, live_rows_by_name, refuse_changed, stored_by_name
from filtershift.runtime.progress import compute, compute_each
from filtershift.extraction.staging import STAGING_DIR, Staged, load_staged_kernels, one_line, read_staged_layers, stage_checkpoint


@dataclass(frozen=True)
class ExtractionPlan:
    """What a run will do: the entries that need a staging task, those already in the DB, and
    those of ``to_stage`` whose file changed under a stored name (see :mod:`.rerun`)."""

    db: Path
    to_stage: tuple[Entry, ...]
    up_to_date: tuple[Entry, ...]
    changed: tuple[Entry, ...] = ()

    def describe(self) -> str:
        changed = f" ({len(self.changed)} changed since extracted)" if self.changed else ""
        return f"{len(self.to_stage)} checkpoint(s) to extract{changed}, {len(self.up_to_date)} already in {self.db}"


@dataclass(frozen=True)
class ExtractionReport:
    """The outcome of a run, one status per manifest row."""

    statuses: pd.DataFrame  # name, path, status, error
    n_new_models: int
    n_new_filters: int
    seconds: float

    @property
    def n_failed(self) -> int:
        return int((self.statuses["status"] == "failed").sum())


def plan_extraction(entries: list[Entry], db: Path) -> ExtractionPlan:
    """Match every manifest row to the database by name (:func:`.rerun.classify`): rows stored
    ``ok`` from the same file are up to date, every other row gets a staging task."""
    models, _ = store.read_tables(db)
    stored = stored_by_name(models)
    kinds = [classify(entry, stored.get(entry.name)) for entry in entries]
    return ExtractionPlan(
        db=db,
        to_stage=tuple(e for e, k in zip(entries, kinds) if k != CURRENT),
        up_to_date=tuple(e for e, k in zip(entries, kinds) if k == CURRENT),
        changed=tuple(e for e, k in zip(entries, kinds) if k == CHANGED),
    )


def task_key(entry: Entry) -> str:
    """A readable, unique dask key: ``extract-<name>-<row>`` (the dashboard groups by prefix)."""
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in entry.name)[:80]
    return f"extract-{safe}-{entry.row}"


def run_extraction(plan: ExtractionPlan, chunk_rows: int = store.DEFAULT_CHUNK_ROWS, show_progress: bool = True,
                   replace_changed: bool = False) -> ExtractionReport:
    """Stage every planned checkpoint (one task each), then consolidate into the database. Files
    changed under a stored name are refused unless ``replace_changed`` (see :mod:`.rerun`)."""
    if not replace_changed:
        refuse_changed(plan.changed, plan.db)
    with store.writer_lock(plan.db):
        return _run_locked(plan, chunk_rows, show_progress, replace_changed)


def _run_locked(plan: ExtractionPlan, chunk_rows: int, show_progress: bool, replace_changed: bool) -> ExtractionReport:
    started = time.perf_counter()
    staging_root = str(plan.db / STAGING_DIR)
    clean_staging(plan.db)
    tasks = [dask.delayed(stage_checkpoint, pure=False)(entry, staging_root, dask_key_name=task_key(entry)) for entry in plan.to_stage]
    outcomes = compute_each(tasks, label="extract", show=show_progress)
    for _, error in outcomes:
        if store.is_storage_error(error):  # the target, not the checkpoint, is at fault: stop
            raise error
    staged = [
        result if error is None else Staged(sha256="", status="failed", error=f"task failed: {type(error).__name__}: {one_line(error)}")
        for result, error in outcomes
    ]
    n_models, n_filters = consolidate(plan.db, list(plan.to_stage), staged, chunk_rows, show_progress, replace_changed)
    rows = [(e.name, str(e.path), s.status, s.error) for e, s in zip(plan.to_stage, staged)]
    return extraction_report(plan, rows, n_models, n_filters, time.perf_counter() - started)


def extraction_report(plan: ExtractionPlan, staged_rows: list[tuple], n_models: int, n_filters: int, seconds: float) -> ExtractionReport:
    """The report of a run: the rows already up to date, then ``staged_rows`` (name, path, status, error)."""
    rows = [(e.name, str(e.path), "ok", "already in the database") for e in plan.up_to_date] + staged_rows
    statuses = pd.DataFrame(rows, columns=["name", "path", "status", "error"])
    return ExtractionReport(statuses=statuses, n_new_models=n_models, n_new_filters=n_filters, seconds=seconds)


def clean_staging(db: Path) -> None:
    """Remove what interrupted runs left in ``DB/.staging``: half-written folders (hidden names)
    and folders of models already committed. Staged but uncommitted models are kept and reused."""
    root = db / STAGING_DIR
    if not root.is_dir():
        return
    models, _ = store.read_tables(db)
    committed = set(models.loc[models["status"] == "ok", "sha256"]) if len(models) else set()
    for folder in root.iterdir():
        if folder.name.startswith(".") or folder.name in committed:
            shutil.rmtree(folder, ignore_errors=True)


def consolidate(db: Path, entries: list[Entry], staged: list[Staged], chunk_rows: int, show_progress: bool = True,
                replace_changed: bool = False) -> tuple[int, int]:
    """Append the newly staged models to the database and commit the tables; returns the number
    of models and filters added. Rows are written one task per store chunk. A result replaces the
    failed or skipped row of its name; a changed file replaces the ``ok`` row only with
    ``replace_changed`` (the old row becomes ``removed``; see :mod:`.rerun`)."""
    models, layers = store.read_tables(db)
    models, layers = _drop_uncommitted(models, layers)
    start = int(layers["stop"].max()) if len(layers) else 0
    group = store.ensure_store(db, chunk_rows)
    known_sha = dict(zip(models.loc[models["status"] == "ok", "sha256"], models.loc[models["status"] == "ok", "model_id"]))
    rows_of_name = live_rows_by_name(models)
    next_model = int(models["model_id"].max()) + 1 if len(models) else 0
    next_layer = int(layers["layer_id"].max()) + 1 if len(layers) else 0
    new_models, new_layers, sources, layer_runs = [], [], [], {}
    offset = start
    for entry, result in zip(entries, staged):
        ok_row, dead_rows = rows_of_name.get(entry.name, (None, []))
        if ok_row is not None and result.status == "ok" and result.sha256 == models.at[ok_row, "sha256"]:
            models.loc[ok_row, ["path", "size_bytes", "mtime_ns"]] = [str(entry.path), *file_fingerprint(entry)]  # touched or moved
            continue
        if result.status == "ok" and result.sha256 in known_sha:
            result = Staged(sha256=result.sha256, status="skipped", error=f"same content as model {known_sha[result.sha256]}")
        if ok_row is not None and (result.status == "failed" or not replace_changed):
            if result.status != "failed":
                print(f"warning: {entry.label} changed since it was extracted as model {models.at[ok_row, 'model_id']}; "
                      "kept the stored version (pass --replace-changed to replace it)")
            continue  # an unreadable new file never replaces a stored version
        if ok_row is not None:
            model_id, next_model = next_model, next_model + 1
            known_sha.pop(models.at[ok_row, "sha256"], None)
            models.loc[ok_row, ["status", "error"]] = [store.REMOVED, f"replaced by model {model_id}: the file changed"]
        elif dead_rows:
            model_id = int(models.at[dead_rows[0], "model_id"])
        else:
            model_id, next_model = next_model, next_model + 1
        models = models.drop(index=dead_rows)
        record = _model_record(entry, result, model_id)
        if result.status == "ok":
            known_sha[result.sha256] = model_id
            frame = read_staged_layers(result.folder)
            ids = np.arange(next_layer, next_layer + len(frame), dtype=np.int32)
            stops = offset + np.cumsum(frame["n_filters"].to_numpy(np.int64))
            frame.insert(0, "layer_id", ids)
            frame.insert(1, "model_id", model_id)
            frame["start"], frame["stop"] = stops - frame["n_filters"].to_numpy(np.int64), stops
            new_layers.append(frame[store.LAYER_COLUMNS])
            sources.append((result.folder, result.n_filters))
            layer_runs[result.folder] = (ids, frame["n_filters"].to_numpy(np.int64))
            next_layer += len(frame)
            offset = int(stops[-1])
        new_models.append(record)
    _write_rows(group, db, start, sources, layer_runs, show_progress)
    layers_out = _concat([layers, *new_layers])
    models_out = _concat([models, pd.DataFrame(new_models)])
    models_out = models_out.sort_values("model_id", kind="stable").reset_index(drop=True)
    models_out = models_out.astype({c: t for c, t in store.MODEL_DTYPES.items() if c in models_out.columns})
    failpoint("consolidate:rows-written")
    store.write_table(layers_out.astype({c: t for c, t in store.LAYER_DTYPES.items()}), db / store.LAYERS_TABLE)
    failpoint("consolidate:layers-written")
    store.write_table(models_out, db / store.MODELS_TABLE)  # the commit
    failpoint("consolidate:committed")
    record_layer_moments(db, [(folder, *layer_runs[folder]) for folder, _ in sources], layers_out)
    for result in staged:
        if result.status == "ok" and result.folder:
            shutil.rmtree(result.folder, ignore_errors=True)
    return sum(1 for m in new_models if m["status"] == "ok"), offset - start


def _write_rows(group, db: Path, start: int, sources: list, layer_runs: dict, show_progress: bool) -> None:
    """Copy staged rows into the store after row ``start``: one task per store chunk."""
    store.resize_rows(group, start + sum(n for _, n in sources))
    writes = plan_chunk_writes(sources, start, int(group["filters"].chunks[0]))
    store_path = str(db / store.FILTERS_STORE)
    tasks = [
        dask.delayed(write_chunk, pure=False)(store_path, w, {p.source: layer_runs[p.source] for p in w.pieces}, dask_key_name=f"consolidate-chunk-{w.chunk}")
        for w in writes
    ]
    if tasks:
        compute(*tasks, label="consolidate", show=show_progress)


def write_chunk(store_path: str, write: ChunkWrite, layer_runs: dict) -> int:
    """Assemble one chunk's new rows from the staged files and write them (one task)."""
    n = write.stop - write.start
    filters = np.empty((n, 9), np.float32)
    layer = np.empty(n, np.int32)
    for piece in write.pieces:
        lo, hi = piece.dst_start - write.start, piece.dst_start - write.start + piece.src_stop - piece.src_start
        filters[lo:hi] = load_staged_kernels(piece.source, mmap=True)[piece.src_start:piece.src_stop]
        ids, sizes = layer_runs[piece.source]
        stops = np.cumsum(sizes)
        layer[lo:hi] = store.layer_of_rows(np.arange(piece.src_start, piece.src_stop), stops - sizes, stops, ids)
    store.write_rows(store_path, write.start, filters, layer, between=lambda: failpoint("consolidate:chunk-written"))
    return n


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate, ignoring empty frames (which would turn integer columns into floats)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _drop_uncommitted(models: pd.DataFrame, layers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return models.reset_index(drop=True), store.accounted_layers(models, layers)


def _model_record(entry: Entry, result: Staged, model_id: int) -> dict:
    size, mtime = file_fingerprint(entry)
    record = {
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
    return record
