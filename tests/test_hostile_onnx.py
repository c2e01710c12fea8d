"""ONNX files decoded by field number from a memory map: the values equal onnx's own (raw, typed
fields, external data), weights are views that outlive the reader, and hostile files (bit flips,
truncation, external data out of bounds, integer Conv weights) end as one-line ``ValueError``s."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import read_convolutions
from filtershift.readers.onnx_tensors import PLAIN
from tests.bitflips import failures_of_flipped
from tests.nets import export_onnx, make_model


def _graph(weight: TensorProto, *extra: TensorProto) -> onnx.ModelProto:
    conv = helper.make_node("Conv", ["x", weight.name], ["y"], name="k", pads=[1, 1, 1, 1])
    return helper.make_model(helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, *extra],
    ))


def _read(path):
    return read_convolutions(path, "onnx")


def test_plain_dtypes_are_onnx_own():
    assert all(dtype == np.dtype(helper.tensor_dtype_to_np_dtype(code)).newbyteorder("<") for code, dtype in PLAIN.items())


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16])
def test_typed_fields_and_raw_data_give_onnx_values(tmp_path, dtype):
    values = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    for raw in (True, False):
        weight = helper.make_tensor("w", dtype, values.shape, values.flatten(), raw=False)
        if raw:
            weight = numpy_helper.from_array(numpy_helper.to_array(weight), "w")
        onnx.save(_graph(weight), tmp_path / "m.onnx")
        (conv,) = _read(tmp_path / "m.onnx")
        expected = numpy_helper.to_array(weight)
        assert conv.weight.dtype == np.float32
        assert conv.weight.tobytes() == expected.astype(np.float32).tobytes()


def test_weights_stay_valid_after_the_reader_returns(tmp_path):
    export_onnx(make_model(0), tmp_path / "m.onnx")
    expected = [c.weight.copy() for c in _read(tmp_path / "m.onnx")]
    layers = model_kernels(_read(tmp_path / "m.onnx")).layers
    gc.collect()
    assert not layers[0].kernels.flags.writeable  # a view of the mapped file, not a copy
    kept = [c for c in expected if c.shape[2:] == (3, 3)]
    assert all(np.array_equal(layer.kernels, w.reshape(-1, 9)) for layer, w in zip(layers, kept, strict=True))


def test_bit_flipped_and_truncated_onnx_files_fail_cleanly(tmp_path):
    export_onnx(make_model(0).to(torch.float16), tmp_path / "good.onnx")
    data = (tmp_path / "good.onnx").read_bytes()
    target = tmp_path / "bad.onnx"
    assert failures_of_flipped(data, target, lambda: _read(target), count=300) > 0
    assert failures_of_flipped(data, target, lambda: _read(target), step=max(1, len(data) // 200)) > 0
    for size in range(0, len(data), max(1, len(data) // 97)):
        target.write_bytes(data[:size])
        with pytest.raises(ValueError) as info:
            _read(target)
        assert "\n" not in str(info.value)


def _external(tmp_path, **info: str):
    weight = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in info.items():
        weight.external_data.add(key=key, value=value)
    (tmp_path / "m.onnx").write_bytes(_graph(weight).SerializeToString())
    return tmp_path / "m.onnx"


@pytest.mark.parametrize("info, reason", [
    ({"offset": "100", "length": "144"}, "lies outside 'w.bin'"),
    ({"offset": "300"}, "lies outside 'w.bin'"),
    ({"offset": "-4", "length": "144"}, "lies outside 'w.bin'"),
    ({"length": "10000000000000"}, "lies outside 'w.bin'"),
    ({"offset": "zero"}, "is not a number"),
    ({"length": "100"}, "do not hold shape (2, 2, 3, 3)"),
])
def test_external_data_out_of_bounds_is_refused_before_any_read(tmp_path, info, reason):
    (tmp_path / "w.bin").write_bytes(np.ones(36, np.float32).tobytes())
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        _read(_external(tmp_path, location="w.bin", **info))


def test_external_data_at_an_offset_and_the_last_location_is_the_one_checked(tmp_path):
    values = np.arange(36, dtype=np.float32)
    (tmp_path / "w.bin").write_bytes(b"\0" * 16 + values.tobytes())
    (conv,) = _read(_external(tmp_path, location="w.bin", offset="16", length="144"))
    assert conv.weight.tobytes() == values.tobytes()
    (tmp_path / "inner").mkdir()
    path = _external(tmp_path / "inner", location="w.bin", offset="0")
    weight = onnx.load(path, load_external_data=False)
    weight.graph.initializer[0].external_data.add(key="location", value="../w.bin")  # onnx reads the last one
    path.write_bytes(weight.SerializeToString())
    with pytest.raises(ValueError, match="outside the model's folder"):
        _read(path)


def test_integer_conv_weights_are_refused(tmp_path):
    onnx.save(_graph(numpy_helper.from_array(np.ones((2, 2, 3, 3), np.int32), "w")), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="int32, not floating point"):
        _read(tmp_path / "m.onnx")
