"""Hostile and broken Keras files: each ends as status failed with a one-line reason through the real
extraction, nothing is allocated from a size the file claims, and the good files of the same
manifest are extracted."""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest

DATA = Path(__file__).parent / "data" / "keras"
TB = 2**40


def _central_entry(data: bytes, name: str) -> int:
    """Offset of ``name``'s central-directory entry in a zip archive."""
    offset = data.index(b"PK\x01\x02")
    while True:
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[offset + 28: offset + 34])
        if data[offset + 46: offset + 46 + name_len].decode() == name:
            return offset
        offset = data.index(b"PK\x01\x02", offset + 46 + name_len + extra_len + comment_len)


def _patched_zip(source: Path, target: Path, name: str, field: int, value: int, deflate: bool = False) -> None:
    """A copy of a zip whose central-directory entry for ``name`` says ``value`` at ``field``
    (20: compressed size, 24: uncompressed size)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    data = bytearray(target.read_bytes())
    entry = _central_entry(bytes(data), name)
    data[entry + field: entry + field + 4] = struct.pack("<I", value)
    target.write_bytes(bytes(data))


def _absurd_kernel(path: Path) -> None:
    """The conv1 kernel of a real full-model file replaced by a dataset claiming ~4 TB (no data)."""
    with h5py.File(path, "r+") as f:
        group = f["model_weights/conv1/conv1"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", shape=(3, 3, 2**18, 2**18), dtype="f4")


def _functional(layers: list) -> str:
    return json.dumps({"class_name": "Functional", "config": {"name": "m", "layers": layers, "output_layers": [["b", 0, 0]]}})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_keras")
    (folder / "outside").mkdir()
    model = folder / "models"
    model.mkdir()
    rows = []

    def add(name: str, reason: str, fmt: str = ""):
        rows.append({"path": f"models/{name}", "name": name, "reason": reason, "format": fmt})

    h5, keras = DATA / "mixed_k2.h5", DATA / "mixed_k3.keras"
    shutil.copy(h5, model / "good.h5")
    add("good.h5", "")
    shutil.copy(keras, model / "good.keras")
    add("good.keras", "")
    data = h5.read_bytes()
    for cut in (0.0, 0.001, 0.3, 0.6, 0.97):
        (model / f"cut{cut}.h5").write_bytes(data[: int(len(data) * cut)])
        add(f"cut{cut}.h5", "keras_h5 reader")
    # signature, superblock end-of-file address, a heap; HDF5 1.8 metadata has no checksums, so
    # flips at 100 and 300 (bytes no reader uses) change nothing: the file extracts as the good one
    for offset, reason in ((0, "file signature not found"), (40, "truncated file"), (700, "bad heap free list"), (100, ""), (300, "")):
        flipped = bytearray(data)
        flipped[offset: offset + 4] = bytes(b ^ 0xFF for b in flipped[offset: offset + 4])
        (model / f"flip{offset}.h5").write_bytes(bytes(flipped))
        add(f"flip{offset}.h5", reason)
    shutil.copy(h5, model / "absurd.h5")
    _absurd_kernel(model / "absurd.h5")
    add("absurd.h5", "claims 2,473,901,162,496 bytes but 0 are stored")
    with h5py.File(model / "absurd_weights.h5", "w") as f:  # weights only, written by h5py
        f.attrs["layer_names"] = [b"conv"]
        f.attrs["keras_version"] = b"2.15.0"
        group = f.create_group("conv")
        group.attrs["weight_names"] = [b"conv/kernel:0"]
        group.create_dataset("conv/kernel:0", shape=(3, 3, 2**20, 2**20), dtype="f4")
    add("absurd_weights.h5", "are stored; refused")
    with h5py.File(folder / "outside" / "secret.h5", "w") as f:
        f["kernel:0"] = np.ones((3, 3, 3, 4), np.float32)
    shutil.copy(h5, model / "link.h5")
    with h5py.File(model / "link.h5", "r+") as f:
        del f["model_weights/conv1/conv1"]
        f["model_weights/conv1/conv1"] = h5py.ExternalLink(str(folder / "outside" / "secret.h5"), "/")
    add("link.h5", "is a ExternalLink, not stored data; refused")
    (folder / "outside" / "raw.bin").write_bytes(np.ones(3 * 3 * 3 * 4, np.float32).tobytes())
    shutil.copy(h5, model / "external.h5")
    with h5py.File(model / "external.h5", "r+") as f:
        del f["model_weights/conv1/conv1/kernel:0"]
        f["model_weights/conv1/conv1"].create_dataset("kernel:0", shape=(3, 3, 3, 4), dtype="f4", external=[(str(folder / "outside" / "raw.bin"), 0, 432)])
    add("external.h5", "its data lives in another file; refused")
    for name, config, reason in (
        ("cycle.h5", _functional([
            {"class_name": "Conv2D", "config": {"name": "a"}, "inbound_nodes": [[["b", 0, 0, {}]]]},
            {"class_name": "Conv2D", "config": {"name": "b"}, "inbound_nodes": [[["a", 0, 0, {}]]]},
        ]), "the layer graph has a cycle"),
        ("garbage_config.h5", "{not json", "model_config attribute is not valid JSON"),
        ("deep_config.h5", "[" * 100000 + "]" * 100000, "model_config attribute is not valid JSON"),
    ):
        shutil.copy(h5, model / name)
        with h5py.File(model / name, "r+") as f:
            f.attrs["model_config"] = config
        add(name, reason)
    shutil.copy(h5, model / "keras1.h5")
    with h5py.File(model / "keras1.h5", "r+") as f:
        f.attrs["keras_version"] = "1.2.2"
    add("keras1.h5", "Keras 1 kernel layouts are not read")
    with h5py.File(model / "plain.h5", "w") as f:
        f["x"] = np.zeros((3, 3, 3, 4), np.float32)
    add("plain.h5", "not a Keras model")

    kdata = keras.read_bytes()
    (model / "cut.keras").write_bytes(kdata[: len(kdata) // 2])
    add("cut.keras", "the zip is damaged")
    with zipfile.ZipFile(keras) as archive:
        info = archive.getinfo("model.weights.h5")
        name_len, extra_len = struct.unpack("<HH", kdata[info.header_offset + 26: info.header_offset + 30])
        start = info.header_offset + 30 + name_len + extra_len
    flipped = bytearray(kdata)
    flipped[start + info.file_size // 2] ^= 0xFF
    (model / "flip.keras").write_bytes(bytes(flipped))
    add("flip.keras", "model.weights.h5 fails its CRC-32 check", "keras")
    _patched_zip(keras, model / "bomb.keras", "model.weights.h5", 24, 0xF0000000, deflate=True)
    add("bomb.keras", "claims 4,026,531,840 bytes from")
    _patched_zip(keras, model / "stored_lie.keras", "model.weights.h5", 24, 0xF0000000)
    add("stored_lie.keras", "is stored but claims 4,026,531,840 bytes")
    _patched_zip(keras, model / "past_end.keras", "model.weights.h5", 20, 0xF0000000)
    add("past_end.keras", "past the end of the")
    _patched_zip(keras, model / "config_bomb.keras", "config.json", 24, 0xF0000000, deflate=True)
    add("config_bomb.keras", "config.json claims 4,026,531,840 bytes")
    with zipfile.ZipFile(model / "no_weights.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    add("no_weights.keras", "no model.weights.h5 member", "keras")
    pd.DataFrame(rows).drop(columns="reason").to_csv(folder / "manifest.csv", index=False)
    return folder, rows


def test_every_hostile_keras_file_fails_with_a_one_line_reason_and_the_good_ones_extract(hostile, tmp_path):
    folder, rows = hostile
    report = run_extraction(plan_extraction(read_manifest(folder / "manifest.csv"), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    good = [row["name"] for row in rows if not row["reason"]]
    assert len(models) == len(rows) and report.n_failed == len(rows) - len(good)
    for row in rows:
        status, error = models.at[row["name"], "status"], str(models.at[row["name"], "error"])
        if not row["reason"]:
            assert status == "ok" and models.at[row["name"], "n_filters"] > 0, error
            same_as = "good.h5" if row["name"].endswith(".h5") else "good.keras"
            assert models.at[row["name"], "n_filters"] == models.at[same_as, "n_filters"]
            continue
        assert status == "failed", (row["name"], error)
        assert row["reason"] in error, (row["name"], error)
        assert "\n" not in error and len(error) < 400, (row["name"], error)
