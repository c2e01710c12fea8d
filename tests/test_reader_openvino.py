"""OpenVINO IR (.xml + .bin) read without OpenVINO: files written by OpenVINO's own converter
(tests/data/make_openvino_fixtures.py) checked against the PyTorch weights they came from, the same
weights as ONNX and as IR, and hostile IR files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from filtershift.readers import detect_format, read_convolutions

DATA = Path(__file__).parent / "data" / "openvino"
ORDER = ("stem", "dw", "grouped", "point", "wide", "head")  # execution order of tiny_convnet.py
LEVELS = {"stem": 0, "dw": 1, "grouped": 2, "point": 3, "wide": 3, "head": 4}
GROUPS = {"stem": 1, "dw": 8, "grouped": 2, "point": 1, "wide": 1, "head": 1}


def convs(name):
    path = DATA / f"{name}.xml"
    assert detect_format(path) == "openvino"
    return read_convolutions(path, "openvino")


@pytest.fixture(scope="module")
def torch_weights():
    with np.load(DATA / "tiny_weights.npz") as npz:
        return {k: npz[k] for k in npz}


def test_fp32_and_fp16_ir_are_the_torch_weights_bit_for_bit(torch_weights):
    for variant, cast in (("tiny_fp32", np.float32), ("tiny_fp16", np.float16), ("tiny_onnx", np.float32)):
        found = convs(variant)
        assert len(found) == len(ORDER), variant  # the transposed convolution is excluded
        for conv, name in zip(sorted(found, key=lambda c: c.level), ORDER):
            expected = torch_weights[name].astype(cast).astype(np.float32)
            assert conv.weight.dtype == np.float32
            match = [n for n in ORDER if torch_weights[n].shape == conv.weight.shape and np.array_equal(conv.weight, torch_weights[n].astype(cast).astype(np.float32))]
            assert match, f"{variant}: {conv.name} matches no torch weight"
            name = match[0] if name not in match else name
            np.testing.assert_array_equal(conv.weight, expected)
            assert (conv.level, conv.groups) == (LEVELS[name], GROUPS[name]), (variant, name)


def test_int8_ir_is_within_about_half_a_quantization_step(torch_weights):
    """NNCF stores the per-channel scale in float16 and rounds the zero point, so the error
    reaches 0.54 step on these weights: bounded at 0.6 step (a wrong dequantization is off by many)."""
    found = {}
    for conv in convs("tiny_int8"):
        found.setdefault(conv.weight.shape, []).append(conv)
    for name in ORDER:
        w = torch_weights[name]
        flat = w.reshape(len(w), -1)
        step = (flat.max(1) - flat.min(1)) / 255  # asymmetric 8-bit per output channel
        errors = [np.abs(c.weight - w).reshape(len(w), -1).max(1) for c in found[w.shape]]
        assert any((e <= 0.6 * step).all() for e in errors), name


def test_ir_and_onnx_of_the_same_model_give_the_same_kernels():
    ir = sorted(convs("tiny_onnx"), key=lambda c: c.level)
    onnx = sorted(read_convolutions(DATA / "tiny.onnx", "onnx"), key=lambda c: c.level)
    assert [c.weight.shape for c in ir] == [c.weight.shape for c in onnx]
    for a, b in zip(ir, onnx):
        np.testing.assert_array_equal(a.weight, b.weight)
        assert (a.level, a.groups) == (b.level, b.groups)


def _copy(tmp_path, name="tiny_fp32"):
    for suffix in (".xml", ".bin"):
        shutil.copy(DATA / f"{name}{suffix}", tmp_path / f"m{suffix}")
    return tmp_path / "m.xml"


def test_hostile_ir_files_fail_with_a_one_line_reason(tmp_path):
    xml = _copy(tmp_path)
    bin_path = tmp_path / "m.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:100])  # weights cut short: offsets past the end
    with pytest.raises(ValueError) as cut:
        read_convolutions(xml, "openvino")
    assert "\n" not in str(cut.value)
    xml = _copy(tmp_path)
    text = xml.read_text()
    xml.write_text('<?xml version="1.0"?><!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">]>' + text.split("?>", 1)[1])
    with pytest.raises(ValueError):
        read_convolutions(xml, "openvino")
    xml = _copy(tmp_path)
    xml.write_text(xml.read_text()[: len(xml.read_text()) // 2])  # truncated XML
    with pytest.raises(ValueError):
        read_convolutions(xml, "openvino")
    xml = _copy(tmp_path)
    (tmp_path / "m.bin").unlink()
    with pytest.raises(ValueError):
        read_convolutions(xml, "openvino")
