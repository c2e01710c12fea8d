"""Reader throughput, Paddle beside ONNX on the same weights (run by hand with the project's venv):

    PYTHONPATH=. .venv/bin/python tests/data/bench_paddle_vs_onnx.py MODEL.pdmodel|MODEL.json ...

Each Paddle inference model is read once; its convolutions are written as an ONNX graph of Conv
nodes with the same float32 weights and groups (tests/data/bench_tflite_vs_onnx.py) and as a
``.pdparams`` state dict (a protocol-4 pickle of name -> numpy array, as ``paddle.save`` writes
it). Each file is then read 5 times through ``read_convolutions`` + ``model_kernels`` and the
median time gives 3x3 filters/s, and all kernels/s (every kernel of every size the reader returns).
"""

import pickle
import sys
import tempfile
from pathlib import Path

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import detect_format, read_convolutions
from tests.data.bench_tflite_vs_onnx import as_onnx, median_seconds

if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    print(f"{'model':28} {'reader':16} {'3x3 filters':>11} {'all kernels':>11} {'ms':>7} {'3x3 filters/s':>14} {'kernels/s':>12}")
    for name in sys.argv[1:]:
        path = Path(name)
        convs = read_convolutions(path, detect_format(path))
        kernels = sum(c.weight.shape[0] * c.weight.shape[1] for c in convs)
        onnx_path = folder / f"{path.parent.name}.onnx"
        as_onnx(convs, onnx_path)
        params_path = folder / f"{path.parent.name}.pdparams"
        with open(params_path, "wb") as f:
            pickle.dump({f"{c.name}.weight": c.weight for c in convs}, f, protocol=4)
        for file, fmt in ((path, "paddle_inference"), (params_path, "paddle_params"), (onnx_path, "onnx")):
            seconds, n = median_seconds(file, fmt)
            assert n == model_kernels(convs).n_filters
            print(f"{path.parent.name:28} {fmt:16} {n:11,} {kernels:11,} {seconds * 1e3:7.1f} {n / seconds:14,.0f} {kernels / seconds:12,.0f}")
