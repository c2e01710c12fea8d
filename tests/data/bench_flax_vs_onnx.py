"""Reader throughput, Flax msgpack beside ONNX on the same weights (run by hand with the project's venv):

    /work/venvs/flax/bin/python tests/data/make_flax_fixtures.py --resnet18 /tmp/resnet18.msgpack
    PYTHONPATH=. .venv/bin/python tests/data/bench_flax_vs_onnx.py /tmp/resnet18.msgpack ...

Each Flax checkpoint is read once, and its convolutions are written as an ONNX graph of Conv nodes
with the same float32 weights (as tests/data/bench_tflite_vs_onnx.py does); then each file is read 5
times through ``read_convolutions`` + ``model_kernels`` and the median time gives 3x3 filters/s.
"""

import sys
import tempfile
from pathlib import Path

from filtershift.readers import read_convolutions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tflite_vs_onnx import as_onnx, median_seconds  # noqa: E402

if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    print(f"{'model':30} {'MB':>6} {'3x3 filters':>11} {'flax ms':>8} {'onnx ms':>8} {'flax filters/s':>14} {'onnx filters/s':>14}")
    for name in sys.argv[1:]:
        path = Path(name)
        onnx_path = folder / f"{path.stem}.onnx"
        convs = read_convolutions(path, "flax")
        as_onnx([c.__class__(c.name, c.level, c.weight, max(c.groups, 1)) for c in convs], onnx_path)
        t_flax, n = median_seconds(path, "flax")
        t_onnx, n_onnx = median_seconds(onnx_path, "onnx")
        assert n == n_onnx
        size = path.stat().st_size / 1e6
        print(f"{path.name:30} {size:6.1f} {n:11,} {t_flax * 1e3:8.1f} {t_onnx * 1e3:8.1f} {n / t_flax:14,.0f} {n / t_onnx:14,.0f}")
