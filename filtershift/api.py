"""The public Python API: open a database, extract into it, analyse it (docs/api.md).

These functions are what ``filtershift extract`` and ``filtershift analyze`` call too, so a notebook
and the command line compute the same results by the same code.

Where the work runs: on the current ``distributed.Client`` when there is one (a client the caller
opened; it is used, never started, closed or changed), else on a scheduler set with
``dask.config.set(scheduler=...)``, else on dask's threaded scheduler. The command line decides
differently: it starts a ``LocalCluster`` unless given ``--scheduler``, ``--cluster slurm`` or
``--threads``, and passes that choice in as ``scheduler_scope``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the heavy imports wait for the first call (``import filtershift`` stays light)
    import dask.array as da
    import pandas as pd

    from filtershift.analysis.results import Results
    from filtershift.analysis.settings import AnalysisSettings
    from filtershift.extraction.extract import ExtractionReport
    from filtershift.store import Database

PathLike = str | os.PathLike
ScopeFactory = Callable[[], AbstractContextManager]

__all__ = ["FilterDatabase", "analyze", "current_client", "extract", "open", "synthetic_database"]


@dataclass(frozen=True)
class FilterDatabase:
    """An opened filter database (``DB/``): the tables in memory, the filters lazily.

    Attributes
    ----------
    store : filtershift.store.Database
        The storage-level handle the analysis reads through.

    Examples
    --------
    >>> db = filtershift.open(path)                        # doctest: +SKIP
    >>> db.models[["name", "task"]], db.filters.shape      # doctest: +SKIP
    """

    store: Database

    @property
    def path(self) -> Path:
        """The database folder (absolute)."""
        return self.store.path

    @property
    def models(self) -> pd.DataFrame:
        """One row per checkpoint (``model_id``, ``name``, ``task``, ``data_type``, ...; docs/design.md §3)."""
        return self.store.models

    @property
    def layers(self) -> pd.DataFrame:
        """One row per stored 3x3 layer of an ``ok`` model (``layer_id``, ``model_id``, ``start``, ``stop``, ...)."""
        return self.store.layers

    @property
    def filters(self) -> da.Array:
        """The ``(N, 9)`` float32 filters (each 3x3 kernel row-major) as a lazy dask array, one task per store chunk."""
        return self.store.filters()

    @property
    def layer_ids(self) -> da.Array:
        """The ``(N,)`` int32 ``layer_id`` of every row of :attr:`filters`, chunked alike."""
        return self.store.layer_ids()

    @property
    def n_filters(self) -> int:
        """How many filters (rows) the database holds."""
        return self.store.n_rows

    def analyses(self) -> list[str]:
        """The names of the complete analyses under ``DB/results``, sorted."""
        from filtershift.analysis.results import complete_analyses

        return complete_analyses(self.path)

    def results(self, name: str = "scaled") -> Results:
        """The analysis ``DB/results/NAME``; raises :class:`filtershift.analysis.results.ResultsError`
        (naming the command that makes it) when it is missing or incomplete."""
        from filtershift.analysis.results import load_results

        return load_results(self.path, name)

    def __repr__(self) -> str:
        return f"FilterDatabase({str(self.path)!r}: {len(self.models)} models, {len(self.layers)} layers, {self.n_filters:,} filters)"


def open(path: PathLike) -> FilterDatabase:  # noqa: A001 - filtershift.open, like xarray.open_dataset
    """Open the filter database at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        A database folder written by :func:`extract` (or ``filtershift extract``).

    Returns
    -------
    FilterDatabase

    Raises
    ------
    filtershift.store.DatabaseError
        When ``path`` is not a database or is damaged; the message names the missing piece.
    """
    from filtershift.store import open_database

    return FilterDatabase(open_database(path))


def _as_store(db: PathLike | FilterDatabase) -> Database:
    return db.store if isinstance(db, FilterDatabase) else open(db).store


def current_client():
    """The current ``distributed.Client``, or ``None``; never starts one (and, when distributed was
    never imported, cannot have one and does not import it)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:  # no client
        return None


