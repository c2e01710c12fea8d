"""The streaming reads of the filters. A full analysis reads the store at most three times:

- READ 1 — :func:`moments_pass`: count, mean and centred scatter of the fit filters (PCA).
- READ 2 — :func:`range_pass`: [min, max] of the PCA coefficients of the analysed filters (per
  component), and per layer n, column sums (its mean) and max |w| (for sparsity).
- READ 3 — :func:`histogram_pass`: per layer the 9 x n_bins coefficient counts and the layer
  statistics' sums; per group of the small groupings the 2-D histograms of component pairs.

Each pass is one ``dask.compute`` of a tree reduction: each task reads :func:`chunks_per_task`
neighbouring store chunks (up to 8) and makes one partial (a small object) of them, and partials are merged
(``split_every`` at a time) up to one.
Per-layer arrays in a partial cover only the layer positions the chunk touches (rows of a layer are
contiguous), so partials stay small however many layers the database holds.

Block functions take the raw float32 block and its ``layer_id`` column; what they need besides
(lookups, PCA, edges) travels in one frozen context object, shipped once per pass as a delayed value.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import dask
import dask.array as da
import numpy as np

from filtershift.analysis.counting import coefficient_range, count_rows, layer_span, range_prepare, symmetrise
from filtershift.analysis.moments import LayerMoments, layer_moments
from filtershift.analysis.pca import Moments, prepare, row_absmax
from filtershift.analysis.types import PCAResult, project
from filtershift.runtime.malloc import relax_malloc

SPLIT_EVERY = 8
# Store chunks one read task takes, one after another, merging their partials as it goes (and
# reading the next chunk while it computes the current one): fewer tasks to schedule and fewer
# partials to send and merge. Warm (20M, 2 worker processes, medians of 3): 4 chunks a task against
# 1, READ 2 0.99-1.04 -> 0.84-0.91 s, READ 3 1.93-2.04 -> 1.81-1.83 s. Cold at 1.46e9 filters
# (5,588 chunks), with the in-task read-ahead, 8 against 4: READ 2 33.4, 33.8 s against 38.1 s
# (the first chunk of a task is the one read with no arithmetic beside it), whole command 183.7,
# 180.8 s against 195.2 s (docs/performance.md, "Out of core"). A store of fewer chunks keeps at
# least MIN_READ_TASKS tasks, so that small stores still spread over the workers.
MAX_CHUNKS_PER_TASK = 8
MIN_READ_TASKS = 16


def chunks_per_task(n_chunks: int) -> int:
    """Store chunks a read task takes, for a read of ``n_chunks`` chunks."""
    return max(1, min(MAX_CHUNKS_PER_TASK, n_chunks // MIN_READ_TASKS))
# Rows per sub-block inside a block function. A store chunk (262144 rows) is processed in slices of
# SUB_ROWS so that the float64 temporaries (SUB_ROWS x 9 x 8 B = 0.6 MB each) stay in cache and
# are recycled by malloc instead of being page-faulted afresh for every chunk: measured on a
# (262144, 9) block of the histogram arithmetic, 4096-8192-row slices ran 2.3-2.6x faster than
# the whole block at once, 1024 rows 1.4x slower than 8192 (per-call overhead), 16384 1.1x slower.
SUB_ROWS = 8192


def _non_finite_quiet() -> np.errstate:
    """NaN/Inf filters (a store written by hand or imported) make numpy warn in READS 1 and 2; the
    reads count them instead, and analysis/compute.py refuses them, layers named, before READ 3."""
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


# ----------------------------------------------------------------------------------------------
# Per-layer partial arrays


@dataclass(frozen=True, eq=False)
class LayerArrays:
    """Per-layer arrays for positions ``lo .. lo + len - 1``; ``ops[name]`` is "sum" or "max"."""

    lo: int
    arrays: dict[str, np.ndarray]
    ops: dict[str, str] = field(repr=False)

    @property
    def hi(self) -> int:
        return self.lo + (len(next(iter(self.arrays.values()))) if self.arrays else 0)

    def merge(self, other: "LayerArrays") -> "LayerArrays":
        if not other.arrays:
            return self
        if not self.arrays:
            return other
        lo, hi = min(self.lo, other.lo), max(self.hi, other.hi)
        out = {}
        for name, a in self.arrays.items():
            b = other.arrays[name]
            merged = np.zeros((hi - lo,) + a.shape[1:], dtype=np.result_type(a, b))
            merged[self.lo - lo : self.hi - lo] = a
            view = merged[other.lo - lo : other.hi - lo]
            if self.ops[name] == "max":
                np.maximum(view, b, out=view)
            else:
                view += b
            out[name] = merged
        return LayerArrays(lo, out, self.ops)

    def dense(self, n_layers: int) -> dict[str, np.ndarray]:
        """The arrays over all ``n_layers`` positions (zeros where no row was seen)."""
        out = {}
        for name, a in self.arrays.items():
            # Counts travel as int32 between tasks (half the bytes; a layer holds < 2**31 filters).
            full = np.zeros((n_layers,) + a.shape[1:], dtype=np.int64 if a.dtype.kind in "iu" else a.dtype)
            full[self.lo : self.hi] = a
            out[name] = full
        return out


# ----------------------------------------------------------------------------------------------
# Contexts (what a block needs besides its data)


@dataclass(frozen=True, eq=False)
class FitContext:
    fit_lookup: np.ndarray
    scaling: str


@dataclass(frozen=True, eq=False)
class RangeContext:
    layer_lookup: np.ndarray
    scaling: str
    mean: np.ndarray
    components: np.ndarray


@dataclass(frozen=True, eq=False)
class HistogramContext:
    layer_lookup: np.ndarray
    scaling: str
    mean: np.ndarray
    components: np.ndarray
    edges: np.ndarray
    edges_2d: np.ndarray  # (9, n_bins_2d + 1), per component
    pairs: np.ndarray  # (P, 2)
    group_codes_2d: tuple[np.ndarray, ...]  # per 2-D grouping: layer position -> group code
    n_groups_2d: tuple[int, ...]
    max_abs: np.ndarray  # per layer position, from READ 2
    layer_mean: np.ndarray  # per layer position (L, 9), from READ 2
    count_clipped: bool = False  # count the coefficients outside [edges[0], edges[-1]] (bins fixed beforehand)


@dataclass(frozen=True, eq=False)
class RangeResult:
    cmin: np.ndarray
    cmax: np.ndarray
    n: np.ndarray
    sums: np.ndarray
    max_abs: np.ndarray
    nonfinite: np.ndarray  # per layer, rows holding a NaN or Inf


@dataclass(frozen=True, eq=False)
class HistogramResult:
    counts: np.ndarray  # (L, 9, n_bins) int64
    n: np.ndarray
    range_sum: np.ndarray
    n_sparse: np.ndarray
    scatter: np.ndarray  # (L, 9, 9)
    hist2d: tuple[np.ndarray, ...]  # per 2-D grouping (G, P, B2, B2)
    n_clipped: np.ndarray | None = None  # (L,) coefficients put in an edge bin from outside (count_clipped)


def empty_range(n_components: int = 9) -> RangeResult:
    """What READ 2 finds when there is nothing to read."""
    zero = np.zeros(0)
    return RangeResult(np.full(n_components, np.inf), np.full(n_components, -np.inf), zero.astype(np.int64),
                       np.zeros((0, 9)), zero, zero.astype(np.int64))


def empty_histograms(ctx: HistogramContext) -> HistogramResult:
    """What READ 3 finds when there is nothing to read."""
    b2, n_bins = ctx.edges_2d.shape[1] - 1, len(ctx.edges) - 1
    hist2d = tuple(np.zeros((g, len(ctx.pairs), b2, b2), dtype=np.int64) for g in ctx.n_groups_2d)
    zero = np.zeros(0, dtype=np.int64)
    return HistogramResult(np.zeros((0, 9, n_bins), dtype=np.int64), zero, np.zeros(0), zero, np.zeros((0, 9, 9)), hist2d, zero)


# ----------------------------------------------------------------------------------------------
# Block functions


def _select(x: np.ndarray, lid: np.ndarray, lookup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos = lookup[lid]
    keep = pos >= 0 if pos.dtype != bool else pos
    if keep.all():
        return x, pos
    return x[keep], pos[keep]


def _wrap(obj) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = obj
    return out


def _relax_malloc() -> None:
    """A store chunk (9 MiB) and its temporaries come from the heap; at most 64 MiB of freed memory
    is kept per process (see :mod:`filtershift.runtime.malloc`)."""
    relax_malloc(16 * 2**20, 64 * 2**20)


def moments_block(x: np.ndarray, lid: np.ndarray, ctx: FitContext) -> np.ndarray:
    _relax_malloc()
    x, _ = _select(x, lid, ctx.fit_lookup)
    m = Moments.empty(x.shape[1])
    with _non_finite_quiet():  # NaN/Inf filters are refused after the read (analysis/compute.py)
        for s in range(0, len(x), SUB_ROWS):  # merged with Chan et al.'s update (pca.Moments.merge)
            m = m.merge(Moments.of(prepare(x[s : s + SUB_ROWS], ctx.scaling)))
    return _wrap(m)


def layer_moments_block(x: np.ndarray, lid: np.ndarray, ctx: FitContext) -> np.ndarray:
    """Per-layer moments (both scalings) of the rows of the layers ``ctx.fit_lookup`` selects;
    a layer cut by the chunk's edges gives its piece (pieces are merged by :meth:`LayerMoments.merge`)."""
    _relax_malloc()
    x, _ = _select(x, lid, ctx.fit_lookup)
    lid = lid[ctx.fit_lookup[lid]]
    if len(lid) == 0:
        return _wrap(LayerMoments.empty())
    edges = np.flatnonzero(np.diff(lid)) + 1  # rows of a layer are contiguous
    firsts = np.concatenate([[0], edges])
    sizes = np.diff(np.concatenate([firsts, [len(lid)]]))
    return _wrap(layer_moments(x, lid[firsts], sizes))


