"""Writes the Keras fixtures under tests/data/keras/ (run by hand, never at test time):

    /work/venv-tf/bin/python tests/data/make_keras_fixtures.py

Needs tensorflow-cpu with tf-keras (legacy Keras 2 ``.h5``) and Keras 3 (``.keras``). One small
functional model, ``mixed``, holds every kind of layer the reader must tell apart (12x12x3 input, a
handful of channels, so that the files stay small):

    conv1 (Conv2D 3x3) -> bn -> { dw (DepthwiseConv2D 3x3, multiplier 2)      } -> join (Add)
                                { half (Conv2D 3x3, dtype float16: fp16 kernel) }
    -> sep (SeparableConv2D 3x3) -> block (a nested Sequential: inner_a Conv2D 1x1, inner_b Conv2D 5x5)
    -> deconv (Conv2DTranspose 3x3, excluded) -> grouped (Conv2D 3x3, groups 2)

Written files:
- ``mixed_k2.h5``          Keras 2 (tf_keras) full model, compiled and fitted one step with SGD +
                           momentum, so that ``optimizer_weights`` holds a copy of every kernel;
- ``mixed_k2_weights.h5``  Keras 2 ``save_weights`` of the same model (no config: types unknown);
- ``mixed_k3.keras``       Keras 3 archive (config.json + model.weights.h5), fitted one step with
                           plain SGD (its optimizer variables sit beside the layers' and are not read);
- ``<stem>.npz``           each file's weights as the framework reports them (``layer.weights``),
                           NOT transposed: key ``<layer>/<variable>`` (``conv1/kernel``,
                           ``sep/depthwise_kernel``, ``sep/pointwise_kernel``), Keras layouts
                           (Conv2D HWIO, DepthwiseConv2D HWCM), the stored dtype (``half`` is float16).
A top-level Sequential is in tests/data/crossformat/. The Keras 2 and Keras 3 files hold different random weights (each written by its own framework).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "keras"
SHAPE = (12, 12, 3)


def mixed(k):
    L = k.layers
    x = inp = k.Input(SHAPE, name="image")
    x = L.BatchNormalization(name="bn")(L.Conv2D(4, 3, padding="same", name="conv1")(x))
    a = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    b = L.Conv2D(8, 3, padding="same", name="half", dtype="float16")(x)
    x = L.Add(name="join")([a, b])  # casts the float16 branch to float32
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    block = k.Sequential([
        k.Input((12, 12, 6)),
        L.Conv2D(6, 1, name="inner_a"),
        L.ReLU(name="inner_relu"),
        L.Conv2D(4, 5, padding="same", use_bias=False, name="inner_b"),
    ], name="block")
    x = L.Conv2DTranspose(4, 3, padding="same", name="deconv")(block(x))
    x = L.Conv2D(4, 3, padding="same", groups=2, name="grouped")(x)
    return k.Model(inp, x, name="mixed")


def fit_one_step(k, model, momentum=0.9):
    model.compile(optimizer=k.optimizers.SGD(1e-3, momentum=momentum), loss="mse")
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32")
    y = model.predict(x, verbose=0)
    model.fit(x, y + 0.1, epochs=1, verbose=0)


def layer_weights(model) -> dict[str, np.ndarray]:
    out = {}
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested model: its own layers by name
            out.update(layer_weights(layer))
            continue
        for var in layer.weights:
            short = var.name.split("/")[-1].split(":")[0]
            out[f"{layer.name}/{short}"] = np.asarray(var.numpy())
    return out


def main():
    OUT.mkdir(exist_ok=True)
    import keras
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = mixed(tf_keras)
    fit_one_step(tf_keras, model)
    model.save(OUT / "mixed_k2.h5")
    model.save_weights(OUT / "mixed_k2_weights.h5")
    np.savez_compressed(OUT / "mixed_k2.npz", **layer_weights(model))

    keras.utils.set_random_seed(1)
    model = mixed(keras)
    fit_one_step(keras, model, momentum=0.0)  # optimizer vars too, but not a copy of each kernel (size)
    model.save(OUT / "mixed_k3.keras")
    np.savez_compressed(OUT / "mixed_k3.npz", **layer_weights(model))
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:>8,}  {f.name}")


if __name__ == "__main__":
    main()
