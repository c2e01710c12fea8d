"""Extraction throughput: checkpoints/s and kernels/s with 1 and 2 workers, side by side with a
plain sequential Python loop that only loads the same files (torch.load / safetensors / onnx).

    python benchmarks/bench_extract.py [--models 48] [--repeats 3] [--manifest M.csv]

Without --manifest it writes a set of random-init VGG-style checkpoints (spread over torch,
safetensors, TorchScript and ONNX) under /work/bench-data/extract. Prints medians of --repeats.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path


def make_checkpoints(folder: Path, n_models: int) -> Path:
    import torch
    from safetensors.torch import save_file
    from torch import nn

    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,name,format"]
    formats = ["torch", "safetensors", "torchscript", "onnx"]
    for i in range(n_models):
        torch.manual_seed(i)
        width = 32 + 16 * (i % 4)
        layers, c = [], 3
        for _ in range(8):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        model = nn.Sequential(*layers).eval()
        fmt = formats[i % 4]
        path = folder / f"m{i}.{ {'torch': 'pt', 'safetensors': 'safetensors', 'torchscript': 'ts.pt', 'onnx': 'onnx'}[fmt] }"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "torch":
                torch.save(model.state_dict(), path)
            elif fmt == "safetensors":
                save_file(model.state_dict(), path)
            elif fmt == "torchscript":
                torch.jit.script(model).save(str(path))
            else:
                torch.onnx.export(model, torch.randn(1, 3, 16, 16), str(path), dynamo=False)
        rows.append(f"{path.name},m{i},{fmt}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def plain_loop(manifest: Path) -> float:
    """Load every checkpoint in one process, touching every tensor: the floor for reading."""
    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.torch import load_file

    from filtershift.manifest import read_manifest

    start = time.perf_counter()
    total = 0
    for entry in read_manifest(manifest):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if entry.format == "torch":
                tensors = torch.load(entry.path, weights_only=True).values()
            elif entry.format == "safetensors":
                tensors = load_file(str(entry.path)).values()
            elif entry.format == "torchscript":
                tensors = torch.jit.load(str(entry.path)).state_dict().values()
            else:
                tensors = [numpy_helper.to_array(t) for t in onnx.load(str(entry.path)).graph.initializer]
        total += sum(int(t.sum() != 0) for t in tensors)
    return time.perf_counter() - start


def extract_cold(manifest: Path, db: Path, workers: int) -> float:
    """The whole command in a fresh process: imports, cluster start, workers importing torch."""
    shutil.rmtree(db, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(db), "--workers", str(workers),
                    "--no-progress", "--dashboard-address", ":0"], check=True, capture_output=True)
    return time.perf_counter() - start


def extract_warm(manifest: Path, db: Path) -> float:
    """Extraction alone on a running cluster whose workers have already read one checkpoint."""
    from filtershift.extract import plan_extraction, run_extraction
    from filtershift.manifest import read_manifest

    shutil.rmtree(db, ignore_errors=True)
    entries = read_manifest(manifest)
    start = time.perf_counter()
    run_extraction(plan_extraction(entries, db), show_progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-data/extract"))
    args = parser.parse_args()
    manifest = args.manifest or make_checkpoints(args.work / "ckpts", args.models)
    from distributed import Client, LocalCluster

    times = {"plain loop (load only)": [], "extract, 1 worker": [], "extract, 2 workers": []}
    clusters = {w: LocalCluster(n_workers=w, threads_per_worker=1, dashboard_address=":0") for w in (1, 2)}
    clients = {w: Client(c, set_as_default=False) for w, c in clusters.items()}
    for w, client in clients.items():
        with client.as_current():
            extract_warm(manifest, args.work / f"warm{w}")  # workers import torch & co.
    for _ in range(args.repeats):  # interleaved, so that machine noise hits every variant alike
        times["plain loop (load only)"].append(plain_loop(manifest))
        for w, client in clients.items():
            with client.as_current():
                times[f"extract, {w} worker{'s' if w > 1 else ''}"].append(extract_warm(manifest, args.work / f"db{w}"))
    for client in clients.values():
        client.close()
    for cluster in clusters.values():
        cluster.close()
    cold = {w: statistics.median(extract_cold(manifest, args.work / f"cold{w}", w) for _ in range(args.repeats)) for w in (1, 2)}
    from filtershift.store import open_database

    db = open_database(args.work / "db1")
    n_models, n_kernels = int((db.models["status"] == "ok").sum()), db.n_rows
    base = statistics.median(times["plain loop (load only)"])
    print(f"{n_models} checkpoints, {n_kernels:,} kernels, medians of {args.repeats}; extraction on a warm cluster (staging + consolidation)")
    print(f"{'variant':<26}{'seconds':>9}{'ckpt/s':>9}{'kernels/s':>13}{'vs loop':>9}")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:<26}{t:>9.2f}{n_models / t:>9.1f}{n_kernels / t:>13,.0f}{base / t:>8.2f}x")
    print("whole `filtershift extract` command, cold (imports, cluster start-up, workers importing torch): "
          + ", ".join(f"{w} worker(s) {t:.1f} s" for w, t in cold.items()))


if __name__ == "__main__":
    main()
