"""Extraction throughput: checkpoints/s with 1 and 2 workers against a plain sequential loop that
only loads the same files (torch.load / safetensors / TorchScript / onnx). Moved here from
``benchmarks/bench_extract.py`` (same checkpoints, same loop, same warm-cluster measurement).
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

FORMATS = ("torch", "safetensors", "torchscript", "onnx")
SUFFIX = {"torch": "pt", "safetensors": "safetensors", "torchscript": "ts.pt", "onnx": "onnx"}


def save_checkpoint(model, path: Path, fmt: str, input_size: int) -> None:
    """``model`` written by torch as ``fmt``: torch (a state dict), torch_fp16 (the same in
    float16), safetensors, torchscript or onnx (traced on a 3 x input_size x input_size image)."""
    import torch
    from safetensors.torch import save_file

    state = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy ONNX exporter's DeprecationWarning
        if fmt == "torch":
            torch.save(state, path)
        elif fmt == "torch_fp16":
            torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)
        elif fmt == "safetensors":
            save_file({k: v.contiguous() for k, v in state.items()}, path)
        elif fmt == "torchscript":
            torch.jit.script(model).save(str(path))
        else:
            torch.onnx.export(model, torch.randn(1, 3, input_size, input_size), str(path), dynamo=False)


def make_checkpoints(folder: Path, n_models: int) -> Path:
    """Random-init VGG-style checkpoints (8 conv layers, widths 32-80) spread over the four formats;
    reused when the manifest for ``n_models`` already exists."""
    folder = Path(folder) / f"ckpts-{n_models}"
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    import torch
    from torch import nn

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = ["path,name,format"]
    for i in range(n_models):
        torch.manual_seed(i)
        width = 32 + 16 * (i % 4)
        layers, c = [], 3
        for _ in range(8):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        model = nn.Sequential(*layers).eval()
        fmt = FORMATS[i % 4]
        path = folder / f"m{i}.{SUFFIX[fmt]}"
        save_checkpoint(model, path, fmt, input_size=16)
        rows.append(f"{path.name},m{i},{fmt}")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def plain_loop(manifest: Path) -> float:
    """Load every checkpoint in one process, touching every tensor: the floor for reading."""
    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.torch import load_file

    from filtershift.extraction.manifest import read_manifest

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


def extract_warm(manifest: Path, db: Path) -> float:
    """Extraction alone (staging + consolidation) on the current, already warm cluster."""
    from filtershift.extraction.extract import plan_extraction, run_extraction
    from filtershift.extraction.manifest import read_manifest

    shutil.rmtree(db, ignore_errors=True)
    entries = read_manifest(manifest)
    start = time.perf_counter()
    run_extraction(plan_extraction(entries, db), show_progress=False)
    return time.perf_counter() - start


def bench_extraction(work: Path, n_models: int, repeats: int, worker_counts: tuple[int, ...] = (1, 2)) -> dict:
    """Medians of ``repeats`` interleaved runs: plain loop, extract with each worker count."""
    import statistics

    from distributed import Client, LocalCluster

    from filtershift.runtime.cluster import ClusterSettings, local_cluster_kwargs
    from filtershift.store import open_database

    manifest = make_checkpoints(work, n_models)
    runs: dict[str, list[float]] = {"plain_loop": []} | {f"extract_{w}_workers": [] for w in worker_counts}
    clusters = {w: LocalCluster(**local_cluster_kwargs(ClusterSettings(workers=w, dashboard_address=":0"))) for w in worker_counts}
    clients = {w: Client(c, set_as_default=False) for w, c in clusters.items()}
    try:
        for w, client in clients.items():
            with client.as_current():
                extract_warm(manifest, work / f"extract-warm{w}")  # workers import torch & co.
        for _ in range(repeats):  # interleaved, so that machine noise hits every variant alike
            runs["plain_loop"].append(plain_loop(manifest))
            for w, client in clients.items():
                with client.as_current():
                    runs[f"extract_{w}_workers"].append(extract_warm(manifest, work / f"extract-db{w}"))
    finally:
        for client in clients.values():
            client.close()
        for cluster in clusters.values():
            cluster.close()
    db = open_database(work / f"extract-db{worker_counts[0]}")
    n_ckpt, n_kernels = int((db.models["status"] == "ok").sum()), db.n_rows
    base = statistics.median(runs["plain_loop"])
    out = {"n_checkpoints": n_ckpt, "n_kernels": n_kernels, "variants": {}}
    for name, values in runs.items():
        t = statistics.median(values)
        out["variants"][name] = {
            "seconds": t, "runs": values, "checkpoints_per_s": n_ckpt / t, "kernels_per_s": n_kernels / t,
            "ratio_vs_plain_loop": base / t,
        }
    for w in worker_counts:
        shutil.rmtree(work / f"extract-db{w}", ignore_errors=True)
        shutil.rmtree(work / f"extract-warm{w}", ignore_errors=True)
    return out
