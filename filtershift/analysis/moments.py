"""Per-layer PCA moments (docs/design.md §2 "PCA", §3 ``layer_moments.npz``). Pure numpy.

For every layer and both scalings (``raw``, ``scaled``) the count ``n``, the column sums
``s = Σ x`` and the centred scatter ``M2 = Σ (x − x̄)(x − x̄)ᵀ`` of its analysed rows, in float64
(``Σ x xᵀ = M2 + s sᵀ / n``; the centred form is kept because it merges without cancellation).
The rows of a layer are taken in sub-blocks of :data:`SUB_ROWS` and merged with the update of
Chan, Golub & LeVeque, and the fit set's moments are the same update over its layers, so the PCA
of any ``--where`` / ``--fit-on`` selection is a sum over layers: nothing of the filters is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from filtershift.analysis.pca import N_FEATURES, Moments

SCALINGS = ("raw", "scaled")
SUB_ROWS = 8192  # rows per Moments.of call (float64 temporaries stay in cache; see analysis/passes.py)


def _quiet() -> np.errstate:
    """NaN/Inf filters make numpy warn; they are carried and refused by the analysis, layers named."""
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")


@dataclass(frozen=True, eq=False)
class StackedMoments:
    """Moments of ``k`` row sets side by side: ``n`` (k,), ``mean`` (k, 9), ``m2`` (k, 9, 9)."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def zeros(cls, k: int, d: int = N_FEATURES) -> "StackedMoments":
        return cls(np.zeros(k, np.int64), np.zeros((k, d)), np.zeros((k, d, d)))

    @classmethod
    def of(cls, moments: list[Moments], d: int = N_FEATURES) -> "StackedMoments":
        if not moments:
            return cls.zeros(0, d)
        return cls(np.array([m.n for m in moments], np.int64), np.stack([m.mean for m in moments]), np.stack([m.m2 for m in moments]))

    def __len__(self) -> int:
        return len(self.n)

    def take(self, index) -> "StackedMoments":
        return StackedMoments(self.n[index], self.mean[index], self.m2[index])

    def merge(self, other: "StackedMoments") -> "StackedMoments":
        """Element-wise Chan update (the k-th set of ``self`` with the k-th of ``other``)."""
        with _quiet():
            return self._merge(other)

    def _merge(self, other: "StackedMoments") -> "StackedMoments":
        n = self.n + other.n
        w_other = np.divide(other.n, n, out=np.zeros(len(n)), where=n > 0)
        w_both = np.divide(self.n * other.n, n, out=np.zeros(len(n)), where=n > 0)
        delta = other.mean - self.mean
        mean = np.where((self.n == 0)[:, None], other.mean, self.mean + delta * w_other[:, None])
        m2 = self.m2 + other.m2 + np.einsum("ki,kj->kij", delta, delta) * w_both[:, None, None]
        return StackedMoments(n, mean, m2)

    def total(self) -> Moments:
        """All sets merged into one (Chan update over the sets, in order)."""
        out = Moments.empty(self.mean.shape[1] if self.mean.ndim == 2 else N_FEATURES)
        with _quiet():
            for k in range(len(self.n)):
                if self.n[k]:
                    out = out.merge(Moments(int(self.n[k]), self.mean[k], self.m2[k]))
        return out


