"""Import throughput of ``filtershift import-cnnfilterdb`` on a synthetic CNN-Filter-DB file.

Writes a file in the published layout (``/filters`` (N, 3, 3) float64 like v1.0, ``/meta`` via
``DataFrame.to_hdf``; layers of ~68k filters, the v1.0 average of 1,464,797,156 / 21,436) outside the
repository, then runs the import command in a subprocess and samples the resident memory of its whole
process tree (the command, and the LocalCluster's workers when there are any). The file is evicted
from the page cache before each cold run (``posix_fadvise(DONTNEED)``), because the 98 GiB v1.0 file
will not be cached on a 24 GiB machine. Prints filters/s, peak RSS and the estimated time for v1.0.

    .venv/bin/python benchmarks/bench_import.py --rows 20000000 --dir /work/bench-data

The data folder is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

FULL_V1 = 1_464_797_156
V1_LAYER_MEAN = FULL_V1 // 21_436


def write_synthetic(path: Path, n_rows: int, dtype: str, seed: int = 0, block: int = 2_000_000) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n_rows:
        sizes.append(int(rng.integers(V1_LAYER_MEAN // 4, V1_LAYER_MEAN * 7 // 4)))
    sizes[-1] -= sum(sizes) - n_rows
    sizes = [s for s in sizes if s > 0]
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("filters", shape=(n_rows, 3, 3), dtype=dtype)
        for a in range(0, n_rows, block):
            b = min(n_rows, a + block)
            ds[a:b] = rng.standard_normal((b - a, 3, 3), dtype=np.float32) * 0.05
    rows, start, layer_in_model, model_id, n_conv = [], 0, 0, 0, 40
    for n in sizes:
        if layer_in_model == n_conv:
            model_id, layer_in_model = model_id + 1, 0
        rows.append({
            "model_id": model_id, "conv_depth": layer_in_model, "conv_depth_norm": layer_in_model / (n_conv - 1),
            "layer_id": layer_in_model, "filter_ids": f"{start}:{start + n - 1}", "model": f"model_{model_id}",
            "Name": f"net{model_id % 7}", "Task": ["Classification", "Semantic Segmentation"][model_id % 2],
            "Visual Category": "natural", "Training-Dataset": "ImageNet1k", "Network": "ResNet", "depth": 120,
            "producer": "pytorch 1.8", "op_set": 9, "(3, 3) filters": 0, "total_filters": 0,
        })
        start += n
        layer_in_model += 1
    meta = pd.DataFrame(rows).set_index(["model_id", "conv_depth", "conv_depth_norm", "layer_id"])
    for col in meta.columns:
        if pd.api.types.is_string_dtype(meta[col].dtype):
            meta[col] = meta[col].astype(object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta.to_hdf(path, key="meta", mode="a")


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_import(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (bytes), stdout + stderr tail."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    out_lines = []
    import threading

    def drain():
        for line in proc.stdout:
            out_lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed:\n{''.join(out_lines[-30:])}")
    return wall, peak, "".join(out_lines[-3:])


THREADED = """
import sys, dask
from filtershift.cnnfilterdb import import_file
r = import_file(sys.argv[1], sys.argv[2], scheduler="threads")
print(f"imported {r.n_rows} rows")
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/work/bench-data"))
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--modes", default="threads,local", help="comma list of: threads (library, threaded scheduler), local (the command, LocalCluster)")
    parser.add_argument("--warm", action="store_true", help="also run once with the file in the page cache")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    src = args.dir / f"cnnfilterdb_{args.rows}_{args.dtype}.h5"
    python = sys.executable
    try:
        if not src.exists():
            t0 = time.perf_counter()
            write_synthetic(src, args.rows, args.dtype)
            print(f"wrote {src} ({src.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
        results = []
        for mode in args.modes.split(","):
            for cache in (["cold", "warm"] if args.warm else ["cold"]):
                db = args.dir / f"db_{mode}_{cache}"
                shutil.rmtree(db, ignore_errors=True)
                if cache == "cold":
                    evict(src)
                else:
                    src.read_bytes() if src.stat().st_size < 8 * 2**30 else None
                if mode == "threads":
                    cmd = [python, "-c", THREADED, str(src), str(db)]
                else:
                    cmd = [python, "-m", "filtershift", "import-cnnfilterdb", str(src), "--db", str(db), "--no-progress",
                           "--dashboard-address", ":0"]
                wall, peak, tail = run_import(cmd)
                rate = args.rows / wall
                results.append((mode, cache, wall, rate, peak))
                print(f"{mode:8s} {cache}: {wall:7.1f} s  {rate / 1e6:6.2f} M filters/s  "
                      f"{rate * 9 * np.dtype(args.dtype).itemsize / 2**20:7.0f} MiB/s read  peak RSS {peak / 2**30:.2f} GiB  "
                      f"-> v1.0 ({FULL_V1:,} filters) ~ {FULL_V1 / rate / 60:.0f} min", flush=True)
                shutil.rmtree(db, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
