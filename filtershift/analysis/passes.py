"""The streaming reads of the filters. A full analysis reads the store at most three times:

- READ 1 — :func:`moments_pass`: count, mean and centred scatter of the fit filters (PCA).
- READ 2 — :func:`range_pass`: [min, max] of the PCA coefficients of the analysed filters (per
  component), and per layer n, column sums (its mean) and max |w| (for sparsity).
- READ 3 — :func:`histogram_pass`: per layer the 9 x n_bins coefficient counts and the layer
  statistics' sums; per group of the small groupings the 2-D histograms of component pairs.

Each pass is one ``dask.compute`` of a tree reduction: every store chunk becomes one partial
(a small object), partials of neighbouring chunks are merged (``split_every`` at a time) up to one.
Per-layer arrays in a partial cover only the layer positions the chunk touches (rows of a layer are
contiguous), so partials stay small however many layers the database holds.

Block functions take the raw float32 block and its ``layer_id`` column; what they need besides
(lookups, PCA, edges) travels in one frozen context object, shipped once per pass as a delayed value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from filtershift.analysis.histograms import bin_indices
from filtershift.analysis.pca import Moments, prepare, row_absmax, row_range
from filtershift.analysis.results import PCAResult

SPLIT_EVERY = 8
_TRIU = np.triu_indices(9)


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
            full = np.zeros((n_layers,) + a.shape[1:], dtype=a.dtype)
            full[self.lo : self.hi] = a
            out[name] = full
        return out


def _segments(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts of the runs of equal ``pos`` and each run's value (rows of a layer are contiguous)."""
    starts = np.concatenate([[0], np.flatnonzero(pos[1:] != pos[:-1]) + 1])
    return starts, pos[starts]


