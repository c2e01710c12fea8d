"""The three streaming reads of ``filtershift analyze`` timed side by side on one database.

Variants of every pass, all computing the same outputs with the same block arithmetic
(:mod:`filtershift.analysis.passes`):

- ``dask_processes``: a LocalCluster of W worker processes x 1 thread (what ``filtershift analyze``
  starts by default);
- ``dask_threads``: the threaded scheduler with W threads (``analyze --threads``);
- ``numpy_loop``: one process, a plain ``for`` loop over the same Zarr chunks (zarr, no dask),
  calling the block function and merging partials as it goes: the baseline the issue asks for;
- ``numpy_memory``: the filters already in RAM (loading them is timed apart), the block function
  over the whole array at once; only where it fits.

For the PCA fit also dask-ml's ``IncrementalPCA`` (on the threaded scheduler) and scikit-learn's
``PCA`` on the analysed filters in RAM, where they fit.

Peak memory is sampled every 20 ms from the outside (psutil RSS of each worker process, or of this
process for the in-process variants).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from filtershift.analysis import passes as P
from filtershift.analysis.histograms import bin_edges
from filtershift.analysis.pca import fit_incremental, pca_from_moments, prepare
from filtershift.analysis.plan import AnalysisPlan

PASSES = ("moments", "range", "histograms")
PASS_TITLES = {"moments": "read 1: moments / PCA", "range": "read 2: coefficient range", "histograms": "read 3: histograms + layer stats"}
BYTES_PER_ROW = 9 * 4 + 4  # float32 filter + int32 layer id
MiB = 2**20


class PeakRSS:
    """Peak resident memory of some processes, sampled in a background thread."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids]
        self.peaks = [0] * len(pids)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for i, proc in enumerate(self._procs):
                try:
                    self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)
                except Exception:  # a process gone; its last peak stands
                    pass
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._run_once()

    def _run_once(self) -> None:
        for i, proc in enumerate(self._procs):
            with contextlib.suppress(Exception):
                self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)


@dataclass(frozen=True)
class Inputs:
    """What the three passes need besides the data: computed once, shared by every variant."""

    plan: AnalysisPlan
    pca: object
    hist_ctx: P.HistogramContext


def prepare_inputs(db, plan: AnalysisPlan) -> Inputs:
    """PCA and coefficient range (threaded scheduler), and the histogram pass context built from
    them exactly as :func:`filtershift.analysis.compute.analyze` builds it."""
    import dask
    from threadpoolctl import threadpool_limits

    filters, lids = db.filters(), db.layer_ids()
    with dask.config.set(scheduler="threads"), threadpool_limits(1):
        pca = pca_from_moments(P.moments_pass(filters, lids, plan.fit_blocks, plan.fit_lookup, plan.scaling), plan.scaling)
        rng = P.range_pass(filters, lids, plan.blocks, plan.layer_lookup, plan.scaling, pca, plan.n_layers)
    return Inputs(plan, pca, histogram_context(plan, pca, rng))


def histogram_context(plan: AnalysisPlan, pca, rng: P.RangeResult) -> P.HistogramContext:
    edges = bin_edges(rng.cmin.min(), rng.cmax.max(), plan.n_bins)
    edges_2d = np.stack([bin_edges(rng.cmin[k], rng.cmax[k], plan.n_bins_2d) for k in range(9)])
    groupings_2d = plan.groupings_2d
    return P.HistogramContext(
        layer_lookup=plan.layer_lookup, scaling=plan.scaling, mean=pca.mean, components=pca.components,
        edges=edges, edges_2d=edges_2d, pairs=np.asarray(plan.pairs, dtype=np.intp).reshape(-1, 2),
        group_codes_2d=(np.zeros(plan.n_layers, dtype=np.int64),) + tuple(g.codes for g in groupings_2d),
        n_groups_2d=(1,) + tuple(g.n_groups for g in groupings_2d),
        max_abs=rng.max_abs, layer_mean=rng.sums / np.maximum(rng.n, 1)[:, None],
    )


# ----------------------------------------------------------------------------------------------
# The passes through dask (what `analyze` runs)

def dask_pass(name: str, db, inputs: Inputs, chunks: bool = False) -> object:
    """Pass ``name`` as ``analyze`` runs it: on the two dask arrays of the store, or (``chunks``)
    reading each chunk inside its task."""
    plan = inputs.plan
    filters, lids = (db.chunks(), None) if chunks else (db.filters(), db.layer_ids())
    if name == "moments":
        return P.moments_pass(filters, lids, plan.fit_blocks, plan.fit_lookup, plan.scaling)
    if name == "range":
        return P.range_pass(filters, lids, plan.blocks, plan.layer_lookup, plan.scaling, inputs.pca, plan.n_layers)
    return P.histogram_pass(filters, lids, plan.blocks, inputs.hist_ctx, plan.n_layers)


