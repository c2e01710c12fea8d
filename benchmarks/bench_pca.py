"""PCA methods side by side on the same store: exact one-pass covariance vs dask-ml IncrementalPCA.

    .venv/bin/python benchmarks/bench_pca.py [--rows 20000000] [--repeats 3] [--data /work/bench-data/analysis]

Builds (once) a synthetic conv-like filter database of ``--rows`` filters under ``--data`` and fits
the PCA (READ 1 of ``filtershift analyze``) with each method on the threaded scheduler, in a fresh
subprocess per run so that peak RSS (``ru_maxrss``) is the run's own. Prints medians of time and
peak memory, and the largest differences of the components and explained-variance ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

LAYER_SIZES = (64 * 3, 64 * 64, 128 * 128, 256 * 256, 512 * 512)


def synthetic_tables(n_rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models of 8-40 conv layers with realistic sizes, until ``n_rows`` filters (last layer trimmed)."""
    rng = np.random.default_rng(seed)
    models, layers = [], []
    row = layer_id = model_id = 0
    while row < n_rows:
        n_conv = int(rng.integers(8, 40))
        for ci in range(n_conv):
            n = int(LAYER_SIZES[min(ci * len(LAYER_SIZES) // n_conv + int(rng.integers(0, 2)), len(LAYER_SIZES) - 1)])
            n = min(n, n_rows - row)
            if n <= 0:
                break
            r = ci / (n_conv - 1)
            layers.append((layer_id, model_id, f"conv{ci}", ci, n_conv, r, max(int(np.ceil(round(10 * r, 9))) - 1, 0), 1, 1, 1, row, row + n, n))
            row += n
            layer_id += 1
        models.append(dict(model_id=model_id, name=f"model{model_id}", path="", format="synthetic", sha256="",
                           task=["classification", "segmentation", "gan", "detection"][model_id % 4],
                           data_type=["natural", "medical", "seismic"][model_id % 3], dataset=f"set{model_id % 5}",
                           family=["resnet", "vgg", "unet", "mobilenet"][(model_id // 3) % 4],
                           n_layers=n_conv, n_filters=0, status="ok", error=""))
        model_id += 1
    cols = ["layer_id", "model_id", "name", "conv_index", "n_conv", "depth", "depth_decile", "in_channels", "out_channels", "groups", "start", "stop", "n_filters"]
    layer_df = pd.DataFrame(layers, columns=cols).astype({"layer_id": "int32", "model_id": "int32", "depth_decile": "int8"})
    return pd.DataFrame(models), layer_df


def _block(rows: np.ndarray, starts: np.ndarray, seed: int) -> np.ndarray:
    """Conv-like filters for the given rows: a few dominant directions, a per-layer scale and bias."""
    mix = np.random.default_rng(12345).normal(size=(9, 9)) * np.linspace(1.5, 0.1, 9)[:, None]
    layer = np.searchsorted(starts, rows, side="right") - 1
    rng = np.random.default_rng([seed, int(rows[0])])
    scale = np.random.default_rng(layer[0]).uniform(0.01, 0.5, size=layer[-1] - layer[0] + 1)[layer - layer[0]]
    x = rng.standard_normal(size=(len(rows), 9), dtype=np.float32) @ mix.astype(np.float32)
    return (x * scale[:, None].astype(np.float32)).astype(np.float32)


def make_store(path: Path, n_rows: int, seed: int = 0):
    """Open the synthetic database at ``path``, writing it first if absent."""
    import dask
    import dask.array as da

    from filtershift.store import DEFAULT_CHUNK_ROWS, open_database, write_database

    if (path / "layers.parquet").exists():
        return open_database(path)
    models, layers = synthetic_tables(n_rows, seed)
    starts = layers["start"].to_numpy(np.int64)
    rows = da.arange(n_rows, chunks=DEFAULT_CHUNK_ROWS, dtype=np.int64)
    filters = da.map_blocks(_block, rows, starts, seed, new_axis=1, chunks=(rows.chunks[0], (9,)), dtype=np.float32)
    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        db = write_database(path, filters, models, layers)
    print(f"wrote {path}: {n_rows:,} filters, {len(layers):,} layers, {len(models)} models, {n_rows * 36 / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s", flush=True)
    return db


def _one_run(db_path: str, method: str) -> None:
    """Child process: fit once, print a JSON line with seconds, peak RSS and the PCA."""
    import dask

    from filtershift.analysis.passes import fit_rows, moments_pass
    from filtershift.analysis.pca import fit_incremental, pca_from_moments
    from filtershift.analysis.plan import make_plan
    from filtershift.store import open_database

    db = open_database(db_path)
    plan = make_plan(db.models, db.layers, db.chunk_rows, pca=method)
    from threadpoolctl import threadpool_limits

    with dask.config.set(scheduler="threads"), threadpool_limits(1):  # as filtershift analyze runs it
        t = time.perf_counter()
        if method == "covariance":
            pca = pca_from_moments(moments_pass(db.filters(), db.layer_ids(), plan.fit_blocks, plan.fit_lookup, "scaled"), "scaled")
        else:
            x = fit_rows(db.filters(), db.layer_ids(), plan.fit_blocks, plan.fit_lookup, "scaled")
            pca = fit_incremental(x, "scaled", batch_size=db.chunk_rows)
        seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"seconds": seconds, "peak_gb": rss, "components": pca.components.tolist(), "ratio": pca.explained_variance_ratio.tolist()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path("/work/bench-data/analysis"))
    ap.add_argument("--methods", default="covariance,incremental")
    args = ap.parse_args()
    db_path = args.data / f"pca-{args.rows}"
    make_store(db_path, args.rows)
    runs: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", str(db_path), method], check=True, capture_output=True, text=True)
            runs.setdefault(method, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"PCA of {args.rows:,} filters (float32, {args.rows * 36 / 1e9:.2f} GB), threaded scheduler, medians of {args.repeats}:")
    for method, rs in runs.items():
        print(f"  {method:12s} {statistics.median(r['seconds'] for r in rs):7.2f} s   peak RSS {statistics.median(r['peak_gb'] for r in rs):5.2f} GB"
              "   (times " + ", ".join(f"{r['seconds']:.2f}" for r in rs) + ")")
    if len(runs) == 2:
        a, b = (runs[m][0] for m in runs)
        print(f"  max |components difference| {np.abs(np.subtract(a['components'], b['components'])).max():.2e}; "
              f"max |ratio difference| {np.abs(np.subtract(a['ratio'], b['ratio'])).max():.2e}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _one_run(sys.argv[2], sys.argv[3])
    else:
        main()
