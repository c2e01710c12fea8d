"""Hostile and broken Paddle files: pickles that try to run code (nothing runs), cut and bit-flipped
``.pdparams`` / ``.pdmodel`` / ``.pdiparams``, tensor headers claiming absurd shapes or bytes past
the end, a parameters file that leaves the model's folder. Each ends as status failed with a
one-line reason through the real extraction while the good files beside them extract, and memory
stays bounded."""

from __future__ import annotations

import os
import pickle
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
from filtershift.readers import read_convolutions
from tests.bitflips import failures_of_flipped
from tests.paddle_writer import tensor_bytes

DATA = Path(__file__).parent / "data" / "paddle"


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path, how: str = "system"):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "eval":
            return (eval, (f"__import__('os').system('touch {self.marker}')",))
        return (os.system, (f"touch {self.marker}",))


def fixture_tensors() -> list[tuple[str, np.ndarray]]:
    """The fp32 fixture's persistable tensors by parameter name, in save_combine's (sorted) order."""
    saved = np.load(DATA / "convs.npz")
    names = dict(pair.split("=") for pair in saved["__names__"])
    return sorted((param, saved[key]) for key, param in names.items())


def params_bytes(tensors: list[tuple[str, np.ndarray]]) -> bytes:
    return b"".join(tensor_bytes(a.shape, 5, a.astype("<f4").tobytes()) for _, a in tensors)


def test_the_layout_written_here_is_the_frameworks():
    assert params_bytes(fixture_tensors()) == (DATA / "convs.pdiparams").read_bytes()