# ----------------------------------------------------------------------------------------------
# The plain numpy baselines


def _block_and_merge(name: str, inputs: Inputs) -> tuple[Callable, object, Callable, tuple[int, ...]]:
    plan = inputs.plan
    if name == "moments":
        return P.moments_block, P.FitContext(plan.fit_lookup, plan.scaling), P._merge_moments, plan.fit_blocks
    if name == "range":
        ctx = P.RangeContext(plan.layer_lookup, plan.scaling, inputs.pca.mean, inputs.pca.components)
        return P.range_block, ctx, P._merge_range, plan.blocks
    return P.histogram_block, inputs.hist_ctx, P._merge_histograms, plan.blocks


def numpy_loop_pass(name: str, db, inputs: Inputs) -> object:
    """One process, no dask: read each Zarr chunk, run the block arithmetic, merge into a total."""
    block_fn, ctx, merge, blocks = _block_and_merge(name, inputs)
    chunks = db.chunks()
    total = None
    for b in blocks:
        part = block_fn(*chunks.read(b), ctx)[0]
        total = part if total is None else merge(total, part)
    return total


def numpy_memory_pass(name: str, filters: np.ndarray, lids: np.ndarray, chunk_rows: int, inputs: Inputs) -> object:
    """The same loop over the same chunks with the filters already in RAM: what the arithmetic
    costs without reading the store (one call over the whole array would be slower: its
    temporaries are page-faulted and its 2-D codes span the whole database)."""
    block_fn, ctx, merge, blocks = _block_and_merge(name, inputs)
    total = None
    for b in blocks:
        lo, hi = b * chunk_rows, min((b + 1) * chunk_rows, len(filters))
        part = block_fn(filters[lo:hi], lids[lo:hi], ctx)[0]
        total = part if total is None else merge(total, part)
    return total


def load_in_memory(db) -> tuple[np.ndarray, np.ndarray]:
    return db.read_rows()


def memory_fits(n_rows: int, what: str) -> tuple[bool, str]:
    """Whether an in-memory variant fits in half the available memory (bytes per row measured
    generously: raw data + float64 working copies)."""
    import psutil

    per_row = {"numpy_memory": BYTES_PER_ROW + 8 * 8 + 8, "sklearn_pca": BYTES_PER_ROW + 5 * 72, "dask_ml_incremental": 0}[what]
    need = n_rows * per_row
    avail = psutil.virtual_memory().available
    if need > avail / 2:
        return False, f"needs ~{need / 2**30:.1f} GiB, more than half the available {avail / 2**30:.1f} GiB"
    return True, ""


def sklearn_pca(filters: np.ndarray, lids: np.ndarray, inputs: Inputs) -> object:
    from sklearn.decomposition import PCA

    plan = inputs.plan
    keep = plan.fit_lookup[lids]
    x = prepare(filters if keep.all() else filters[keep], plan.scaling)
    return PCA(n_components=9).fit(x)


def dask_ml_pca(db, inputs: Inputs) -> object:
    plan = inputs.plan
    x = P.fit_rows(db.filters(), db.layer_ids(), plan.fit_blocks, plan.fit_lookup, plan.scaling)
    return fit_incremental(x, plan.scaling, batch_size=db.chunk_rows)


# ----------------------------------------------------------------------------------------------
# Schedulers


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[tuple[object, list[int]]]:
    """A LocalCluster as ``filtershift analyze`` starts it (W processes x 1 thread); its client
    becomes the default scheduler; yields the client and the worker pids."""
    from distributed import Client, LocalCluster

    from filtershift.runtime.cluster import ClusterSettings, local_cluster_kwargs

    kwargs = local_cluster_kwargs(ClusterSettings(workers=workers, dashboard_address=":0"))
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        yield client, pids


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds so far of the processes ``pids`` (all their threads)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(Exception):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def timed(fn: Callable[[], object], pids: list[int], cpu_pids: list[int] | None = None) -> tuple[float, list[int], float, object]:
    """Wall seconds, peak RSS per pid, CPU seconds of ``cpu_pids`` (default ``pids``) and the
    result of ``fn()``. CPU seconds measure the work itself when other jobs share the cores."""
    cpu_pids = pids if cpu_pids is None else cpu_pids
    with PeakRSS(pids) as peak:
        c = cpu_seconds(cpu_pids)
        t = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t
        cpu = cpu_seconds(cpu_pids) - c
    return seconds, peak.peaks, cpu, out
