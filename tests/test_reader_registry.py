"""The readers' registry: detection by content, models made of several files, companion paths
kept inside the model's folder, and the protobuf wire decoder the protobuf formats share."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper

from filtershift.readers import detect_format, model_files
from filtershift.readers import protowire as pw
from filtershift.readers.files import fingerprint, folder_files, inside, read_range, sha256_model

from tests.nets import make_model, save_all_formats


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    return folder, save_all_formats(make_model(0), folder, "m")


def test_formats_are_detected_by_content_whatever_the_suffix(saved, tmp_path):
    _, paths = saved
    for kind, expected in {"state_dict": "torch", "checkpoint": "torch", "safetensors": "safetensors", "torchscript": "torchscript"}.items():
        renamed = tmp_path / f"{kind}.weights"
        shutil.copy(paths[kind], renamed)
        assert detect_format(renamed) == expected, kind
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)  # no content claims it: the suffix decides
    assert detect_format(tmp_path / "junk.pt") == "torch"
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(ValueError, match="cannot infer the format of the folder folder.pt"):
        detect_format(tmp_path / "folder.pt")


def test_one_file_keeps_its_plain_sha256_and_several_files_hash_together(saved, tmp_path):
    _, paths = saved
    one = paths["onnx"]
    assert model_files(one, "onnx") == [one]
    assert sha256_model(one, [one]) == hashlib.sha256(one.read_bytes()).hexdigest()  # databases stay valid
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "graph.pb").write_bytes(b"graph")
    (model / "variables" / "data").write_bytes(b"weights")
    files = model_files(model, "")
    assert files == [model / "graph.pb", model / "variables" / "data"]
    before, stamp = sha256_model(model, files), fingerprint(files)
    assert stamp[0] == len(b"graph") + len(b"weights")
    (model / "variables" / "data").write_bytes(b"weightz")  # one shard changed: the model changed
    assert sha256_model(model, files) != before


def test_companion_paths_never_leave_the_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(bytes(range(16)))
    assert inside(folder, "w.bin") == (folder / "w.bin").resolve()
    for hostile in ("../secret", "/etc/passwd", "", "a/../../x"):
        with pytest.raises(ValueError, match="refused"):
            inside(folder, hostile, "weights file")
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", folder / "link")
    with pytest.raises(ValueError, match="outside the model's folder"):
        inside(folder, "link")
    with pytest.raises(ValueError, match="links outside"):
        folder_files(folder)
    assert read_range(folder / "w.bin", 4, 4) == bytes([4, 5, 6, 7])
    with pytest.raises(ValueError, match="past the end of w.bin"):
        read_range(folder / "w.bin", 12, 8, "tensor w")


def test_protowire_reads_what_protobuf_wrote_and_refuses_what_runs_past_the_end():
    values = np.linspace(-1, 1, 12, dtype=np.float32)
    tensor = helper.make_tensor("conv.weight", TensorProto.FLOAT, [3, 1, 2, 2], values)
    tensor.dims[1] = -7  # a negative int64: ten varint bytes
    data = tensor.SerializeToString()
    message = pw.parse(data)
    assert pw.repeated_ints(message, 1) == [3, -7, 2, 2]  # dims (packed int64)
    assert pw.first(message, 2) == TensorProto.FLOAT
    np.testing.assert_array_equal(pw.repeated_floats(message, 4), values)
    assert pw.text(pw.first(message, 8)) == "conv.weight"
    assert pw.signed(2**64 - 5) == -5 and pw.signed(2**32 - 1, 32) == -1
    for cut in range(1, len(data)):
        try:
            pw.parse(data[:cut])
        except ValueError as exc:
            assert "protobuf" in str(exc)
    with pytest.raises(ValueError, match="claims"):
        pw.parse(b"\x0a\xff\xff\xff\xff\x0f" + b"x")  # a field claiming 4 GB in 7 bytes
    with pytest.raises(ValueError, match="wire type"):
        pw.parse(b"\x0b")