def range_block(x: np.ndarray, lid: np.ndarray, ctx: RangeContext) -> np.ndarray:
    """The coefficient range and per-layer n, sums and max |w| of one store chunk. One numba loop
    over the rows (:func:`filtershift.analysis.counting.range_prepare`) selects the analysed rows,
    takes the per-layer sums and writes each sub-block of :data:`SUB_ROWS` rows centred and scaled
    into a reused buffer; BLAS projects it (as READ 3 projects the same sub-blocks) and a second
    loop takes the range. Measured against the numpy version (numpy conversion, ``row_absmax``,
    ``prepare``, ``project`` and a numba loop over their temporaries) in
    docs/performance.md ("Out of core")."""
    _relax_malloc()
    lo, hi = layer_span(lid, ctx.layer_lookup)
    if hi < lo:
        return _wrap(None)
    nl = hi - lo + 1
    n = np.zeros(nl, dtype=np.int64)
    sums = np.zeros((nl, x.shape[1]))
    max_abs = np.zeros(nl)
    nonfinite = np.zeros(nl, dtype=np.int64)
    cmin = np.full(len(ctx.components), np.inf)
    cmax = np.full(len(ctx.components), -np.inf)
    y = np.empty((min(SUB_ROWS, len(x)), x.shape[1]))
    components_t = ctx.components.T
    scaled = ctx.scaling == "scaled"
    r = 0
    with _non_finite_quiet():  # such rows are counted here and refused after the read
        while r < len(x):
            r, m = range_prepare(x, lid, ctx.layer_lookup, lo, r, scaled, ctx.mean, y, n, sums, max_abs, nonfinite)
            if m:
                coefficient_range(y[:m] @ components_t, cmin, cmax)
    layers = LayerArrays(
        lo, {"n": n, "sums": sums, "max_abs": max_abs, "nonfinite": nonfinite},
        {"n": "sum", "sums": "sum", "max_abs": "max", "nonfinite": "sum"},
    )
    return _wrap((cmin, cmax, layers))