def _seg_sum(values: np.ndarray, starts: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    sums = np.add.reduceat(values, starts, axis=0)
    out = np.zeros((n,) + values.shape[1:], dtype=sums.dtype)
    np.add.at(out, seg, sums)
    return out


def _seg_max(values: np.ndarray, starts: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    maxima = np.maximum.reduceat(values, starts, axis=0)
    out = np.zeros((n,) + values.shape[1:], dtype=maxima.dtype)
    np.maximum.at(out, seg, maxima)
    return out


def _seg_scatter(d: np.ndarray, starts: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """Per segment ``dᵀd`` (9 x 9): BLAS per segment when few, else pairwise segment sums."""
    out = np.zeros((n, 9, 9))
    if len(starts) <= 64:
        bounds = np.append(starts, len(d))
        for k in range(len(starts)):
            block = d[bounds[k] : bounds[k + 1]]
            out[seg[k]] += block.T @ block
        return out
    for i, j in zip(*_TRIU):
        s = _seg_sum(d[:, i] * d[:, j], starts, seg, n)
        out[:, i, j] = s
        out[:, j, i] = s
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


@dataclass(frozen=True, eq=False)
class RangeResult:
    cmin: np.ndarray
    cmax: np.ndarray
    n: np.ndarray
    sums: np.ndarray
    max_abs: np.ndarray


@dataclass(frozen=True, eq=False)
class HistogramResult:
    counts: np.ndarray  # (L, 9, n_bins) int64
    n: np.ndarray
    range_sum: np.ndarray
    n_sparse: np.ndarray
    scatter: np.ndarray  # (L, 9, 9)
    hist2d: tuple[np.ndarray, ...]  # per 2-D grouping (G, P, B2, B2)


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


def _project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    return (x - mean) @ components.T


def moments_block(x: np.ndarray, lid: np.ndarray, ctx: FitContext) -> np.ndarray:
    x, _ = _select(x, lid, ctx.fit_lookup)
    return _wrap(Moments.of(prepare(x, ctx.scaling)))


def range_block(x: np.ndarray, lid: np.ndarray, ctx: RangeContext) -> np.ndarray:
    x, pos = _select(x, lid, ctx.layer_lookup)
    if len(x) == 0:
        return _wrap(None)
    raw = np.asarray(x, dtype=np.float64)
    absmax = row_absmax(raw)
    c = _project(prepare(raw, ctx.scaling, absmax), ctx.mean, ctx.components)
    lo = int(pos.min())
    starts, seg = _segments(pos)
    seg = seg - lo
    nl = int(seg.max()) + 1
    layers = LayerArrays(
        lo,
        {
            "n": _seg_sum(np.ones(len(raw), dtype=np.int64), starts, seg, nl),
            "sums": _seg_sum(raw, starts, seg, nl),
            "max_abs": _seg_max(absmax, starts, seg, nl),
        },
        {"n": "sum", "sums": "sum", "max_abs": "max"},
    )
    return _wrap((c.min(axis=0), c.max(axis=0), layers))


def histogram_block(x: np.ndarray, lid: np.ndarray, ctx: HistogramContext) -> np.ndarray:
    x, pos = _select(x, lid, ctx.layer_lookup)
    if len(x) == 0:
        return _wrap(None)
    raw = np.asarray(x, dtype=np.float64)
    absmax = row_absmax(raw)
    c = _project(prepare(raw, ctx.scaling, absmax), ctx.mean, ctx.components)
    # Clip to the range READ 2 found (a no-op unless the projection differs in the last bit).
    np.clip(c, ctx.edges[0], ctx.edges[-1], out=c)
    n_bins = len(ctx.edges) - 1
    lo = int(pos.min())
    local = pos - lo
    nl = int(local.max()) + 1
    idx = bin_indices(c, ctx.edges)
    codes = (local[:, None] * 9 + np.arange(9)) * n_bins + idx
    counts = np.bincount(codes.ravel(), minlength=nl * 9 * n_bins).reshape(nl, 9, n_bins)

    starts, seg = _segments(pos)
    seg = seg - lo
    filter_range = row_range(raw)
    sparse = absmax < 0.01 * ctx.max_abs[pos]  # all 9 |w| below the threshold <=> their max is
    d = raw - ctx.layer_mean[pos]
    layers = LayerArrays(
        lo,
        {
            "counts": counts,
            "n": _seg_sum(np.ones(len(raw), dtype=np.int64), starts, seg, nl),
            "range_sum": _seg_sum(filter_range, starts, seg, nl),
            "n_sparse": _seg_sum(sparse.astype(np.int64), starts, seg, nl),
            "scatter": _seg_scatter(d, starts, seg, nl),
        },
        {"counts": "sum", "n": "sum", "range_sum": "sum", "n_sparse": "sum", "scatter": "sum"},
    )
    hist2d = []
    if ctx.group_codes_2d:
        b2 = ctx.edges_2d.shape[1] - 1
        used = np.unique(ctx.pairs)
        idx2 = np.zeros((len(c), 9), dtype=np.intp)
        for k in used:
            idx2[:, k] = bin_indices(np.clip(c[:, k], ctx.edges_2d[k, 0], ctx.edges_2d[k, -1]), ctx.edges_2d[k])
        n_pairs = len(ctx.pairs)
        pair_codes = (np.arange(n_pairs) * b2 + idx2[:, ctx.pairs[:, 0]]) * b2 + idx2[:, ctx.pairs[:, 1]]
        for codes_of_layer, n_groups in zip(ctx.group_codes_2d, ctx.n_groups_2d):
            gc = codes_of_layer[pos]
            full = gc[:, None] * (n_pairs * b2 * b2) + pair_codes
            hist2d.append(np.bincount(full.ravel(), minlength=n_groups * n_pairs * b2 * b2).reshape(n_groups, n_pairs, b2, b2))
    return _wrap((layers, tuple(hist2d)))


# ----------------------------------------------------------------------------------------------
# Merges


def _merge_moments(a: Moments, b: Moments) -> Moments:
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
    return (a[0].merge(b[0]), tuple(x + y for x, y in zip(a[1], b[1])))


# ----------------------------------------------------------------------------------------------
# Dask wiring


def select_blocks(arr: da.Array, blocks: tuple[int, ...]) -> da.Array:
    """The store chunks ``blocks`` of ``arr`` (all of it when they are all)."""
    if tuple(blocks) == tuple(range(arr.numblocks[0])):
        return arr
    return arr.blocks[list(blocks)]


def map_reduce(filters: da.Array, layer_ids: da.Array, block_fn: Callable, ctx, merge: Callable, split_every: int = SPLIT_EVERY) -> da.Array:
    """One partial per chunk (``block_fn(x, layer_id, ctx)``), tree-merged to a (1,) object array."""
    ctx_value = dask.delayed(ctx, pure=True)
    parts = da.blockwise(
        block_fn, "i", filters, "ij", layer_ids, "i", ctx_value, None,
        dtype=object, concatenate=True, adjust_chunks={"i": 1}, meta=np.empty((0,), dtype=object),
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
        dtype=object, split_every=split_every, meta=np.empty((0,), dtype=object),
    )


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


def moments_pass(filters: da.Array, layer_ids: da.Array, blocks: tuple[int, ...], fit_lookup: np.ndarray, scaling: str) -> Moments:
    """READ 1 of the filters: the moments the exact (covariance) PCA is computed from."""
    x, lid = select_blocks(filters, blocks), select_blocks(layer_ids, blocks)
    return _compute_one(map_reduce(x, lid, moments_block, FitContext(fit_lookup, scaling), _merge_moments))


def fit_rows(filters: da.Array, layer_ids: da.Array, blocks: tuple[int, ...], fit_lookup: np.ndarray, scaling: str) -> da.Array:
    """The fit filters in analysed form (float64) as a lazy dask array with known chunks (for
    dask-ml). Counting the rows per chunk reads only the ``layer`` column."""
    x, lid = select_blocks(filters, blocks), select_blocks(layer_ids, blocks)
    keep = lid.map_blocks(lambda l: fit_lookup[l], dtype=bool)
    if bool(da.all(keep).compute()):
        return x.map_blocks(prepare, scaling, dtype=np.float64)
    counts = tuple(int(c) for c in keep.map_blocks(lambda k: np.array([k.sum()]), chunks=(1,), dtype=np.int64).compute())

    def block(xb, lb):
        return prepare(xb[fit_lookup[lb]], scaling)

    return da.blockwise(block, "ij", x, "ij", lid, "i", dtype=np.float64, adjust_chunks={"i": counts}, concatenate=True)


def range_pass(filters: da.Array, layer_ids: da.Array, blocks: tuple[int, ...], layer_lookup: np.ndarray, scaling: str, pca: PCAResult, n_layers: int) -> RangeResult:
    """READ 2 of the filters: coefficient range per component; per layer n, sums and max |w|."""
    x, lid = select_blocks(filters, blocks), select_blocks(layer_ids, blocks)
    ctx = RangeContext(layer_lookup, scaling, pca.mean, pca.components)
    cmin, cmax, layers = _compute_one(map_reduce(x, lid, range_block, ctx, _merge_range))
    dense = layers.dense(n_layers)
    return RangeResult(cmin=cmin, cmax=cmax, n=dense["n"], sums=dense["sums"], max_abs=dense["max_abs"])


def histogram_pass(filters: da.Array, layer_ids: da.Array, blocks: tuple[int, ...], ctx: HistogramContext, n_layers: int) -> HistogramResult:
    """READ 3 of the filters: per-layer coefficient counts and statistics sums; 2-D histograms."""
    x, lid = select_blocks(filters, blocks), select_blocks(layer_ids, blocks)
    layers, hist2d = _compute_one(map_reduce(x, lid, histogram_block, ctx, _merge_histograms))
    dense = layers.dense(n_layers)
    return HistogramResult(
        counts=dense["counts"], n=dense["n"], range_sum=dense["range_sum"], n_sparse=dense["n_sparse"],
        scatter=dense["scatter"], hist2d=hist2d,
    )
