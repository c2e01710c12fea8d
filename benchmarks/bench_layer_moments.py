"""``layer_moments`` (the per-layer PCA moments extraction stores) against the former loop.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_layer_moments.py [--rows 8000000] [--repeats 5]

Rows: random normal weights x 0.05 (float32) in VGG16's thirteen 3x3 layer sizes (out x in:
64x3, 64x64, 128x64, ...), repeated until ``--rows``. The former implementation (one
``Moments.of`` and one Chan merge per sub-block of SUB_ROWS rows, per form) is kept below as
``before``; both run on one BLAS thread, interleaved, and the medians of ``--repeats`` runs are
printed with their ratio and the largest relative difference of the results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from filtershift.analysis.moments import SUB_ROWS, LayerMoments, StackedMoments, layer_moments
from filtershift.analysis.pca import Moments, prepare

VGG16 = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
         (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def before(filters: np.ndarray, layer_ids: np.ndarray, sizes: np.ndarray) -> LayerMoments:
    """The implementation this benchmark replaced (filtershift b7b47ea)."""
    out = {"raw": [], "scaled": []}
    stops = np.cumsum(sizes)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for a, b in zip((stops - sizes).tolist(), stops.tolist()):
            raw, scaled = Moments.empty(filters.shape[1]), Moments.empty(filters.shape[1])
            for s in range(a, b, SUB_ROWS):
                block = prepare(filters[s : min(s + SUB_ROWS, b)], "raw")
                raw = raw.merge(Moments.of(block))
                scaled = scaled.merge(Moments.of(prepare(block, "scaled")))
            out["raw"].append(raw)
            out["scaled"].append(scaled)
    return LayerMoments(np.asarray(layer_ids, np.int64), StackedMoments.of(out["raw"]), StackedMoments.of(out["scaled"]))


def vgg_sizes(rows: int) -> np.ndarray:
    one = [o * i for o, i in VGG16]
    sizes = []
    while sum(sizes) < rows:
        sizes += one
    return np.array(sizes, np.int64)


def rel_diff(a: LayerMoments, b: LayerMoments) -> float:
    worst = 0.0
    for s in ("raw", "scaled"):
        x, y = a.of_scaling(s), b.of_scaling(s)
        for u, v in ((x.mean, y.mean), (x.m2, y.m2)):
            scale = np.abs(v).reshape(len(v), -1).max(axis=1)[:, None]
            worst = max(worst, float(np.max(np.abs(u - v).reshape(len(v), -1) / scale)))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sizes = vgg_sizes(args.rows)
    x = (np.random.default_rng(0).standard_normal((int(sizes.sum()), 9)) * 0.05).astype(np.float32)
    ids = np.arange(len(sizes))
    times = {"before": [], "after": []}
    with threadpool_limits(1):
        for _ in range(args.repeats):
            for name, fn in (("before", before), ("after", layer_moments)):
                t0 = time.perf_counter()
                result = fn(x, ids, sizes)
                times[name].append(time.perf_counter() - t0)
                if name == "before":
                    old = result
                else:
                    new = result
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"{len(x):,} rows in {len(sizes)} layers (VGG16 sizes), one BLAS thread, medians of {args.repeats}")
    print(f"before {b:.3f} s  after {a:.3f} s  ratio {b / a:.2f}x")
    print(f"largest difference, relative to each layer's largest |entry|: {rel_diff(new, old):.2e}")


if __name__ == "__main__":
    main()
