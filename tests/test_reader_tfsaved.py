"""TensorFlow SavedModels and TF2 checkpoints, read without TensorFlow: the fixtures written by
TensorFlow 2.21 (tests/data/make_tfsaved_fixtures.py) against the weights TensorFlow reported, and
hostile bundles through the real extraction."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, model_files, read_convolutions
from tests.protobuf_writer import field as _field
from tests.protobuf_writer import varint as _varint

DATA = Path(__file__).parent / "data" / "tfsaved"
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# (reader's name, level, groups, key in the framework's .npz, depthwise?) in execution order; the
# transposed conv (up) is excluded; left and right read one tensor and share a level.
MODULE = [("stem", 0, 1, "stem", False), ("dw", 1, 4, "dw", True), ("sep_dw", 2, 8, "sep_dw", True), ("sep_pw", 3, 1, "sep_pw", False),
          ("left", 4, 1, "left", False), ("right", 4, 1, "right", False), ("five", 5, 1, "five", False)]
KERAS_NAMES = ["stem/kernel", "dw/depthwise_kernel", "sep/depthwise_kernel", "sep/pointwise_kernel", "left/kernel", "right/kernel", "five/kernel"]
TFKERAS_KEYS = ["layer_with_weights-0/kernel", "layer_with_weights-1/depthwise_kernel", "layer_with_weights-2/depthwise_kernel",
                "layer_with_weights-2/pointwise_kernel", "layer_with_weights-3/kernel", "layer_with_weights-4/kernel", "layer_with_weights-5/kernel"]


def expected(name: str) -> list[tuple]:
    if name == "module_sm":
        return [(n, lv, g, k + SUFFIX, d) for n, lv, g, k, d in MODULE]
    if name == "keras_export":  # Keras 3 names its depthwise layer's kernel "kernel"
        names = [n.replace("dw/depthwise_kernel", "dw/kernel") for n in KERAS_NAMES]
        return [(n, lv, g, n, d) for n, (_, lv, g, _, d) in zip(names, MODULE)]
    return [(n, lv, g, k + SUFFIX, d) for n, k, (_, lv, g, _, d) in zip(KERAS_NAMES, TFKERAS_KEYS, MODULE)]


def as_oihw(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """The framework's kernel, element by element: HWIO (o, i) = K[:, :, i, o]; depthwise (H, W, C, M)
    out channel c*M + m = K[:, :, c, m]."""
    h, w, a, b = kernel.shape
    if depthwise:
        out = np.empty((a * b, 1, h, w), np.float32)
        for c in range(a):
            for m in range(b):
                out[c * b + m, 0] = kernel[:, :, c, m]
        return out
    out = np.empty((b, a, h, w), np.float32)
    for o in range(b):
        for i in range(a):
            out[o, i] = kernel[:, :, i, o]
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tfsaved")
    for name in ("module_sm", "keras_export", "tfkeras_sm", "tf1_sm"):
        with tarfile.open(DATA / f"{name}.tar.xz") as archive:
            archive.extractall(folder, filter="data")
    shutil.copytree(DATA / "ckpt", folder / "ckpt")
    return folder


@pytest.mark.parametrize("name", ["module_sm", "keras_export", "tfkeras_sm"])
def test_savedmodels_give_the_frameworks_kernels_in_graph_order(models, name):
    folder = models / name
    assert detect_format(folder) == "savedmodel"
    convs = read_convolutions(folder, "savedmodel")
    reference = np.load(DATA / f"{name}.npz")
    assert [(c.name, c.level, c.groups) for c in convs] == [(n, lv, g) for n, lv, g, _, _ in expected(name)]
    for conv, (_, _, _, key, depthwise) in zip(convs, expected(name)):
        assert conv.weight.dtype == np.float32
        np.testing.assert_array_equal(conv.weight, as_oihw(reference[key], depthwise))
    assert model_files(folder, "savedmodel")[-1].name == "variables.index"


def test_a_tf1_savedmodel_is_walked_over_its_top_level_graph(models):
    convs = read_convolutions(models / "tf1_sm", "savedmodel")
    reference = np.load(DATA / "tf1_sm.npz")
    assert [(c.name, c.level, c.groups) for c in convs] == [("stem/kernel", 0, 1), ("dw/depthwise_kernel", 1, 4), ("head/kernel", 2, 1)]
    for conv in convs:
        np.testing.assert_array_equal(conv.weight, as_oihw(reference[conv.name], conv.groups > 1))


def test_a_checkpoint_is_read_by_the_name_and_shape_rule(models):
    index = models / "ckpt" / "net.index"
    assert detect_format(index) == "tf_checkpoint"
    assert model_files(index, "tf_checkpoint") == [index, (models / "ckpt" / "net.data-00000-of-00001").resolve()]
    convs = read_convolutions(index, "tf_checkpoint")
    reference = np.load(DATA / "ckpt.npz")
    names = ["stem", "dw", "sep_dw", "sep_pw", "left", "right", "five", "up"]  # declaration order; "up" (transposed) has a neutral name: counted
    assert [c.name for c in convs] == [f"net/{n}" for n in names]
    assert [c.level for c in convs] == list(range(8)) and {c.groups for c in convs} == {-1}
    for conv, name in zip(convs, names):  # no name says depthwise: every kernel is taken as HWIO
        np.testing.assert_array_equal(conv.weight, as_oihw(reference[f"net/{name}{SUFFIX}"], False))
    keras = read_convolutions(models / "tfkeras_sm" / "variables" / "variables.index", "tf_checkpoint")
    assert [(c.name, c.groups) for c in keras][:3] == [(TFKERAS_KEYS[0], -1), (TFKERAS_KEYS[1], 4), (TFKERAS_KEYS[2], 8)]
    exported = read_convolutions(models / "keras_export" / "variables" / "variables.index", "tf_checkpoint")
    assert len(exported) == 8  # each variable is stored twice in a Keras 3 export: counted once


def test_extraction_stores_the_savedmodel_and_checkpoint_kernels(models, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,name\n{models / 'module_sm'},module\n{models / 'ckpt' / 'net.index'},ckpt\n{models / 'tfkeras_sm'},tfkeras\n")
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    counts = db.models.set_index("name")[["format", "n_layers", "n_filters"]].to_dict("index")
    assert counts == {  # 3x3 layers: stem 4*3, dw 8, sep_dw 8, left 3*6 (+ up 4*2 in the checkpoint)
        "module": {"format": "savedmodel", "n_layers": 4, "n_filters": 46},
        "tfkeras": {"format": "savedmodel", "n_layers": 4, "n_filters": 46},
        "ckpt": {"format": "tf_checkpoint", "n_layers": 5, "n_filters": 54},
    }
    ids = db.models.set_index("name")["model_id"]
    module = db.layers[db.layers["model_id"] == ids["module"]]
    assert list(module["conv_index"]) == [0, 1, 2, 4] and list(module["groups"]) == [1, 4, 8, 1] and (module["n_conv"] == 6).all()
    filters = db.filters().compute()
    stem = module.iloc[0]
    reference = np.load(DATA / "module_sm.npz")[f"stem{SUFFIX}"]
    np.testing.assert_array_equal(filters[stem.start:stem.stop], as_oihw(reference, False).reshape(-1, 9))


# ----------------------------------------------------------------------------------------------
# Hostile bundles, written by a table writer of the test's own


def _masked(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_bundle(prefix: Path, entries: dict[str, tuple], shards: int = 1) -> None:
    """An index of ``{key: (shape, offset, size)}`` float32 entries (one block each level)."""
    def block(items):
        body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items) + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
        return body, body + b"\x00" + _masked(body + b"\x00").to_bytes(4, "little")

    items = [(b"", _field(1, shards))]
    for key, (shape, offset, size) in sorted(entries.items()):
        dims = b"".join(_field(2, _field(1, d)) for d in shape)
        items.append((key.encode(), _field(1, 1) + _field(2, dims) + _field(4, offset) + _field(5, size)))
    data_body, data = block(items)
    index_body, index = block([(b"\xff", _varint(0) + _varint(len(data_body)))])
    meta_body, meta = block([])
    footer = _varint(len(data) + len(index)) + _varint(len(meta_body)) + _varint(len(data)) + _varint(len(index_body))
    footer += b"\x00" * (40 - len(footer)) + (0xDB4775248B80FB57).to_bytes(8, "little")
    prefix.with_name(prefix.name + ".index").write_bytes(data + index + meta + footer)


@pytest.fixture(scope="module")
def hostile(models, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_tf")
    shutil.copytree(models / "module_sm", folder / "good_sm")
    shutil.copytree(models / "ckpt", folder / "good")
    index = (models / "ckpt" / "net.index").read_bytes()
    shard = (models / "ckpt" / "net.data-00000-of-00001").read_bytes()
    rows = {"good_sm": "good_sm", "good": "good/net.index"}

    def checkpoint(name: str, index_bytes: bytes, shard_bytes: bytes = shard) -> None:
        (folder / name).mkdir()
        (folder / name / "net.index").write_bytes(index_bytes)
        (folder / name / "net.data-00000-of-00001").write_bytes(shard_bytes)
        rows[name] = f"{name}/net.index"

    checkpoint("truncated_index", index[: len(index) // 2])
    checkpoint("cut_keeping_magic", index[:300] + index[-48:])  # the footer kept: its handles point past the end
    flipped = bytearray(index)
    flipped[40] ^= 0x10  # inside the data block
    checkpoint("flipped_index", bytes(flipped))
    bad_shard = bytearray(shard)
    bad_shard[100] ^= 0x01  # inside the first tensor (stem)
    checkpoint("flipped_shard", index, bytes(bad_shard))
    checkpoint("truncated_shard", index, shard[:1000])
    for name, entries, shards in (
        ("offset_past_end", {"conv/kernel": ((3, 3, 3, 4), 10**12, 432)}, 1),
        ("absurd_shape", {"conv/kernel": ((100_000, 100_000, 3, 3), 0, 432)}, 1),
        ("claims_gigabytes", {"conv/kernel": ((2**15, 2**15, 3, 3), 0, 4 * 9 * 2**30)}, 1),
        ("missing_shards", {"conv/kernel": ((3, 3, 3, 4), 0, 432)}, 7),
    ):
        (folder / name).mkdir()
        write_bundle(folder / name / "net", entries, shards)
        (folder / name / "net.data-00000-of-00001").write_bytes(shard[:432])
        rows[name] = f"{name}/net.index"
    shutil.copytree(models / "module_sm", folder / "sm_shard_outside")
    outside = folder / "sm_shard_outside" / "variables" / "variables.data-00000-of-00001"
    shutil.move(outside, folder / "elsewhere.data")
    outside.symlink_to(folder / "elsewhere.data")
    rows["sm_shard_outside"] = "sm_shard_outside"
    shutil.copytree(models / "module_sm", folder / "sm_truncated_graph")
    graph = folder / "sm_truncated_graph" / "saved_model.pb"
    graph.write_bytes(graph.read_bytes()[:5000])
    rows["sm_truncated_graph"] = "sm_truncated_graph"
    (folder / "manifest.csv").write_text("path,name\n" + "".join(f"{folder / p},{n}\n" for n, p in rows.items()))
    return folder


def test_hostile_bundles_fail_alone_with_a_one_line_reason(hostile, tmp_path):
    report = run_extraction(plan_extraction(read_manifest(hostile / "manifest.csv"), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    expect = {
        "good_sm": "", "good": "",
        "truncated_index": "no table magic at its end",
        "cut_keeping_magic": "runs past the table's 348 bytes",
        "flipped_index": "fails its CRC-32C check (a corrupt index)",
        "flipped_shard": "tensor 'net/stem/.ATTRIBUTES/VARIABLE_VALUE': its stored bytes fail their CRC-32C check",
        "truncated_shard": "past the end of net.data-00000-of-00001",
        "offset_past_end": "bytes 1,000,000,000,000..1,000,000,000,432 lie past the end",
        "absurd_shape": "does not fit its 432 stored bytes",
        "claims_gigabytes": "lie past the end of net.data-00000-of-00001",
        "missing_shards": "data shard net.data-00000-of-00007 is missing",
        "sm_shard_outside": "outside the model's folder",
        "sm_truncated_graph": "truncated protobuf message",
    }
    assert report.n_failed == len(expect) - 2
    for name, reason in expect.items():
        status, error = models.at[name, "status"], models.at[name, "error"]
        assert status == ("ok" if not reason else "failed"), (name, error)
        assert reason in (error or ""), (name, error)
        assert "\n" not in (error or "")
