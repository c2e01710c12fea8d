"""``extract``: manifest -> each checkpoint read once and its rows written once -> committed database.

Plan first (:func:`plan_extraction`: which manifest rows need work, from the database's own
record). Then every checkpoint is read by one task, placed after the existing rows in manifest
order — whatever order the reads finished in — and written by a second task on the same worker
(:mod:`.driver`, :mod:`.staging`); :func:`consolidate` writes the chunks neighbours share and
commits the two tables. The tables are the commit record (see :mod:`filtershift.store`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd

from filtershift import store
from filtershift.extraction.chunkplan import ChunkWrite, edge_pieces, plan_edge_writes
from filtershift.extraction.driver import read_and_write
from filtershift.extraction.layermoments import record_layer_moments
from filtershift.extraction.ledger import Ledger
from filtershift.extraction.manifest import Entry
from filtershift.extraction.rerun import CHANGED, CURRENT, classify, refuse_changed, stored_by_name
from filtershift.extraction.staging import STAGING_DIR, Staged, WriteTarget, load_edges
from filtershift.runtime.failpoints import failpoint
from filtershift.runtime.progress import compute


@dataclass(frozen=True)
class ExtractionPlan:
    """What a run will do: the entries that need reading, those already in the DB, and
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
    ``ok`` from the same file are up to date, every other row is read."""
    models, _ = store.read_tables(db)
    stored = stored_by_name(models)
    kinds = [classify(entry, stored.get(entry.name)) for entry in entries]
    return ExtractionPlan(
        db=db,
        to_stage=tuple(e for e, k in zip(entries, kinds) if k != CURRENT),
        up_to_date=tuple(e for e, k in zip(entries, kinds) if k == CURRENT),
        changed=tuple(e for e, k in zip(entries, kinds) if k == CHANGED),
    )


def run_extraction(plan: ExtractionPlan, chunk_rows: int = store.DEFAULT_CHUNK_ROWS, show_progress: bool = True,
                   replace_changed: bool = False) -> ExtractionReport:
    """Read and write every planned checkpoint, then consolidate the shared chunks and commit.
    Files changed under a stored name are refused unless ``replace_changed`` (see :mod:`.rerun`)."""
    if not replace_changed:
        refuse_changed(plan.changed, plan.db)
    with store.writer_lock(plan.db):
        return _run_locked(plan, chunk_rows, show_progress, replace_changed)


def _run_locked(plan: ExtractionPlan, chunk_rows: int, show_progress: bool, replace_changed: bool) -> ExtractionReport:
    started = time.perf_counter()
    clean_staging(plan.db)
    ledger = Ledger(*store.read_tables(plan.db), replace_changed=replace_changed)
    group = store.ensure_store(plan.db, chunk_rows)
    grow = lambda n_rows: store.grow_rows(group, n_rows)  # noqa: E731
    target = WriteTarget(str(plan.db / store.FILTERS_STORE), int(group["filters"].chunks[0]), str(plan.db / STAGING_DIR))
    staged = read_and_write(list(plan.to_stage), ledger, grow, target, show_progress)
    n_filters = consolidate(plan.db, group, ledger, staged, show_progress)
    rows = [(e.name, str(e.path), s.status, s.error) for e, s in zip(plan.to_stage, staged)]
    return extraction_report(plan, rows, ledger.n_new_models, n_filters, time.perf_counter() - started)


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


def consolidate(db: Path, group, ledger: Ledger, staged: list[Staged], show_progress: bool = True) -> int:
    """Write the chunks the new checkpoints share (one task each, from their staged edges), size
    the store to the rows placed and commit the tables; returns the number of filters added."""
    written = [s for s in staged if s.status == "ok" and s.placement is not None]
    chunk_rows = int(group["filters"].chunks[0])
    pieces = [p for s in written for p in edge_pieces(s.folder, s.placement.start, s.placement.start + s.n_filters, chunk_rows)]
    store.resize_rows(group, ledger.stop)  # drops rows an interrupted run placed beyond
    store_path = str(db / store.FILTERS_STORE)
    tasks = [dask.delayed(write_chunk, pure=False)(store_path, w, dask_key_name=f"consolidate-chunk-{w.chunk}")
             for w in plan_edge_writes(pieces, chunk_rows)]
    if tasks:
        compute(*tasks, label="consolidate", show=show_progress)
    failpoint("consolidate:rows-written")
    models_out, layers_out = ledger.tables()
    store.write_table(layers_out, db / store.LAYERS_TABLE)
    failpoint("consolidate:layers-written")
    store.write_table(models_out, db / store.MODELS_TABLE)  # the commit
    failpoint("consolidate:committed")
    record_layer_moments(db, [(s.folder, s.placement.first_layer, s.n_layers) for s in written], layers_out)
    for result in written:
        shutil.rmtree(result.folder, ignore_errors=True)
    return ledger.stop - ledger.start


def write_chunk(store_path: str, write: ChunkWrite) -> int:
    """Assemble one shared chunk's new rows from the staged edges and write them (one task)."""
    n = write.stop - write.start
    filters = np.empty((n, 9), np.float32)
    layer = np.empty(n, np.int32)
    for piece in write.pieces:
        edges = load_edges(piece.source)
        lo = piece.dst_start - write.start
        filters[lo:lo + piece.n] = edges[f"{piece.which}_filters"]
        layer[lo:lo + piece.n] = edges[f"{piece.which}_layer"]
    store.write_rows(store_path, write.start, filters, layer, between=lambda: failpoint("consolidate:chunk-written"))
    return n
