"""Readers: exact kernels, conv indices and groups from every format."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from filtershift.extraction.kernels import model_kernels
from filtershift.readers import detect_format, read_convolutions
from filtershift.readers.arch import ArchError, parse_arch

from tests.nets import MIXED_LAYERS, MIXED_N_CONV, expected_kernels, export_onnx, make_model, save_all_formats


def layers_of(path, fmt, arch=""):
    return {layer.name.strip("/").removesuffix("/Conv"): layer for layer in model_kernels(read_convolutions(path, fmt, arch)).layers}


def assert_mixed(layers, expected, with_groups=True):
    assert list(layers) == [name for name, *_ in MIXED_LAYERS]
    for name, conv_index, groups, in_per_group, out in MIXED_LAYERS:
        layer = layers[name]
        assert (layer.conv_index, layer.n_conv, layer.in_channels, layer.out_channels) == (conv_index, MIXED_N_CONV, in_per_group, out)
        if with_groups:
            assert layer.groups == groups
        assert layer.kernels.dtype == np.float32 and layer.kernels.flags.c_contiguous
        np.testing.assert_array_equal(layer.kernels, expected[name])  # bit-identical


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = make_model(seed=1)
    paths = save_all_formats(model, tmp_path_factory.mktemp("formats"), "mixed")
    return expected_kernels(model), paths


@pytest.mark.parametrize("kind", ["state_dict", "checkpoint", "safetensors"])
def test_state_dicts_with_arch_count_exactly_the_conv2d_modules(saved, kind, tests_arch):
    expected, paths = saved
    fmt = "safetensors" if kind == "safetensors" else "torch"
    assert_mixed(layers_of(paths[kind], fmt, "tests:mixed"), expected)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_graph_formats_know_their_module_types(saved, kind):
    expected, paths = saved
    assert_mixed(layers_of(paths[kind], detect_format(paths[kind])), expected)


def test_same_model_in_every_format_gives_the_same_kernels(saved, tests_arch):
    _, paths = saved
    found = {
        kind: np.concatenate([l.kernels for l in layers_of(path, detect_format(path), "tests:mixed" if kind in ("state_dict", "checkpoint", "safetensors") else "").values()])
        for kind, path in paths.items()
    }
    first = found.pop("state_dict")
    for kind, kernels in found.items():
        np.testing.assert_array_equal(kernels, first, err_msg=kind)


def test_state_dict_without_arch_follows_the_documented_rule(saved):
    expected, paths = saved
    layers = layers_of(paths["state_dict"], "torch")
    # the ConvTranspose2d named 'deconv' is excluded by name; groups are unknown (-1)
    assert_mixed(layers, expected, with_groups=False)
    assert all(layer.groups == -1 for layer in layers.values())


def test_checkpoint_dict_never_reads_optimizer_or_ema(saved):
    expected, paths = saved
    ckpt = torch.load(paths["checkpoint"], weights_only=True)
    assert any(v["exp_avg"].ndim == 4 for v in ckpt["optimizer"]["state"].values())
    layers = layers_of(paths["checkpoint"], "torch")
    for name, layer in layers.items():
        np.testing.assert_array_equal(layer.kernels, expected[name])  # not the zeroed EMA copy


def test_fp16_and_bf16_weights_become_float32_exactly(tmp_path, tests_arch):
    model = make_model(seed=2).half()
    expected = {k: v.astype(np.float32) for k, v in expected_kernels(model.float()).items()}
    model = model.half()
    torch.save(model.state_dict(), tmp_path / "half.pt")
    export_onnx(model, tmp_path / "half.onnx")
    for path, fmt in ((tmp_path / "half.pt", "torch"), (tmp_path / "half.onnx", "onnx")):
        layers = layers_of(path, fmt, "tests:mixed" if fmt == "torch" else "")
        for name, layer in layers.items():
            np.testing.assert_array_equal(layer.kernels, expected[name], err_msg=fmt)
    bf16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in make_model(seed=3).state_dict().items()}
    save_file(bf16, tmp_path / "bf16.safetensors")
    layers = layers_of(tmp_path / "bf16.safetensors", "safetensors", "tests:mixed")
    np.testing.assert_array_equal(layers["conv1"].kernels, bf16["conv1.weight"].float().numpy().reshape(-1, 9))


def _conv(name, x, w, out, groups=1):
    return helper.make_node("Conv", [x, w], [out], name=name, group=groups, pads=[1, 1, 1, 1])


def test_onnx_depth_is_the_longest_conv_path_and_parallel_convs_share_it(tmp_path):
    rng = np.random.default_rng(0)
    w = {n: rng.standard_normal(s).astype(np.float32) for n, s in
         {"wa": (4, 2, 3, 3), "wb": (4, 2, 1, 1), "wc": (4, 4, 3, 3), "wd": (4, 4, 3, 3), "wt": (4, 4, 3, 3)}.items()}
    nodes = [
        _conv("a", "x", "wa", "ya"),  # level 0
        _conv("b", "x", "wb", "yb"),  # level 0, parallel 1x1 (skip branch)
        _conv("c", "ya", "wc", "yc"),  # level 1
        helper.make_node("Add", ["yc", "yb"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("ConvTranspose", ["r", "wt"], ["t"], name="t"),  # never counted
        _conv("d", "t", "wd", "y"),  # level 2 (after the conv transpose, which is no conv)
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(v, n) for n, v in w.items()],
    )
    onnx.save(helper.make_model(graph), tmp_path / "branches.onnx")
    model = model_kernels(read_convolutions(tmp_path / "branches.onnx", "onnx"))
    assert model.n_conv == 3
    assert [(l.name, l.conv_index, l.depth, l.depth_decile) for l in model.layers] == [("a", 0, 0.0, 0), ("c", 1, 0.5, 4), ("d", 2, 1.0, 9)]
    assert model.kernel_counts == {"1x1": 8, "3x3": 8 + 16 + 16}
    np.testing.assert_array_equal(model.layers[1].kernels, w["wc"].reshape(-1, 9))


def test_onnx_weights_from_constants_casts_and_external_data(tmp_path):
    rng = np.random.default_rng(1)
    w16 = rng.standard_normal((2, 2, 3, 3)).astype(np.float16)
    w64 = rng.standard_normal((2, 2, 3, 3))
    big = rng.standard_normal((8, 2, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["c16"], value=numpy_helper.from_array(w16, "c16")),
        helper.make_node("Cast", ["c16"], ["w16"], to=TensorProto.FLOAT),
        _conv("k16", "x", "w16", "y1"),
        helper.make_node("Identity", ["w64i"], ["w64"]),
        _conv("k64", "x", "w64", "y2"),
        _conv("kext", "x", "big", "y3"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y1", "y2", "y3")],
        [numpy_helper.from_array(w64, "w64i"), numpy_helper.from_array(big, "big")],
    )
    model = helper.make_model(graph)
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    layers = {l.name: l for l in model_kernels(read_convolutions(tmp_path / "ext.onnx", "onnx")).layers}
    np.testing.assert_array_equal(layers["k16"].kernels, w16.astype(np.float32).reshape(-1, 9))
    np.testing.assert_array_equal(layers["k64"].kernels, w64.astype(np.float32).reshape(-1, 9))
    np.testing.assert_array_equal(layers["kext"].kernels, big.reshape(-1, 9))


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(36, np.float32).tobytes())
    weight = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "144")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [_conv("k", "x", "w", "y")], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
    )
    # written raw: onnx.save itself refuses '..' in locations, a hostile file need not
    (inside / "m.onnx").write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ValueError, match="outside the model's folder"):
        read_convolutions(inside / "m.onnx", "onnx")


def test_format_detection_and_arch_parsing(saved, tmp_path):
    _, paths = saved
    assert {kind: detect_format(p) for kind, p in paths.items()} == {
        "state_dict": "torch", "checkpoint": "torch", "safetensors": "safetensors", "torchscript": "torchscript", "onnx": "onnx"}
    assert parse_arch("zoo:vgg?width=16&name=a") == ("zoo", "vgg", {"width": 16, "name": "a"})
    with pytest.raises(ArchError, match="unknown"):
        parse_arch("os:system?cmd=1")  # a manifest never imports arbitrary modules
    with pytest.raises(ValueError, match="cannot infer"):
        detect_format(tmp_path / "weights.xyz")
