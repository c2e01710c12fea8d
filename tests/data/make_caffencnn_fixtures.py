"""Writes tests/data/ncnn/: small PyTorch CNNs converted to NCNN ``.param`` + ``.bin`` by pnnx,
with the source weights beside them. Run by hand in a venv with ``pnnx ncnn torch==2.13.0``:

    /work/venv-ncnn/bin/python tests/data/make_caffencnn_fixtures.py

``<model>.npz`` holds each Conv2d's weight exactly as PyTorch reports it, (out, in/groups, kh, kw),
keyed by module name; ``<model>.fp16.*`` is the same net stored as fp16 (pnnx's default), the plain
files as fp32 (``fp16=0``). Caffe fixtures need no script: no Caffe installs here, so
tests/test_reader_caffe.py encodes them from caffe.proto's field numbers itself.
"""

from __future__ import annotations

import shutil
import sys
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).parent / "ncnn"


class Mixed(nn.Module):
    """Regular, 1x1, 5x5, depthwise, grouped and transposed convs, BatchNorm, Linear, a branch."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.wide = nn.Conv2d(16, 8, 5, padding=2)
        self.side = nn.Conv2d(16, 8, 3, padding=1)  # parallel to `wide`
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.head = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.bn(torch.relu(self.stem(x)))  # BN after the ReLU: pnnx cannot fold it into the conv
        x = self.grouped(self.pw(self.dw(x)))
        x = torch.cat([self.wide(x), self.side(x)], 1)
        x = self.head(self.up(x))
        return self.fc(x.mean((2, 3)))


def convert(model: nn.Module, name: str, fp16: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        traced = torch.jit.trace(model, torch.randn(1, 3, 16, 16))
        pt = Path(tmp) / f"{name}.pt"
        traced.save(str(pt))
        subprocess.run([str(Path(sys.executable).parent / "pnnx"), str(pt), "inputshape=[1,3,16,16]", f"fp16={int(fp16)}"], cwd=tmp, check=True, capture_output=True)
        stem = name + (".fp16" if fp16 else "")
        shutil.copy(Path(tmp) / f"{name}.ncnn.param", OUT / f"{stem}.param")
        shutil.copy(Path(tmp) / f"{name}.ncnn.bin", OUT / f"{stem}.bin")
    weights = {n: m.weight.detach().numpy() for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    np.savez(OUT / f"{name}.npz", **weights)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = Mixed().eval()
    with torch.no_grad():  # distinct values everywhere, fp16-representable: both files hold them exactly
        for p in model.parameters():
            p.copy_(torch.randn_like(p).half().float())
        model.bn.running_mean.copy_(torch.randn(8) * 0.1)
        model.bn.running_var.copy_(torch.rand(8) + 0.5)
    convert(model, "mixed", fp16=False)
    convert(model, "mixed", fp16=True)


if __name__ == "__main__":
    main()
