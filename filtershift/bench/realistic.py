"""Realistic-size extraction: ``filtershift extract`` as a whole command against a plain
single-process loop that loads each checkpoint and writes its 3x3 kernels to one file (issue 14).

The checkpoints are generated here with torch (random initialisation, seeded): VGG16-shaped
(the 13 convolutions of ``features``) and ResNet-50-shaped (bottleneck blocks, 3-4-6-3) models,
each as a bare state dict, a safetensors file, an ONNX graph, a TorchScript archive and an fp16
state dict, in turn; 40 of them hold 57,839,360 3x3 kernels in 2.8 GB. Both commands are timed
as processes (:func:`filtershift.bench.outofcore.run_measured`: wall time, CPU, peak RSS per
process), interleaved, with the page cache warm (every file is read once before the first run).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import warnings
from pathlib import Path

FORMATS = ("torch", "safetensors", "onnx", "torchscript", "torch_fp16")
SUFFIX = {"torch": ".pt", "safetensors": ".safetensors", "onnx": ".onnx", "torchscript": ".ts.pt", "torch_fp16": ".fp16.pt"}
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features():
    from torch import nn

    layers, c = [], 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers)


def resnet50():
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, c_in: int, width: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or c_in != width * 4:
                self.downsample = nn.Sequential(nn.Conv2d(c_in, width * 4, 1, stride, bias=False), nn.BatchNorm2d(width * 4))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + (x if self.downsample is None else self.downsample(x)))

    blocks, c = [], 64
    for i, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for j in range(n):
            blocks.append(Bottleneck(c, width, 2 if (j == 0 and i > 0) else 1))
            c = width * 4
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


def make_realistic(folder: Path, n_models: int = 40, log=print) -> Path:
    """``n_models`` checkpoints under ``folder/realistic-N`` and their manifest (reused when present)."""
    import torch

    from filtershift.bench.extraction import save_checkpoint

    folder = Path(folder) / f"realistic-{n_models}"
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rows = ["path,name,format,family"]
    for i in range(n_models):
        torch.manual_seed(i)
        family = ("vgg16", "resnet50")[i % 2]
        model = (vgg16_features if family == "vgg16" else resnet50)().eval()
        fmt = FORMATS[(i // 2) % len(FORMATS)]
        path = folder / f"{family}-{i}{SUFFIX[fmt]}"
        save_checkpoint(model, path, fmt, input_size=64)
        rows.append(f"{path.name},{family}-{i},{'' if fmt == 'torch_fp16' else fmt},{family}")
        log(f"wrote {path.name}")
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def plain_loop(manifest: Path, out: Path) -> int:
    """Load each checkpoint with its own library, keep the 4-D 3x3 weights, append them as float32
    rows to ``out``: what a user would write by hand. Returns the number of kernels written."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from filtershift.extraction.manifest import read_manifest

    n = 0
    with open(out, "wb") as sink:
        for entry in read_manifest(manifest):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if entry.format == "safetensors":
                    arrays = load_file(str(entry.path)).values()
                elif entry.format == "onnx":
                    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(entry.path)).graph.initializer]
                elif entry.format == "torchscript":
                    arrays = [t.numpy() for t in torch.jit.load(str(entry.path)).state_dict().values()]
                else:
                    arrays = [t.float().numpy() for t in torch.load(entry.path, weights_only=True).values()]
            for a in arrays:
                if a.ndim == 4 and a.shape[2:] == (3, 3):
                    rows = np.ascontiguousarray(a, dtype=np.float32).reshape(-1, 9)
                    sink.write(rows.tobytes())
                    n += len(rows)
    return n


def bench_realistic(work: Path, n_models: int = 40, repeats: int = 3, workers: tuple[int, ...] = (2,), log=print) -> dict:
    """Medians of ``repeats`` interleaved runs of the plain loop and of ``filtershift extract``
    (a fresh database each run; LocalCluster start-up included) with each worker count."""
    from filtershift.bench.outofcore import run_measured

    manifest = make_realistic(work, n_models, log)
    files = [p for p in manifest.parent.iterdir() if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    for p in files:  # warm the page cache: the comparison is of the commands, not of the disk
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    commands = {"plain_loop": [sys.executable, "-m", "filtershift.bench.realistic", str(manifest), str(work / "loop.f32")]}
    for w in workers:
        commands[f"extract_{w}_workers"] = [sys.executable, "-m", "filtershift", "extract", str(manifest), "--db", str(work / f"db-{w}"),
                                            "--workers", str(w), "--no-progress", "--dashboard-address", ":0"]
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for r in range(repeats):
        for name, argv in commands.items():
            for w in workers:
                shutil.rmtree(work / f"db-{w}", ignore_errors=True)
            out = run_measured(argv)
            runs[name].append(out)
            log(f"run {r + 1} {name}: {out['seconds']:.1f} s, {out['cores_busy']:.2f} cores busy")
    base = statistics.median(o["seconds"] for o in runs["plain_loop"])
    report = {"n_checkpoints": n_models, "bytes": size, "variants": {}}
    for name, outs in runs.items():
        t = statistics.median(o["seconds"] for o in outs)
        report["variants"][name] = {
            "seconds": t, "runs": [o["seconds"] for o in outs], "ratio_vs_plain_loop": base / t,
            "cores_busy": statistics.median(o["cores_busy"] for o in outs),
            "peak_rss_mib": max(max(o["peak_rss_mib_per_process"], default=0) for o in outs),
        }
    return report


if __name__ == "__main__":  # the plain loop as its own process: python -m filtershift.bench.realistic MANIFEST OUT
    print(f"{plain_loop(Path(sys.argv[1]), Path(sys.argv[2])):,} kernels")
