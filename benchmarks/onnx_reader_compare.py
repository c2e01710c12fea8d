"""Before/after of the ONNX reader on the realistic checkpoints: the reader at git revision REV
(exec'd from ``git show``) against the one of this tree, interleaved rounds, medians, page cache
warm; three stages: the read, plus ``model_kernels``, plus the read task's next step (one
float32 array of every kernel, checked finite), where a memory-mapped reader pays its page faults.

    PYTHONPATH=$PWD python benchmarks/onnx_reader_compare.py [DATA] [REV] [ROUNDS]

DATA defaults to /work/bench-data/extract/realistic-40 (its ``*.onnx`` files), REV to ``main``,
ROUNDS to 5.
"""

import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import onnx_graph as after

data = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/bench-data/extract/realistic-40")
rev = sys.argv[2] if len(sys.argv) > 2 else "main"
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
source = subprocess.run(["git", "show", f"{rev}:filtershift/readers/onnx_graph.py"], capture_output=True, text=True, check=True).stdout
before = types.ModuleType("onnx_graph_before")
exec(compile(source, f"{rev}:onnx_graph.py", "exec"), before.__dict__)
paths = sorted(data.glob("*.onnx"))
size = sum(p.stat().st_size for p in paths)


def read(module):
    for p in paths:
        module.read(p)


def extract(module):
    for p in paths:
        model_kernels(module.read(p))


def stage(module):
    for p in paths:
        layers = model_kernels(module.read(p)).layers
        np.isfinite(np.concatenate([layer.kernels for layer in layers])).all()


for p in paths:
    p.read_bytes()  # page cache warm
stages = {"read": read, "read + model_kernels": extract, "... + concatenate, isfinite": stage}
times = {(s, m): [] for s in stages for m in ("before", "after")}
for r in range(rounds):
    for s, run in stages.items():
        order = [("before", before), ("after", after)]
        for name, module in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            run(module)
            times[s, name].append(time.perf_counter() - t)
print(f"{len(paths)} files, {size / 1e9:.2f} GB; medians of {rounds} interleaved rounds; before = {rev}")
for s in stages:
    b, a = statistics.median(times[s, "before"]), statistics.median(times[s, "after"])
    print(f"{s:30s} before {b:.3f} s ({size / b / 1e9:.1f} GB/s)  after {a:.4f} s ({size / a / 1e9:.1f} GB/s)  {b / a:.1f}x")
