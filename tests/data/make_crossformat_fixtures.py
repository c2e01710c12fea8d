"""Writes tests/data/crossformat/: one small model, the same weights saved by four frameworks'
writers (run by hand, never at test time):

    /work/venv-tf/bin/python tests/data/make_crossformat_fixtures.py

The model (8x8x3 input): conv_a (Conv2D 3x3, 3 -> 4), dw (DepthwiseConv2D 3x3, multiplier 2:
8 channels, groups 4), conv_b (Conv2D 3x3, 8 -> 4), built in Keras 3 with seeded random weights:
- ``net.keras``  Keras 3 archive;  ``net.h5``  the same model saved by Keras 3 as legacy HDF5;
- ``net.tflite`` tf.lite.TFLiteConverter (float32, no optimizations) of the Keras model;
- ``net.pt``     the equivalent torch model's state dict (torch.save), weights transposed from
                 Keras's HWIO / HWCM into torch's OIHW; ``net.onnx`` torch.onnx.export of it;
- ``net.npz``    the torch weights (OIHW, float32), keyed ``conv_a``, ``dw``, ``conv_b``: the
                 kernels every reader must give.
The script checks that the Keras, TFLite and torch models compute the same outputs first.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "crossformat"


def keras_model():
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(4, 3, padding="same", name="conv_a"),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"),
        L.Conv2D(4, 3, padding="same", name="conv_b"),
    ], name="net")


def torch_model(model):
    import torch
    from torch import nn

    net = nn.Sequential()
    net.add_module("conv_a", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("dw", nn.Conv2d(4, 8, 3, padding=1, groups=4))
    net.add_module("conv_b", nn.Conv2d(8, 4, 3, padding=1))
    with torch.no_grad():
        for name in ("conv_a", "dw", "conv_b"):
            kernel, bias = (np.asarray(v.numpy()) for v in model.get_layer(name).weights)
            if name == "dw":  # (H, W, C, M) -> (C*M, 1, H, W)
                h, w, c, m = kernel.shape
                weight = kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)
            else:  # HWIO -> OIHW
                weight = kernel.transpose(3, 2, 0, 1)
            getattr(net, name).weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            getattr(net, name).bias.copy_(torch.from_numpy(bias))
    return net.eval()


def main():
    import keras
    import tensorflow as tf
    import torch

    OUT.mkdir(exist_ok=True)
    keras.utils.set_random_seed(7)
    model = keras_model()
    for layer in model.layers:  # non-zero biases, so that the output check means something
        layer.weights[1].assign(np.random.default_rng(3).normal(size=layer.weights[1].shape).astype("float32"))
    model.save(OUT / "net.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(OUT / "net.h5")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (OUT / "net.tflite").write_bytes(converter.convert())
    net = torch_model(model)
    torch.save(net.state_dict(), OUT / "net.pt")
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), str(OUT / "net.onnx"), dynamo=False)
    np.savez(OUT / "net.npz", **{k.removesuffix(".weight"): v.numpy() for k, v in net.state_dict().items() if k.endswith("weight")})

    expected = np.asarray(model(x))
    got_torch = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    interpreter = tf.lite.Interpreter(model_path=str(OUT / "net.tflite"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got_tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got_torch, expected, atol=1e-5)
    np.testing.assert_allclose(got_tflite, expected, atol=1e-5)
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:>8,}  {f.name}")


if __name__ == "__main__":
    main()
