"""Extraction throughput (3x3 filters/s) of the SavedModel, TF2 checkpoint and TF.js readers beside
the ONNX reader, on one model's weights saved in each format (run by hand, never by the tests).

    /work/venv-tf/bin/python tests/data/bench_tfsaved_throughput.py write /tmp/bench     # SavedModel, checkpoint, .npz
    /work/venv-tfjs/bin/python tests/data/bench_tfsaved_throughput.py tfjs /tmp/bench    # TF.js layers model
    .venv/bin/python tests/data/bench_tfsaved_throughput.py measure /tmp/bench           # ONNX from the .npz; medians of 5
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

WIDTH, DEPTH = 128, 16  # 16 regular 3x3 convs 128 -> 128 and 16 depthwise 3x3: 264,192 3x3 filters


def keras_model(keras):
    L = keras.layers
    x = inp = keras.Input((32, 32, WIDTH))
    for i in range(DEPTH):
        x = L.Conv2D(WIDTH, 3, padding="same", name=f"conv{i}")(x)
        x = L.DepthwiseConv2D(3, padding="same", name=f"dw{i}")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def write(folder: Path) -> None:
    import tensorflow as tf
    import tf_keras

    model = keras_model(tf_keras)
    model.save(str(folder / "sm"), include_optimizer=False)
    tf.train.Checkpoint(model=model).write(str(folder / "ckpt" / "model"))
    np.savez(folder / "weights.npz", **{w.name.split(":")[0]: w.numpy() for w in model.weights if len(w.shape) == 4})


def write_tfjs(folder: Path) -> None:
    import tensorflowjs as tfjs
    import tf_keras

    tfjs.converters.save_keras_model(keras_model(tf_keras), str(folder / "tfjs"))


def onnx_model(folder: Path) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    weights = np.load(folder / "weights.npz")
    nodes, inits, x = [], [], "x"
    for i in range(DEPTH):
        for name, depthwise in ((f"conv{i}/kernel", False), (f"dw{i}/depthwise_kernel", True)):
            k = weights[name]
            w = k.transpose(2, 3, 0, 1).reshape(-1, 1, 3, 3) if depthwise else k.transpose(3, 2, 0, 1)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w), name))
            nodes.append(helper.make_node("Conv", [x, name], [name + "_out"], group=WIDTH if depthwise else 1, pads=[1, 1, 1, 1]))
            x = name + "_out"
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", 1, [1, WIDTH, 32, 32])],
                              [helper.make_tensor_value_info(x, 1, None)], inits)
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def measure(folder: Path) -> None:
    from filtershift.extraction.kernels import model_kernels
    from filtershift.readers import read_convolutions

    targets = {"onnx": onnx_model(folder), "savedmodel": folder / "sm", "tf_checkpoint": folder / "ckpt" / "model.index",
               "tfjs": folder / "tfjs" / "model.json"}
    for fmt, path in targets.items():
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model = model_kernels(read_convolutions(path, fmt))
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        print(f"{fmt:14s} {model.n_filters:8,d} 3x3 filters  {seconds * 1000:7.1f} ms  {model.n_filters / seconds:12,.0f} filters/s")


if __name__ == "__main__":
    step, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"write": write, "tfjs": write_tfjs, "measure": measure}[step](folder)
