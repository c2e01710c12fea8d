"""Writes the TFLite fixtures of tests/test_reader_tflite.py (run by hand, in a venv with
tensorflow-cpu 2.21 and tf-keras; the tests themselves need no TensorFlow):

    TF_USE_LEGACY_KERAS=1 /work/venv-tf/bin/python tests/data/make_tflite_fixtures.py

One small Keras model with a regular 3x3, a depthwise (multiplier 2), a separable, a grouped, a 1x1
and a 5x5 convolution, two parallel 3x3 branches and a transposed convolution, converted by the
TFLite converter into:

- ``convs_float32.tflite``: float32 constants;
- ``convs_float16.tflite``: float16 weights behind DEQUANTIZE ops (Optimize.DEFAULT + float16);
- ``convs_int8.tflite``: full integer quantization (representative dataset; per-channel int8);
- ``convs_dynamic.tflite``: dynamic-range quantization (int8 weights, float activations);
- ``convs_offsets.tflite``: float32 with the buffers stored at offsets in the file's tail (the
  layout converters use for models over 2 GB);
- ``convs_sparse.tflite``: the same model with most weights zeroed (as pruning leaves them),
  Optimize.EXPERIMENTAL_SPARSITY: sparse constants behind DENSIFY ops.

``convs.npz`` holds each Keras layer's kernel exactly as Keras reports it (not transposed):
``<layer>`` for Conv2D / Conv2DTranspose (HWIO; HWOI for the transposed one), DepthwiseConv2D
(H, W, C, M); ``<layer>/depthwise`` and ``<layer>/pointwise`` for SeparableConv2D.
``convs_sparse.npz`` the same for the sparse model.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

OUT = Path(__file__).resolve().parent / "tflite"
rng = np.random.default_rng(13)


def build() -> keras.Model:
    L = keras.layers
    x = inp = keras.Input((12, 12, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x)
    x = L.SeparableConv2D(8, 3, padding="same", name="separable")(x)
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    x = L.Conv2D(8, 1, name="pointwise1x1")(x)
    x = L.Conv2D(8, 5, padding="same", name="conv5")(x)
    a = L.Conv2D(8, 3, padding="same", name="branch_a")(x)
    b = L.Conv2D(8, 3, padding="same", name="branch_b")(x)
    x = L.Add()([a, b])
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="transposed")(x)
    x = L.Conv2D(4, 3, padding="same", name="head")(x)
    return keras.Model(inp, x)


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.SeparableConv2D):
            out[f"{layer.name}/depthwise"], out[f"{layer.name}/pointwise"] = layer.get_weights()[:2]
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            out[layer.name] = layer.get_weights()[0]
    return out


def representative():
    for _ in range(16):
        yield [rng.normal(size=(1, 12, 12, 3)).astype(np.float32)]


def convert(model: keras.Model, name: str, setup=None) -> None:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if setup:
        setup(converter)
    (OUT / f"{name}.tflite").write_bytes(converter.convert())


def float16(c):
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]


def int8(c):
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = representative
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def dynamic(c):
    c.optimizations = [tf.lite.Optimize.DEFAULT]


def offsets(c):
    c._experimental_use_buffer_offset = True


def sparse(c):
    c.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]


def prune(model: keras.Model, keep: float = 0.2) -> None:
    """Zero all but a random ``keep`` fraction of every kernel, as magnitude pruning leaves it."""
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            weights[0] = weights[0] * (rng.random(weights[0].shape) < keep)
            layer.set_weights(weights)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    keras.utils.set_random_seed(13)
    model = build()
    np.savez(OUT / "convs.npz", **kernels(model))
    convert(model, "convs_float32")
    convert(model, "convs_float16", float16)
    convert(model, "convs_int8", int8)
    convert(model, "convs_dynamic", dynamic)
    convert(model, "convs_offsets", offsets)
    prune(model)
    np.savez(OUT / "convs_sparse.npz", **kernels(model))
    convert(model, "convs_sparse", sparse)
    for path in sorted(OUT.iterdir()):
        print(f"{path.name:28} {path.stat().st_size:8,} bytes")


if __name__ == "__main__":
    main()