def default_scope() -> AbstractContextManager:
    """Where the API computes unless told otherwise: the current client, else a scheduler set in
    dask's configuration, else the threaded scheduler (entered only for the computation)."""
    import dask

    if current_client() is not None or dask.config.get("scheduler", None) is not None:
        return contextlib.nullcontext()
    return dask.config.set(scheduler="threads")


def _settings(settings: AnalysisSettings | None, changes: dict[str, Any]) -> AnalysisSettings:
    from filtershift.analysis.settings import AnalysisSettings

    known = {f.name for f in fields(AnalysisSettings)}
    if unknown := sorted(set(changes) - known):
        raise TypeError(f"analyze() got unknown setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(known))}")
    return replace(settings or AnalysisSettings(), **{k: v for k, v in changes.items() if v is not None})


def analyze(
    db: PathLike | FilterDatabase,
    by: str | Sequence[str] | None = None,
    *,
    scaling: str | None = None,
    where: str | None = None,
    fit_on: str | None = None,
    name: str | None = None,
    settings: AnalysisSettings | None = None,
    progress: bool | TextIO = False,
    parameters: dict[str, Any] | None = None,
    scheduler_scope: ScopeFactory | None = None,
    **options: Any,
) -> Results:
    """Analyse the database: the PCA of its filters, coefficient histograms and the shift D between
    the groups of every grouping, and per-layer statistics (docs/design.md §2), written to
    ``DB/results/NAME/``.

    Parameters
    ----------
    db : str, os.PathLike or FilterDatabase
        The database (a folder, or what :func:`open` returned).
    by : str or sequence of str, optional
        Groupings, e.g. ``"task,data_type"`` or ``["task", "depth_decile", "task+data_type"]``
        (default ``task, data_type, depth_decile``).
    scaling : {"scaled", "raw"}, optional
        Divide each filter by its max ``|w|`` (default) or not.
    where : str, optional
        Analyse only the layers matching this pandas expression over layer and model columns.
    fit_on : str, optional
        Fit the PCA on the layers matching this expression instead of on the analysed ones.
    name : str, optional
        The results folder ``DB/results/NAME`` (default: the scaling).
    settings : filtershift.analysis.settings.AnalysisSettings, optional
        A complete set of options; the keyword arguments given here (not ``None``) replace its fields.
    progress : bool or file, optional
        Report the reads on stderr (``True``) or on the given stream; default quiet.
    parameters : dict, optional
        What to record as the run's parameters in ``provenance.json`` (default: the settings).
    scheduler_scope : callable, optional
        Returns a context manager that makes a scheduler current; entered after the plan is checked
        and left after the computation (the command line passes its cluster here). Default: the
        current client, else the configured scheduler, else threads.
    **options
        Any other field of ``AnalysisSettings``: ``pca``, ``weighting``, ``bootstrap``, ``seed``,
        ``pairs``, ``bins_2d``, ``max_groups_2d``, ``basis`` (the results whose PCA and bins to reuse).

    Returns
    -------
    filtershift.analysis.results.Results

    Raises
    ------
    filtershift.analysis.plan.PlanError
        Before any filter is read, for settings the database cannot satisfy (an unknown column, an
        empty selection); the message names the option.
    filtershift.analysis.results.ResultsError
        When another analysis under the same name is running.
    """
    from filtershift.analysis.compute import analyze as compute_analysis
    from filtershift.analysis.compute import on_basis
    from filtershift.analysis.plan import make_plan

    chosen = _settings(settings, dict(options, by=by, scaling=scaling, where=where, fit_on=fit_on, name=name))
    store = _as_store(db)
    plan = make_plan(store.models, store.layers, store.chunk_rows, chosen)
    if plan.basis:  # checked before any scheduler starts
        plan = on_basis(store, plan, chosen.results_name)
    recorded = parameters if parameters is not None else chosen.as_dict()
    with (scheduler_scope or default_scope)():
        return compute_analysis(store, plan, chosen.results_name, parameters=recorded, log=progress)