@dataclass(frozen=True, eq=False)
class LayerMoments:
    """Per-layer moments of both scalings for the layers ``layer_id`` (k,)."""

    layer_id: np.ndarray
    raw: StackedMoments
    scaled: StackedMoments

    def __len__(self) -> int:
        return len(self.layer_id)

    def of_scaling(self, scaling: str) -> StackedMoments:
        return self.raw if scaling == "raw" else self.scaled

    def take(self, index) -> "LayerMoments":
        return LayerMoments(self.layer_id[index], self.raw.take(index), self.scaled.take(index))

    def select(self, layer_ids: np.ndarray) -> "LayerMoments":
        """The moments of ``layer_ids`` in that order (each must be present)."""
        order = np.argsort(self.layer_id, kind="stable")
        at = np.searchsorted(self.layer_id[order], layer_ids)
        at = np.minimum(at, max(len(order) - 1, 0))
        if len(layer_ids) and (len(order) == 0 or np.any(self.layer_id[order][at] != layer_ids)):
            raise KeyError("moments of some layers are missing")
        return self.take(order[at])

    def merge(self, other: "LayerMoments") -> "LayerMoments":
        """Moments of the union of layers; a layer in both is merged (pieces of one layer)."""
        ids = np.union1d(self.layer_id, other.layer_id)
        out = {}
        for scaling in SCALINGS:
            acc = StackedMoments.zeros(len(ids))
            for part in (self, other):
                at = np.searchsorted(ids, part.layer_id)
                placed = StackedMoments.zeros(len(ids))
                placed.n[at], placed.mean[at], placed.m2[at] = part.of_scaling(scaling).n, part.of_scaling(scaling).mean, part.of_scaling(scaling).m2
                acc = acc.merge(placed)
            out[scaling] = acc
        return LayerMoments(ids, out["raw"], out["scaled"])

    def fit_moments(self, layer_ids: np.ndarray, scaling: str) -> Moments:
        """The moments of the fit set made of the layers ``layer_ids`` (the PCA's input)."""
        return self.select(np.asarray(layer_ids, np.int64)).of_scaling(scaling).total()

    @classmethod
    def empty(cls) -> "LayerMoments":
        return cls(np.zeros(0, np.int64), StackedMoments.zeros(0), StackedMoments.zeros(0))


def rows_moments(x: np.ndarray) -> tuple[Moments, Moments]:
    """Moments of the rows ``x`` (raw float32) in both analysed forms: (raw, scaled)."""
    with _quiet():
        _, raw, scaled = _layer_forms_moments(x, _Scratch(min(len(x), SUB_ROWS), x.shape[1]))
    return raw, scaled


def layer_moments(filters: np.ndarray, layer_ids: np.ndarray, sizes: np.ndarray) -> LayerMoments:
    """The moments of contiguous layers: ``filters`` holds ``sizes[k]`` rows of layer
    ``layer_ids[k]`` after one another (pieces of a layer may be given; merge them afterwards)."""
    sizes = np.asarray(sizes, np.int64)
    if int(sizes.sum()) != len(filters):
        raise ValueError(f"layer sizes sum to {int(sizes.sum())} rows, the filters have {len(filters)}")
    stops = np.cumsum(sizes)
    return _ranges_moments(filters, layer_ids, stops - sizes, stops)


