"""Reader throughput, Core ML beside ONNX on the same weights (run by hand with the project's venv):

    PYTHONPATH=. .venv/bin/python tests/data/bench_coreml_vs_onnx.py MODEL.mlmodel MODEL.mlpackage ...

Each Core ML model is read once and its convolutions are written as an ONNX graph of Conv nodes with
the same float32 weights and groups (tests/data/bench_tflite_vs_onnx.py's ``as_onnx``); then each is
read 5 times through ``read_convolutions`` + ``model_kernels`` (parsing, blob reads, dequantizing,
selecting 3x3 kernels) and the median time gives 3x3 filters/s. The pages of both files are in the
OS cache after the first read, so this measures decoding, not the disk.

A model with many 3x3 filters, written in the coremltools venv (tests/data/make_coreml_fixtures.py)::

    chans = [3, 64, 64, 64, 128, 128, 128, 256, 256, 256, 512, 512]  # 11 Conv2d(a, b, 3) + ReLU
    ct.convert(traced, inputs=..., convert_to="mlprogram", compute_precision=ct.precision.FLOAT32)
    ct.convert(traced, inputs=..., convert_to="mlprogram")  # fp16
    ct.convert(traced, inputs=..., convert_to="neuralnetwork")
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tflite_vs_onnx import as_onnx, median_seconds  # noqa: E402

from filtershift.readers import detect_format, read_convolutions  # noqa: E402

if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    print(f"{'model':28} {'format':15} {'3x3 filters':>11} {'coreml ms':>9} {'onnx ms':>8} {'coreml filters/s':>16} {'onnx filters/s':>14}")
    for name in sys.argv[1:]:
        path = Path(name)
        fmt = detect_format(path)
        onnx_path = folder / f"{path.stem}.onnx"
        as_onnx(read_convolutions(path, fmt), onnx_path)
        t_coreml, n = median_seconds(path, fmt)
        t_onnx, n_onnx = median_seconds(onnx_path, "onnx")
        assert n == n_onnx
        print(f"{path.name:28} {fmt:15} {n:11,} {t_coreml * 1e3:9.1f} {t_onnx * 1e3:8.1f} {n / t_coreml:16,.0f} {n / t_onnx:14,.0f}")