def histogram_block(x: np.ndarray, lid: np.ndarray, ctx: HistogramContext) -> np.ndarray:
    """Per-layer 1-D counts and statistics sums, and the 2-D histograms of every 2-D grouping, of
    one store chunk: numpy projects sub-blocks of :data:`SUB_ROWS` rows (as READ 2 does), the fused
    loop of :func:`filtershift.analysis.counting.count_rows` counts them.

    The 2-D histograms do not cost one count per grouping: each layer's tuple of group codes (one
    per grouping) is a "combination"; a row is counted once per pair into its combination's
    histogram and each grouping's histogram is the sum of its combinations' (a chunk touches a few
    combinations: the layers of one or a few models). Only when a chunk touches so many
    combinations that their dense histograms outweigh its rows (more than 64 for a full chunk) is
    each row counted once per grouping instead.
    """
    _relax_malloc()
    x, pos = _select(x, lid, ctx.layer_lookup)
    if len(x) == 0:
        return _wrap(None)
    n_rows = len(x)
    n_bins = len(ctx.edges) - 1
    lo = int(pos.min())
    nl = int(pos.max()) - lo + 1
    local = pos - lo
    counts = np.zeros((nl, 9, n_bins), dtype=np.int64)
    n = np.zeros(nl, dtype=np.int64)
    range_sum = np.zeros(nl)
    n_sparse = np.zeros(nl, dtype=np.int64)
    scatter = np.zeros((nl, 9, 9))
    n_clipped = np.zeros(nl, dtype=np.int64)
    max_abs = np.ascontiguousarray(ctx.max_abs[lo : lo + nl])
    layer_mean = np.ascontiguousarray(ctx.layer_mean[lo : lo + nl])

    groupings = len(ctx.group_codes_2d)
    n_pairs = len(ctx.pairs)
    b2 = ctx.edges_2d.shape[1] - 1
    cells = n_pairs * b2 * b2
    used = np.unique(ctx.pairs).astype(np.intp)
    col = {int(k): i for i, k in enumerate(used)}
    pair_i = np.array([col[int(a)] for a in ctx.pairs[:, 0]], dtype=np.intp)
    pair_j = np.array([col[int(b)] for b in ctx.pairs[:, 1]], dtype=np.intp)
    edges_2d = np.ascontiguousarray(ctx.edges_2d[used])
    if groupings:
        layer_groups = np.stack([g[lo : lo + nl] for g in ctx.group_codes_2d], axis=1)
        combos, combo_of_layer = np.unique(layer_groups, axis=0, return_inverse=True)
        by_combination = len(combos) * cells <= n_rows * n_pairs
        if by_combination:
            targets = combo_of_layer.reshape(nl, 1).astype(np.intp)
            n_hist = len(combos)
        else:
            offsets = np.cumsum((0,) + ctx.n_groups_2d[:-1])
            targets = (layer_groups + offsets).astype(np.intp)
            n_hist = int(sum(ctx.n_groups_2d))
    else:
        by_combination = False
        used = used[:0]
        targets = np.zeros((nl, 0), dtype=np.intp)
        n_hist = 0
    hist2d = np.zeros((n_hist, n_pairs, b2, b2), dtype=np.int64)

    for s in range(0, n_rows, SUB_ROWS):
        raw = np.asarray(x[s : s + SUB_ROWS], dtype=np.float64)
        absmax = row_absmax(raw)
        c = project(prepare(raw, ctx.scaling, absmax), ctx.mean, ctx.components)
        count_rows(raw, c, local[s : s + SUB_ROWS], absmax, ctx.edges, max_abs, layer_mean, used, edges_2d,
                   pair_i, pair_j, targets, counts, n, range_sum, n_sparse, scatter, hist2d)
        if ctx.count_clipped:  # count_rows puts them in the edge bins
            outside = ((c < ctx.edges[0]) | (c > ctx.edges[-1])).sum(axis=1)
            n_clipped += np.bincount(local[s : s + SUB_ROWS], weights=outside, minlength=nl).astype(np.int64)

    layers = LayerArrays(
        lo,
        {"counts": counts.astype(np.int32), "n": n, "range_sum": range_sum, "n_sparse": n_sparse, "scatter": symmetrise(scatter),
         "n_clipped": n_clipped},
        {"counts": "sum", "n": "sum", "range_sum": "sum", "n_sparse": "sum", "scatter": "sum", "n_clipped": "sum"},
    )
    out = []
    for g, n_groups in enumerate(ctx.n_groups_2d):
        if by_combination:
            h = np.zeros((n_groups,) + hist2d.shape[1:], dtype=np.int64)
            for k, group in enumerate(combos[:, g]):
                h[group] += hist2d[k]
        else:
            h = hist2d[offsets[g] : offsets[g] + n_groups]
        # int32 between tasks (a chunk has < 2**31 rows); merges sum in int64.
        out.append(h.astype(np.int32))
    return _wrap((layers, tuple(out)))


