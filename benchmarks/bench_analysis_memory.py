"""Bounded memory: a whole analysis of a store of several GB on a LocalCluster whose workers have a
2 GiB memory limit must finish without spilling and without restarting a worker.

    .venv/bin/python benchmarks/bench_analysis_memory.py [--rows 110000000] [--data /work/bench-data/analysis]

Builds (once) a synthetic database (``bench_pca.make_store``), starts 2 workers x 1 thread at 2 GiB,
runs ``filtershift.analysis.compute.analyze`` with five groupings, samples every worker's RSS every
0.25 s, and prints the peak worker RSS, the bytes spilled, whether any worker was replaced, and the
time of each read.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from bench_pca import make_store


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _spilled(dask_worker) -> int:
    data = dask_worker.data
    total = getattr(data, "spilled_total", None)
    if total is not None:
        return int(getattr(total, "disk", 0) or 0)
    return len(getattr(data, "slow", {}) or {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=110_000_000)
    ap.add_argument("--data", type=Path, default=Path("/work/bench-data/analysis"))
    ap.add_argument("--memory-limit", default="2GiB")
    ap.add_argument("--by", default="task,data_type,family,depth_decile,model")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from filtershift.analysis.plan import make_plan
    from filtershift.analysis.compute import analyze

    db = make_store(args.data / f"mem-{args.rows}", args.rows)
    size_gb = db.n_rows * 36 / 1e9
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=args.memory_limit, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        pids_before = client.run(os.getpid)
        peaks: dict[str, int] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    for addr, rss in client.run(_rss).items():
                        peaks[addr] = max(peaks.get(addr, 0), rss)
                except Exception:  # a worker going away shows up in the pid check below
                    pass
                stop.wait(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        plan = make_plan(db.models, db.layers, db.chunk_rows, by=args.by.split(","))
        t = time.perf_counter()
        res = analyze(db, plan, "memory-bench")
        seconds = time.perf_counter() - t
        stop.set()
        sampler.join()
        pids_after = client.run(os.getpid)
        spilled = client.run(_spilled)
    print(f"analysis of {db.n_rows:,} filters ({size_gb:.2f} GB float32, {len(db.layers):,} layers, {len(db.models)} models), "
          f"LocalCluster 2 workers x 1 thread, memory_limit {args.memory_limit}:")
    print(f"  total {seconds:.1f} s; reads: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.provenance["timing"].items()))
    print(f"  peak worker RSS: " + ", ".join(f"{v / 2**30:.2f} GiB" for v in peaks.values()))
    print(f"  spilled: {spilled}; workers replaced: {pids_before != pids_after} ({len(pids_after)} alive)")


if __name__ == "__main__":
    main()
