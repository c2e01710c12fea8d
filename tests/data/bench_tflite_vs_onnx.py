"""Reader throughput, TFLite beside ONNX on the same weights (run by hand with the project's venv):

    PYTHONPATH=. .venv/bin/python tests/data/bench_tflite_vs_onnx.py MODEL.tflite ...

Each TFLite model is read once, and its convolutions are written as an ONNX graph of Conv nodes
with the same float32 weights (and groups); then each file is read 5 times through
``read_convolutions`` + ``model_kernels`` (reading, dequantizing, selecting 3x3 kernels) and the
median time gives 3x3 filters/s.
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import read_convolutions


def as_onnx(convs, path: Path) -> None:
    nodes, inits = [], []
    for i, c in enumerate(convs):
        inits.append(numpy_helper.from_array(c.weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{i}"], [f"y{i}"], name=c.name or f"conv{i}", group=c.groups))
    graph = helper.make_graph(nodes, "same", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None) for i in range(len(convs))], inits)
    onnx.save(helper.make_model(graph), path)


def median_seconds(path: Path, fmt: str) -> tuple[float, int]:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        n = model_kernels(read_convolutions(path, fmt)).n_filters
        times.append(time.perf_counter() - start)
    return statistics.median(times), n


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    print(f"{'model':40} {'3x3 filters':>11} {'tflite ms':>9} {'onnx ms':>8} {'tflite filters/s':>16} {'onnx filters/s':>14}")
    for name in sys.argv[1:]:
        path = Path(name)
        onnx_path = folder / f"{path.stem}.onnx"
        as_onnx(read_convolutions(path, "tflite"), onnx_path)
        t_tfl, n = median_seconds(path, "tflite")
        t_onnx, n_onnx = median_seconds(onnx_path, "onnx")
        assert n == n_onnx
        print(f"{path.name:40} {n:11,} {t_tfl * 1e3:9.1f} {t_onnx * 1e3:8.1f} {n / t_tfl:16,.0f} {n / t_onnx:14,.0f}")
