"""The independent counts recorded in tests/test_reader_tflite.py for the real TFLite models (run
by hand in a venv with tensorflow-cpu; prints one dict per model):

    /work/venv-tf/bin/python tests/data/count_tflite_pretrained.py MODEL.tflite ...

They come from TensorFlow Lite's own interpreter, not from our reader: the model is run once on
zeros with every tensor preserved, and each CONV_2D / DEPTHWISE_CONV_2D filter is taken from the
interpreter's tensors (the outputs of its own DEQUANTIZE and DENSIFY kernels), int8 filters
dequantized with the scales the interpreter reports.
"""

import sys
from collections import Counter

import numpy as np
import tensorflow as tf


def counts(path: str) -> dict:
    interp = tf.lite.Interpreter(
        model_path=path,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    shapes, layers, kernels, total, total_all = Counter(), 0, 0, 0.0, 0.0
    n_conv = 0
    for op in interp._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        n_conv += 1
        w = interp.get_tensor(op["inputs"][1]).astype(np.float64)
        q = details[op["inputs"][1]]["quantization_parameters"]
        if len(q["scales"]):
            shape = [1] * w.ndim
            shape[q["quantized_dimension"]] = -1
            w = (w - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)
        o, kh, kw, i = w.shape
        n = o * i if op["op_name"] == "CONV_2D" else i  # depthwise [1, H, W, C*M]: one kernel per channel
        shapes[f"{kh}x{kw}"] += n
        total_all += float(np.abs(w).sum())
        if (kh, kw) == (3, 3):
            layers += 1
            kernels += n
            total += float(np.abs(w).sum())
    return {"convs": n_conv, "layers": layers, "kernels": kernels, "kernel_counts": dict(sorted(shapes.items())), "abs_sum_3x3": round(total, 3), "abs_sum": round(total_all, 3)}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(path.rsplit("/", 1)[-1], counts(path))