# ----------------------------------------------------------------------------------------------
# Merges


def _merge_moments(a: Moments, b: Moments) -> Moments:
    return a.merge(b)


def _merge_layer_moments(a: LayerMoments, b: LayerMoments) -> LayerMoments:
    return a.merge(b)


def _merge_range(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (np.minimum(a[0], b[0]), np.maximum(a[1], b[1]), a[2].merge(b[2]))


def _merge_histograms(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (a[0].merge(b[0]), tuple(np.add(x, y, dtype=np.int64) for x, y in zip(a[1], b[1])))


# ----------------------------------------------------------------------------------------------
# Dask wiring


def select_blocks(arr: da.Array, blocks: tuple[int, ...]) -> da.Array:
    """The store chunks ``blocks`` of ``arr`` (all of it when they are all)."""
    if tuple(blocks) == tuple(range(arr.numblocks[0])):
        return arr
    return arr.blocks[list(blocks)]


class ChunkSource(Protocol):
    """Store chunks read inside the task that uses them: ``read(b)`` returns chunk ``b`` as
    (filters (n, 9) float32, layer_id (n,) int32). Small and picklable (a path, not the data).

    Why: given two dask arrays from ``from_zarr``, every chunk's partial depends on two separate
    read tasks; the distributed scheduler places those reads independently and ships chunks
    between worker processes. Measured on a (20M, 9) store, 2 worker processes, READ 1: 2.4-4.2 s
    and 2.9-3.3 worker CPU-s with the two read tasks, 1.5-1.8 s and 2.4 CPU-s reading inside the
    task (a plain single-process loop: 2.0 s).
    """

    def read(self, block: int) -> tuple[np.ndarray, np.ndarray]: ...


def map_reduce(filters: da.Array | ChunkSource, layer_ids: da.Array | None, block_fn: Callable, ctx, merge: Callable,
               split_every: int = SPLIT_EVERY, blocks: tuple[int, ...] | None = None, label: str = "") -> da.Array:
    """One partial per chunk (``block_fn(x, layer_id, ctx)``), tree-merged to a (1,) object array.
    ``filters`` is a dask array (with ``layer_ids``) or a :class:`ChunkSource` (then ``blocks``
    names the chunks to read)."""
    ctx_value = dask.delayed(ctx, pure=True)
    if isinstance(filters, da.Array):
        parts = da.blockwise(
            block_fn, "i", filters, "ij", layer_ids, "i", ctx_value, None,
            dtype=object, concatenate=True, adjust_chunks={"i": 1}, meta=np.empty((0,), dtype=object),
        )
    else:
        index = da.from_array(np.asarray(blocks, dtype=np.int64), chunks=chunks_per_task(len(blocks)))
        source = dask.delayed(filters, pure=True)
        # readable task names in the dashboard's task stream: <label>-<token> ("pca-moments-…")
        token = dask.base.tokenize(index, source, block_fn, ctx_value)
        parts = da.map_blocks(
            _read_and_run, index, source, block_fn, ctx_value, merge, chunks=((1,) * index.numblocks[0],),
            dtype=object, meta=np.empty((0,), dtype=object), name=f"{label or block_fn.__name__}-{token}",
        )

    def combine(xs, axis=None, keepdims=None):
        items = _items(xs)
        out = items[0]
        for item in items[1:]:
            out = merge(out, item)
        return _wrap(out)

    def chunk(x, axis=None, keepdims=None):
        return x

    return da.reduction(
        parts, chunk, combine, combine=combine, axis=0, keepdims=True, concatenate=False,
        dtype=object, split_every=split_every, meta=np.empty((0,), dtype=object), name=f"{label}-merge" if label else None,
    )


def _read_and_run(index: np.ndarray, source: ChunkSource, block_fn: Callable, ctx, merge: Callable) -> np.ndarray:
    """The merged partial of the store chunks ``index``, in order. While one chunk's arithmetic
    runs, a second thread of this task reads the next chunk (the read waits on the disk and
    releases the GIL; the block functions' numba loops and BLAS release it too), so a cold read
    costs the disk's time or the arithmetic's, not both; one chunk more is held in memory."""
    blocks = index.tolist()
    out = None
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reader:
        pending = None
        for i, block in enumerate(blocks):
            x, lid = source.read(int(block)) if pending is None else pending.result()
            pending = reader.submit(source.read, int(blocks[i + 1])) if i + 1 < len(blocks) else None
            part = block_fn(x, lid, ctx)[0]
            out = part if out is None else out if part is None else merge(out, part)
    return _wrap(out)


def _inputs(filters, layer_ids, blocks):
    """The pass inputs restricted to ``blocks``: (dask array, dask array) or (source, None)."""
    if isinstance(filters, da.Array):
        return select_blocks(filters, blocks), select_blocks(layer_ids, blocks)
    return filters, None


def _items(xs) -> list:
    """The partial objects inside what ``da.reduction`` hands a combine (arrays, nested lists)."""
    if isinstance(xs, np.ndarray):
        return list(xs.ravel())
    out = []
    for x in xs:
        out.extend(_items(x))
    return out


def _compute_one(reduced: da.Array):
    (value,) = dask.compute(reduced)
    return value[0]


def moments_pass(filters: da.Array | ChunkSource, layer_ids: da.Array | None, blocks: tuple[int, ...], fit_lookup: np.ndarray, scaling: str) -> Moments:
    """READ 1 of the filters: the moments the exact (covariance) PCA is computed from."""
    x, lid = _inputs(filters, layer_ids, blocks)
    return _compute_one(map_reduce(x, lid, moments_block, FitContext(fit_lookup, scaling), _merge_moments, blocks=blocks, label="pca-moments"))


def layer_moments_pass(filters: ChunkSource, blocks: tuple[int, ...], wanted: np.ndarray) -> LayerMoments:
    """The one read that fills missing stored moments: per layer selected by ``wanted``
    (``wanted[layer_id]``), both scalings (see :mod:`filtershift.analysis.moments`)."""
    if not blocks:
        return LayerMoments.empty()
    return _compute_one(map_reduce(filters, None, layer_moments_block, FitContext(wanted, "raw"), _merge_layer_moments,
                                   blocks=blocks, label="pca-moments"))  # READ 1's dashboard name


def block_counts(starts: np.ndarray, stops: np.ndarray, blocks: tuple[int, ...], chunk_rows: int) -> tuple[int, ...]:
    """Rows of the layers ``[starts, stops)`` in each store chunk of ``blocks`` (from the table)."""
    lo = np.asarray(blocks, np.int64)[:, None] * chunk_rows
    overlap = np.minimum(stops[None, :], lo + chunk_rows) - np.maximum(starts[None, :], lo)
    return tuple(int(v) for v in np.clip(overlap, 0, None).sum(axis=1))


def fit_rows(source: ChunkSource, blocks: tuple[int, ...], counts: tuple[int, ...], fit_lookup: np.ndarray, scaling: str) -> da.Array:
    """The fit filters in analysed form (float64) as a lazy dask array with known chunks (for
    dask-ml): chunk ``blocks[k]`` contributes its ``counts[k]`` fit rows (:func:`block_counts`)."""
    index = da.from_array(np.asarray(blocks, dtype=np.int64), chunks=1)
    token = dask.base.tokenize(index, source, fit_lookup, scaling)

    def block(i: np.ndarray) -> np.ndarray:
        x, lid = source.read(int(i[0]))
        return prepare(x[fit_lookup[lid]], scaling)

    return da.map_blocks(block, index, dtype=np.float64, chunks=(counts, (9,)), new_axis=1, name=f"fit-rows-{token}")


def range_pass(filters: da.Array | ChunkSource, layer_ids: da.Array | None, blocks: tuple[int, ...], layer_lookup: np.ndarray, scaling: str, pca: PCAResult, n_layers: int) -> RangeResult:
    """READ 2 of the filters: coefficient range per component; per layer n, sums and max |w|."""
    x, lid = _inputs(filters, layer_ids, blocks)
    ctx = RangeContext(layer_lookup, scaling, pca.mean, pca.components)
    cmin, cmax, layers = _compute_one(map_reduce(x, lid, range_block, ctx, _merge_range, blocks=blocks, label="coefficient-range"))
    dense = layers.dense(n_layers)
    return RangeResult(cmin=cmin, cmax=cmax, n=dense["n"], sums=dense["sums"], max_abs=dense["max_abs"], nonfinite=dense["nonfinite"])


def histogram_pass(filters: da.Array | ChunkSource, layer_ids: da.Array | None, blocks: tuple[int, ...], ctx: HistogramContext, n_layers: int) -> HistogramResult:
    """READ 3 of the filters: per-layer coefficient counts and statistics sums; 2-D histograms."""
    x, lid = _inputs(filters, layer_ids, blocks)
    layers, hist2d = _compute_one(map_reduce(x, lid, histogram_block, ctx, _merge_histograms, blocks=blocks, label="histograms"))
    hist2d = tuple(np.asarray(h, dtype=np.int64) for h in hist2d)
    dense = layers.dense(n_layers)
    return HistogramResult(
        counts=dense["counts"], n=dense["n"], range_sum=dense["range_sum"], n_sparse=dense["n_sparse"],
        scatter=dense["scatter"], hist2d=hist2d, n_clipped=dense["n_clipped"],
    )
