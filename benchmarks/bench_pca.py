"""PCA methods side by side on the same store: exact one-pass covariance vs dask-ml IncrementalPCA.

    .venv/bin/python benchmarks/bench_pca.py [--rows 20000000] [--repeats 3] [--data /work/bench-data/analysis]

Builds (once) the synthetic conv-like filter database of ``--rows`` filters under ``--data`` (the one
``filtershift bench`` uses, :func:`filtershift.bench.synthetic.ensure_database`) and fits
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

from filtershift.bench.synthetic import ensure_database

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
    db, _ = ensure_database(args.data, args.rows)
    db_path = db.path
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