def extract(
    manifest: PathLike,
    db: PathLike,
    *,
    chunk_rows: int | None = None,
    progress: bool = False,
    log: TextIO | None = None,
    replace_changed: bool = False,
    scheduler_scope: ScopeFactory | None = None,
) -> ExtractionReport:
    """Extract every 3x3 kernel of every regular 2-D convolution of the manifest's checkpoints into
    the database ``db`` (created if missing; a rerun adds only what is new or changed).

    Parameters
    ----------
    manifest : str or os.PathLike
        A CSV or YAML manifest, one row per checkpoint (docs/design.md §3).
    db : str or os.PathLike
        The database folder.
    chunk_rows : int, optional
        Rows per Zarr chunk of a new database (default 262,144).
    progress : bool, optional
        Progress bars (on a terminal) or one line per stage on stderr; default quiet.
    log : file, optional
        Where to say what the run will do (the plan) and when the database is up to date.
    replace_changed : bool, optional
        Store the new version of a checkpoint whose file changed under a stored name (the old
        version is marked removed); by default such a file is refused before anything runs.
    scheduler_scope : callable, optional
        As for :func:`analyze`; entered only when there is something to extract.

    Returns
    -------
    filtershift.extraction.extract.ExtractionReport
        ``statuses`` (one row per manifest row: name, path, status, error), ``n_new_models``,
        ``n_new_filters``, ``seconds``, ``n_failed``.

    Raises
    ------
    filtershift.extraction.manifest.ManifestError
        When the manifest cannot be read; a bad row becomes that row's status instead.
    filtershift.errors.FiltershiftError
        When a file changed under a stored name and ``replace_changed`` is false.
    """
    import time

    from filtershift import store
    from filtershift.extraction.extract import clean_staging, extraction_report, plan_extraction, run_extraction
    from filtershift.extraction.manifest import read_manifest
    from filtershift.extraction.rerun import refuse_changed

    db = Path(db).absolute()  # workers may run in another folder (an existing scheduler)
    started = time.perf_counter()
    plan = plan_extraction(read_manifest(Path(manifest)), db)
    say = (lambda msg: print(msg, file=log, flush=True)) if log else (lambda msg: None)
    say(plan.describe())
    if not replace_changed:
        refuse_changed(plan.changed, db)  # before any cluster starts
    if plan.to_stage:
        with (scheduler_scope or default_scope)():
            return run_extraction(plan, chunk_rows=chunk_rows or store.DEFAULT_CHUNK_ROWS, show_progress=progress,
                                  replace_changed=replace_changed)
    with store.writer_lock(db):
        clean_staging(db)  # leftovers of a run killed after its commit
    say(f"database {db} is up to date")
    return extraction_report(plan, [], 0, 0, time.perf_counter() - started)


def synthetic_database(path: PathLike, filters_per_layer: int = 1024, seed: int = 0, chunk_rows: int = 16_384) -> FilterDatabase:
    """Write a small synthetic database to ``path`` (a new folder) and open it: 8 models of several
    tasks, data types and families, 6 layers each, whose filters follow three known phenotypes
    (:mod:`filtershift.figures.synthetic`) — for trying the API without checkpoints.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write it (must not hold a database yet).
    filters_per_layer : int, optional
        Filters of the even layers (the odd ones get twice as many).
    seed : int, optional
        The random seed: the same seed writes the same filters.
    chunk_rows : int, optional
        Rows per Zarr chunk.

    Returns
    -------
    FilterDatabase
    """
    from filtershift.figures.synthetic import write_synthetic_database

    with default_scope():
        return FilterDatabase(write_synthetic_database(path, seed=seed, filters_per_layer=filters_per_layer, chunk_rows=chunk_rows))
