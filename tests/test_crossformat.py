"""The same weights saved by PyTorch, ONNX, Keras (HDF5 and .keras), TFLite and Flax writers give the same
kernels, conv indices and groups (tests/data/make_crossformat_fixtures.py wrote the files, and
tests/data/make_flax_fixtures.py net.msgpack from net.npz through a Flax model; net.npz
holds the torch weights in OIHW, the kernels every reader must return)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import FORMATS, detect_format, read_convolutions

DATA = Path(__file__).parent / "data" / "crossformat"
ORDER = ("conv_a", "dw", "conv_b")
GROUPS = (1, 4, 1)  # the torch state dict cannot tell them (-1) without an arch
# Flax stores no feature_group_count: unknown (-1), and a depthwise-named kernel with I = 1 is taken
# for multiplier 1 (groups = out = 8); dw has multiplier 2, so its true 4 is the rule's known miss
FLAX_GROUPS = (-1, 8, -1)
NO_TFLITE = pytest.mark.skipif("tflite" not in FORMATS, reason="the TFLite reader (format 'tflite') is not in this build")
FILES = [
    ("net.pt", "torch"), ("net.onnx", "onnx"), ("net.h5", "keras_h5"), ("net.keras", "keras"),
    pytest.param("net.tflite", "tflite", marks=NO_TFLITE), ("net.msgpack", "flax"),
]


@pytest.mark.parametrize("file, fmt", FILES)
def test_every_format_gives_the_same_kernels(file, fmt):
    reference = np.load(DATA / "net.npz")
    assert detect_format(DATA / file) == fmt
    convs = read_convolutions(DATA / file, fmt)
    assert len(convs) == 3
    for conv, name, groups in zip(convs, ORDER, GROUPS):
        np.testing.assert_array_equal(conv.weight, reference[name], err_msg=f"{file}: {conv.name}")
        assert conv.groups in ((groups, -1) if fmt == "torch" else (FLAX_GROUPS[ORDER.index(name)],) if fmt == "flax" else (groups,)), (file, conv.name)
    layers = model_kernels(convs).layers
    assert [layer.conv_index for layer in layers] == [0, 1, 2] and layers[0].n_conv == 3
    for layer, name in zip(layers, ORDER):
        np.testing.assert_array_equal(layer.kernels, reference[name].reshape(-1, 9))