def block_layer_moments(x: np.ndarray, block_start: int, layer_ids: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> LayerMoments:
    """Moments of the pieces of the layers ``[starts, stops)`` (row ranges) that lie in the block
    of rows ``x`` beginning at row ``block_start``."""
    lo = np.maximum(starts, block_start) - block_start
    hi = np.minimum(stops, block_start + len(x)) - block_start
    keep = hi > lo
    return _ranges_moments(x, np.asarray(layer_ids)[keep], lo[keep], hi[keep])


def _ranges_moments(x: np.ndarray, layer_ids: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> LayerMoments:
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    k, d = len(lo), x.shape[1]
    raw, scaled = StackedMoments.zeros(k, d), StackedMoments.zeros(k, d)
    scratch = _Scratch(int(min(np.max(hi - lo, initial=0), SUB_ROWS)), d)
    with _quiet():
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            raw.n[i] = scaled.n[i] = b - a
            _, r, s = _layer_forms_moments(x[a:b], scratch)
            raw.mean[i], raw.m2[i], scaled.mean[i], scaled.m2[i] = r.mean, r.m2, s.mean, s.m2
    return LayerMoments(np.asarray(layer_ids, np.int64), raw, scaled)


# The moments of one layer's rows, both forms from one float64 conversion. The rows are taken in
# sub-blocks of SUB_ROWS (each centred on its own mean); the 2d float64 values of a sub-block are
# held column-wise, rows 0..d-1 raw and d..2d-1 scaled, in one buffer reused for every sub-block
# (0.6 MB a form: it stays in cache, and no page of a fresh temporary is faulted in). The merge is
# Chan, Golub & LeVeque's update in its k-way form: M2 = Σ_b M2_b + Σ_b n_b (x̄_b − x̄)(x̄_b − x̄)ᵀ
# (each M2_b a BLAS product of the sub-block's centred columns). benchmarks/bench_layer_moments.py
# compares it with the former loop (one Moments.of and one merge per sub-block and form).


class _Scratch:
    """Reused buffers of one layer_moments call: the centred columns of a sub-block and its
    per-row max |w|."""

    def __init__(self, rows: int, d: int):
        self.forms = np.empty((2 * d, max(rows, 1)))
        self.absmax = np.empty(max(rows, 1))
        self.ones = np.ones(max(rows, 1))
        self.lead = np.empty((d - 1, d - 1))
        self.col = np.empty(d)


def _layer_forms_moments(x: np.ndarray, sc: _Scratch) -> tuple[int, Moments, Moments]:
    """(n, raw, scaled) moments of the float32 rows ``x`` of one layer."""
    n, d = x.shape
    if n == 0:
        return 0, Moments.empty(d), Moments.empty(d)
    starts = range(0, n, SUB_ROWS)
    sums = np.empty((len(starts), 2 * d))  # each sub-block's column sums, both forms
    counts = np.empty(len(starts))
    w = np.zeros((2, d, d))  # Σ_b M2_b of each form
    for b, s in enumerate(starts):
        rows = x[s : s + SUB_ROWS]
        r = len(rows)
        f = sc.forms[:, :r]
        raw, scaled, absmax = f[:d], f[d:], sc.absmax[:r]
        np.copyto(raw, rows.T)  # exact: every float32 is a float64
        np.abs(raw, out=scaled)
        np.max(scaled, axis=0, out=absmax)
        absmax[absmax == 0] = 1.0  # all-zero rows stay zero (pca.scale_filters)
        np.divide(raw, absmax, out=scaled)
        np.matmul(f, sc.ones[:r], out=sums[b])  # BLAS column sums, as Moments.of takes them
        counts[b] = r
        f -= (sums[b] / r)[:, None]
        _add_scatter(raw, w[0], sc)
        _add_scatter(scaled, w[1], sc)
    mean = sums.sum(axis=0) / n
    dev = sums / counts[:, None] - mean  # x̄_b − x̄ of both forms
    wdev = dev * counts[:, None]
    out = []
    for k, cols in enumerate((slice(0, d), slice(d, 2 * d))):
        m2 = w[k] + wdev[:, cols].T @ dev[:, cols] if len(starts) > 1 else w[k].copy()
        out.append(Moments(n, mean[cols].copy(), m2))
    return n, out[0], out[1]


def _add_scatter(a: np.ndarray, acc: np.ndarray, sc: _Scratch) -> None:
    """``acc += a aᵀ`` for the (d, r) centred columns ``a``: the leading (d−1)² block as one GEMM
    and the last row and column as one GEMV (OpenBLAS's kernels are 8 wide: a 9 x 9 GEMM costs
    1.4x this pair)."""
    d = a.shape[0]
    np.matmul(a[: d - 1], a[: d - 1].T, out=sc.lead)
    np.matmul(a, a[d - 1], out=sc.col)
    acc[: d - 1, : d - 1] += sc.lead
    acc[d - 1, :] += sc.col
    acc[: d - 1, d - 1] += sc.col[: d - 1]


def to_layer_moments(arrays: dict[str, np.ndarray]) -> LayerMoments:
    """The store's arrays (:mod:`filtershift.store.moments`) as :class:`LayerMoments`."""
    n = np.asarray(arrays["n"], np.int64)
    return LayerMoments(
        np.asarray(arrays["layer_id"], np.int64),
        StackedMoments(n, arrays["raw_mean"], arrays["raw_m2"]),
        StackedMoments(n.copy(), arrays["scaled_mean"], arrays["scaled_m2"]),
    )


def to_arrays(moments: LayerMoments, layers: pd.DataFrame) -> dict[str, np.ndarray]:
    """:class:`LayerMoments` as the store's arrays, with each layer's row range from ``layers``."""
    table = layers.drop_duplicates("layer_id").set_index("layer_id").reindex(moments.layer_id)
    return {
        "layer_id": moments.layer_id, "start": table["start"].to_numpy(np.int64), "stop": table["stop"].to_numpy(np.int64),
        "n": moments.raw.n, "raw_mean": moments.raw.mean, "raw_m2": moments.raw.m2,
        "scaled_mean": moments.scaled.mean, "scaled_m2": moments.scaled.m2,
    }