def _pdiparams_cases(tensors) -> dict[str, tuple[bytes, str]]:
    good = params_bytes(tensors)
    first_conv = next(i for i, (_, a) in enumerate(tensors) if a.ndim == 4)
    sizes = [len(tensor_bytes(a.shape, 5, a.tobytes())) for _, a in tensors]
    start = sum(sizes[:first_conv])

    def replaced(piece: bytes) -> bytes:
        return good[:start] + piece + good[start + sizes[first_conv]:]

    name, weight = tensors[first_conv]
    data = weight.astype("<f4").tobytes()
    return {
        "cut_mid": (good[: start + sizes[first_conv] // 2], "but only"),
        "cut_header": (good[: start + 6], "the .pdiparams ends inside tensor"),
        "cut_whole": (good[:start], f"holds {first_conv} tensors but the program declares {len(tensors)}"),
        "huge_shape": (replaced(tensor_bytes((2**20, 2**20, 3, 3), 5, data)), "claims 39,582,418,599,936 bytes, but only"),
        "negative_dims": (replaced(tensor_bytes((-1, 3, 3, 3), 5, data)), "impossible shape"),
        "lod_past_end": (replaced(tensor_bytes(weight.shape, 5, data, lod=[b""])[:4] + struct.pack("<QQ", 1, 2**60) + data), "LoD claims 1,152,921,504,606,846,976 bytes"),
        "desc_past_end": (replaced(tensor_bytes(weight.shape, 5, data, desc_size=2**31 - 1)), "description claims 2,147,483,647 bytes"),
        "bad_version": (replaced(tensor_bytes(weight.shape, 5, data, version=7)), "has version 7, not 0"),
        "bad_dtype": (replaced(tensor_bytes(weight.shape, 99, data)), "has data type 99"),
        "extra": (good + tensor_bytes((2,), 5, b"\0" * 8), f"holds {len(tensors) + 1} tensors but the program declares {len(tensors)}"),
        "wrong_shape": (replaced(tensor_bytes(weight.shape[::-1], 5, data)), f"tensor {name!r} has shape"),
        "int8_filter": (replaced(tensor_bytes(weight.shape, 21, b"\1" * weight.size)), "with no dequantize_linear op"),
    }


def _pdparams_cases(marker: Path) -> dict[str, tuple[bytes, str]]:
    good = (DATA / "convs.pdparams").read_bytes()
    zeros = np.zeros((8, 3, 3, 3), np.float32)
    proto2 = pickle.dumps({"conv.weight": zeros}, protocol=2)
    shape = b"K\x08K\x03K\x03K\x03"
    assert proto2.count(shape) == 1
    cases = {
        "evil": (pickle.dumps({"conv.weight": zeros, "evil": Payload(marker)}, protocol=4), "calls posix.system"),
        "evil_eval": (pickle.dumps(Payload(marker, "eval"), protocol=2), "calls builtins.eval"),
        # what paddle.save writes for a raw static-graph DenseTensor: eval('data', {'data': array})
        "paddle_eval": (pickle.dumps({"w": _Reduce(eval, ("data", {"data": zeros}))}, protocol=4), "calls builtins.eval"),
        "a_class": (pickle.dumps({"w": pd.Timestamp(0)}, protocol=4), "refused to unpickle"),
        "absurd_shape": (proto2.replace(shape, b"J\xff\xff\xff\x7fJ\xff\xff\xff\x7fK\x03K\x03"), "an array of absurd shape"),
        "short_data": (proto2.replace(shape, b"K\x09K\x03K\x03K\x03"), "whose data is 864 bytes, not 972"),
        "object_dtype": (proto2.replace(b"X\x02\x00\x00\x00f4", b"X\x02\x00\x00\x00O8"), "not a plain number type"),
        "empty": (b"", "the file is empty"),
        "not_a_dict": (pickle.dumps([1, 2, 3], protocol=4), "no state dict found"),
        "garbage": (b"\x80\x04" + bytes(range(256)) * 4, "truncated or corrupt .pdparams pickle"),
    }
    for fraction in (0.001, 0.3, 0.6, 0.99):
        cases[f"cut{fraction}"] = (good[: int(len(good) * fraction)], "truncated or corrupt .pdparams pickle")
    return cases


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_paddle")
    models, outside = folder / "models", folder / "outside"
    models.mkdir()
    outside.mkdir()
    marker = folder / "PAYLOAD_RAN"
    rows = []

    def add(path: Path, reason: str):
        rows.append({"path": str(path), "name": path.name, "reason": reason})

    for name in ("convs.pdparams", "convs.pdmodel", "convs.json"):
        add(Path(shutil.copy(DATA / name, models / f"good_{name}")), "")
    for stem in ("good_convs",):
        shutil.copy(DATA / "convs.pdiparams", models / f"{stem}.pdiparams")
    program = (DATA / "convs.pdmodel").read_bytes()
    for name, (params, reason) in _pdiparams_cases(fixture_tensors()).items():
        (models / f"{name}.pdiparams").write_bytes(params)
        (models / f"{name}.pdmodel").write_bytes(program)
        add(models / f"{name}.pdmodel", reason)
    for name, (data, reason) in {
        "cut_model": (program[: len(program) // 2], "truncated protobuf message"),
        "garbage_model": (b"\xff" * 64, "protobuf"),
        "no_ops_model": (b"\x0a\x02\x08\x00", "holds no program block with ops"),
        # field 1 (blocks) as a varint of 2**48: never memoryview(int), which would allocate it
        "number_block": (b"\x08\x80\x80\x80\x80\x80\x80\x40", "a number where a nested message belongs"),
        "cut_pir": ((DATA / "convs.json").read_bytes()[:5000], "is not a readable PIR program"),
        "deep_pir": (b'{"base_code": {"magic": "pir"}, "program": ' + b"[" * 100000 + b"]" * 100000 + b"}", "is not a readable PIR program (RecursionError"),
    }.items():
        suffix = ".json" if "pir" in name else ".pdmodel"
        (models / f"{name}{suffix}").write_bytes(data)
        shutil.copy(DATA / "convs.pdiparams", models / f"{name}.pdiparams")
        add(models / f"{name}{suffix}", reason)
    (models / "lonely.pdmodel").write_bytes(program)
    add(models / "lonely.pdmodel", "no lonely.pdiparams beside lonely.pdmodel")
    (models / "escape.pdmodel").write_bytes(program)
    shutil.copy(DATA / "convs.pdiparams", outside / "secret.pdiparams")
    (models / "escape.pdiparams").symlink_to(outside / "secret.pdiparams")
    add(models / "escape.pdmodel", "outside the model's folder")
    for name, (data, reason) in _pdparams_cases(marker).items():
        (models / f"{name}.pdparams").write_bytes(data)
        add(models / f"{name}.pdparams", reason)
    return folder, rows, marker


def test_every_hostile_paddle_file_fails_with_a_one_line_reason_and_the_good_ones_extract(hostile, tmp_path):
    folder, rows, marker = hostile
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).drop(columns="reason").to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert not marker.exists(), "a pickle's payload ran"
    models = store.open_database(tmp_path / "db").models.set_index("name")
    good = [row["name"] for row in rows if not row["reason"]]
    assert report.n_failed == len(rows) - len(good)
    for row in rows:
        status, error = models.at[row["name"], "status"], str(models.at[row["name"], "error"])
        if not row["reason"]:
            assert status == "ok" and models.at[row["name"], "n_filters"] > 0, error
            continue
        assert status == "failed", (row["name"], error)
        assert row["reason"] in error, (row["name"], error)
        assert "\n" not in error and len(error) < 400, (row["name"], error)


def test_hostile_files_are_refused_within_bounded_memory(hostile):
    folder, rows, marker = hostile
    tracemalloc.start()
    try:
        for row in rows:
            if row["reason"] and "outside" not in row["reason"]:
                fmt = "paddle_params" if row["name"].endswith(".pdparams") else "paddle_inference"
                with pytest.raises(ValueError):
                    read_convolutions(Path(row["path"]), fmt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak:,} bytes at the peak for files of ~20 KB"
    assert not marker.exists()


@pytest.mark.parametrize("target", ["convs.pdparams", "convs.pdmodel", "convs.pdiparams", "convs.json"])
def test_bit_flips_end_as_a_one_line_reason_or_a_read(target, tmp_path):
    for name in ("convs.pdmodel", "convs.pdiparams", "convs.json", "convs.pdparams"):
        shutil.copy(DATA / name, tmp_path / name)
    data = (DATA / target).read_bytes()
    fmt = "paddle_params" if target.endswith(".pdparams") else "paddle_inference"
    read_path = tmp_path / (target if fmt == "paddle_params" or not target.endswith(".pdiparams") else "convs.pdmodel")
    failures_of_flipped(data, tmp_path / target, lambda: read_convolutions(read_path, fmt), count=40, seed=sum(map(ord, target)))
