"""Extraction throughput (3x3 filters/s) of the Keras readers beside the ONNX reader, on the same
conv weights: a VGG-like Keras model (seven Conv2D 3x3 layers up to 256 channels and a
DepthwiseConv2D, ~193k 3x3 kernels) saved as Keras 2 style HDF5 and as a Keras 3 ``.keras``
archive, and an ONNX graph of Conv nodes built from the very same weights. Each timing is
``read_convolutions`` + ``model_kernels`` (what one extraction task does before staging), median
of 5 after one warm-up (files in the page cache).

    /work/venv-tf/bin/python benchmarks/bench_keras_readers.py --write /tmp/bench-keras   # needs keras
    .venv/bin/python benchmarks/bench_keras_readers.py /tmp/bench-keras
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

CHANNELS = (64, 64, 128, 128, 256, 256, 256)


def write_keras(folder: Path) -> None:
    import keras

    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    layers = [keras.Input((32, 32, 3))] + [keras.layers.Conv2D(c, 3, padding="same", name=f"conv{i}") for i, c in enumerate(CHANNELS)]
    model = keras.Sequential([*layers, keras.layers.DepthwiseConv2D(3, padding="same", name="dw")], name="vgg")
    model.save(folder / "vgg.keras")
    model.save(folder / "vgg.h5")


def write_onnx(folder: Path) -> None:
    """Conv nodes in a chain with the HDF5 reader's weights (OIHW), so both hold the same values."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from filtershift.readers import read_convolutions

    convs = read_convolutions(folder / "vgg.h5", "keras_h5")
    nodes, inits, x = [], [], "x"
    for i, conv in enumerate(convs):
        inits.append(numpy_helper.from_array(conv.weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"y{i}"], name=conv.name, pads=[1, 1, 1, 1], group=conv.groups))
        x = f"y{i}"
    graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), folder / "vgg.onnx")


def measure(folder: Path, repeats: int = 5) -> None:
    from filtershift.extraction.kernels import model_kernels
    from filtershift.readers import read_convolutions

    if not (folder / "vgg.onnx").exists():
        write_onnx(folder)
    for file, fmt in (("vgg.onnx", "onnx"), ("vgg.h5", "keras_h5"), ("vgg.keras", "keras")):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            n = model_kernels(read_convolutions(folder / file, fmt)).n_filters
            times.append(time.perf_counter() - start)
        median = statistics.median(times[1:])
        size = (folder / file).stat().st_size / 2**20
        print(f"{fmt:>9}  {file:<10} {size:6.1f} MiB  {n:,} filters  median {median * 1000:7.1f} ms  {n / median / 1e6:6.2f} M filters/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--write", action="store_true", help="write the Keras files (run where keras is installed)")
    args = parser.parse_args()
    write_keras(args.folder) if args.write else measure(args.folder)
