"""Hostile TFLite files: truncated and bit-flipped flatbuffers, offsets and vector lengths pointing
past the end, absurd shapes, a DEQUANTIZE feeding itself. Each ends as status failed with a
one-line reason through the real extraction, nothing is allocated from an unchecked size, and the
good model of the same manifest is extracted."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import flatbuf, read_convolutions
from tests.bitflips import failures_of_flipped

DATA = Path(__file__).parent / "data" / "tflite"


def _model(data: bytes):
    model = flatbuf.root(data, b"TFL3")
    return model, model.tables(2, "subgraphs")[0]


def _first_conv_filter(data: bytes):
    """(subgraph, filter tensor table, index) of the first CONV_2D (operator code 3)."""
    model, graph = _model(data)
    codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in model.tables(1, "codes")]
    op = next(op for op in graph.tables(3, "ops") if codes[op.scalar(0, "I")] == 3)
    t = int(op.numbers(1, "<i4", "inputs")[1])
    return graph, graph.tables(0, "tensors")[t], t


def _producer(graph, t: int):
    return next(op for op in graph.tables(3, "ops") if t in op.numbers(2, "<i4", "outputs"))


def _patch(data: bytes, at: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


def hostile_files(folder: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, a phrase its failure reason must hold)."""
    f32 = (DATA / "convs_float32.tflite").read_bytes()
    offsets = (DATA / "convs_offsets.tflite").read_bytes()
    f16 = (DATA / "convs_float16.tflite").read_bytes()
    sparse = (DATA / "convs_sparse.tflite").read_bytes()
    model, _ = _model(f32)
    buffers = model.tables(4, "buffers")
    _, tensor, _ = _first_conv_filter(f32)
    data_vector = buffers[tensor.scalar(2, "I")]._target(0)
    shape_vector = tensor._target(0)
    offsets_buffer = _model(offsets)[0].tables(4, "buffers")[_first_conv_filter(offsets)[1].scalar(2, "I")]
    sparse_graph, _, t_densified = _first_conv_filter(sparse)
    densify = _producer(sparse_graph, t_densified)
    sparse_filter = sparse_graph.tables(0, "tensors")[int(densify.numbers(1, "<i4", "inputs")[0])]
    graph16, _, t16 = _first_conv_filter(f16)
    dequantize = _producer(graph16, t16)
    return {
        "cut-header": (f32[:6], "is not a TFLite model"),
        "cut-half": (f32[: len(f32) // 2], "lie outside the"),
        "cut-tail": (f32[: len(f32) - 100], "lie outside the"),
        "root-past-end": (_patch(f32, 0, "<I", 0xFFFFFFF0), "lie outside the"),
        "vtable-past-end": (_patch(f32, struct.unpack_from("<I", f32)[0], "<i", -0x7FFFFFF0), "lie outside the"),
        "vector-claims-2GB": (_patch(f32, data_vector, "<I", 0x7FFFFFFF), "2,147,483,647 elements"),
        "absurd-shape": (_patch(f32, shape_vector + 4, "<4i", 2**30, 2**30, 3, 3), "its buffer holds"),
        "offset-past-end": (_patch(offsets, offsets_buffer._field(1), "<Q", 2**40), "lie past the end"),
        "sparse-absurd-dense-shape": (_patch(sparse, sparse_filter._target(0) + 4, "<4i", 2**20, 2**20, 3, 3), "implausibly large"),
        "dequantize-loop": (_patch(f16, dequantize._target(1) + 4, "<i", t16), "computed at run time"),
        "wrong-identifier": (f32[:4] + b"XXXX" + f32[8:], "not a readable TFLite model"),
    }


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_tflite")
    rows = [{"path": DATA / "convs_float32.tflite", "name": "good", "format": "tflite"}]
    for name, (content, _) in hostile_files(folder).items():
        (folder / f"{name}.tflite").write_bytes(content)
        rows.append({"path": folder / f"{name}.tflite", "name": name, "format": "tflite"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_each_hostile_file_fails_with_a_one_line_reason_and_the_good_one_extracts(manifest, tmp_path):
    run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    assert models.at["good", "status"] == "ok"
    for name, (_, phrase) in hostile_files(tmp_path).items():
        error = models.at[name, "error"]
        assert models.at[name, "status"] == "failed", (name, error)
        assert phrase in error and "\n" not in error, (name, error)


@pytest.mark.parametrize("variant", ["float32", "sparse", "int8"])
def test_bit_flips_never_crash_the_reader(variant, tmp_path):
    """Every 17th byte of a converter-written model inverted in turn: the reader returns 4-D float32
    weights or raises ValueError with one line, nothing else."""
    path = tmp_path / "flipped.tflite"
    assert failures_of_flipped((DATA / f"convs_{variant}.tflite").read_bytes(), path, lambda: read_convolutions(path, "tflite"), step=17) > 0
