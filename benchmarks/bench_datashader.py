"""Datashader render time and peak memory for 1M, 10M, 100M coefficient pairs.

    python benchmarks/bench_datashader.py [--sizes 1e6,1e7,1e8] [--source memory|dask] [--repeat 3]

Each size runs in a fresh subprocess (peak RSS per size). ``memory``: a pandas frame of two float32
columns (the points already projected); ``dask``: a dask DataFrame of 1M-row partitions generated
lazily (what `points.coefficient_frame` hands over from the store, minus the disk). The time is
``point_density`` + ``hv.render`` (aggregate 300x300, shade on the log scale, bokeh model), the
median of ``--repeat`` runs; data generation is not timed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, source: str, repeat: int) -> dict:
    import dask
    import holoviews as hv
    import numpy as np

    from filtershift.figures.points import point_density

    dask.config.set(scheduler="threads")
    if source == "memory":
        import pandas as pd

        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"c1": rng.standard_normal(n, dtype=np.float32), "c2": rng.standard_normal(n, dtype=np.float32)})
    else:
        import dask.array as da
        import dask.dataframe as dd

        arr = da.random.default_rng(0).standard_normal((n, 2), chunks=(1_000_000, 2)).astype(np.float32)
        frame = dd.from_dask_array(arr, columns=["c1", "c2"])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        hv.render(point_density(frame, (0, 1), title=f"{n:,} points", x_range=(-5, 5), y_range=(-5, 5)))
        times.append(time.perf_counter() - t)
    return {"n": n, "source": source, "seconds": sorted(times)[len(times) // 2],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--source", choices=("memory", "dask"), default="memory")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one), args.source, args.repeat)))
        return
    print(f"{'points':>12} {'source':>7} {'render s':>9} {'peak RSS GB':>12}")
    for size in args.sizes.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", size, "--source", args.source, "--repeat", str(args.repeat)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>12,} {r['source']:>7} {r['seconds']:>9.2f} {r['peak_rss_gb']:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
