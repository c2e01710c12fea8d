"""Hostile and broken Flax msgpack files: each ends as status failed with a one-line reason through
the real extraction, nothing is allocated from a size the file claims, and the good checkpoint of
the same manifest is extracted."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import msgpack
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import read_convolutions
from tests.bitflips import failures_of_flipped

DATA = Path(__file__).parent / "data" / "flax"
GOOD = DATA / "mixed_f32.msgpack"


def _tree() -> dict:
    """The good file's tree with its arrays left as raw extension values (repacked as they were)."""
    return msgpack.unpackb(GOOD.read_bytes(), ext_hook=msgpack.ExtType, raw=False)


def _with_kernel(value) -> bytes:
    """The good file with Conv_0's kernel replaced by ``value``."""
    tree = _tree()
    tree["params"]["Conv_0"]["kernel"] = value
    return msgpack.packb(tree)


def _array(shape, dtype: str, buffer: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([list(shape), dtype, buffer], use_bin_type=True))


def _nested(depth: int) -> bytes:
    inner = {"kernel": _array((3, 3, 1, 1), "float32", bytes(36))}
    for k in range(depth):
        inner = {f"conv{k}": inner}
    return msgpack.packb(inner)


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, a phrase its failure must hold); an empty phrase: it extracts as the good one."""
    data = GOOD.read_bytes()
    files = {f"cut{cut}.msgpack": (data[: int(len(data) * cut)], "not a readable msgpack file") for cut in (0.001, 0.3, 0.6, 0.97)}
    files["empty.msgpack"] = (b"", "is empty")
    dtype_at = data.index(b"float32")
    weight_at = data.index(b"kernel") + 40  # inside Conv_0's kernel bytes
    for name, at, reason in (
        ("flip_top", 0, "received extra data"),  # the top map's header becomes an integer, the rest extra data
        ("flip_dtype", dtype_at + 3, "are not read (float32, float16"),
        ("flip_map_header", data.index(b"params") - 1, "not a readable msgpack file"),  # a key's length byte
        ("flip_weight", weight_at, ""),  # msgpack has no checksum: a weight's bits change unseen
    ):
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        files[f"{name}.msgpack"] = (bytes(flipped), reason)
    tb = 2**40
    files.update({
        "huge_shape.msgpack": (_with_kernel(_array((3, 3, 2**20, 2**20), "float32", bytes(16))), "claims 39,582,418,599,936 bytes but 16 are stored"),
        "negative_shape.msgpack": (_with_kernel(_array((3, 3, -1, 4), "float32", bytes(16))), "is not a list of sizes"),
        "object_dtype.msgpack": (_with_kernel(_array((3, 3, 1, 1), "object", bytes(72))), "weights of dtype 'object' are not read"),
        "bin_lie.msgpack": (_with_kernel(msgpack.ExtType(1, b"\x93" + msgpack.packb([3, 3, 1, 1]) + msgpack.packb("float32")
                                                         + b"\xc6\x7f\xff\xff\xff" + bytes(36))),
                            "its array's bin claims 2,147,483,647 bytes but its extension holds 36"),
        "not_an_array.msgpack": (_with_kernel(msgpack.ExtType(1, msgpack.packb([[3, 3], 1]))), "not [shape, dtype, bytes]"),
        "chunk_lie.msgpack": (_with_kernel({"__msgpack_chunked_array__": True, "shape": {"0": tb, "1": 3, "2": 3, "3": 3},
                                            "chunks": {"0": _array((9,), "float32", bytes(36))}}), "chunks hold 9; refused"),
        "huge_map.msgpack": (b"\x81\xa6params\xdf\x80\x00\x00\x00" + bytes(64), "exceeds max_map_len"),  # a map claiming 2**31 entries
        "huge_bin.msgpack": (b"\x81\xa6params\xc6\xff\xff\xff\xff" + bytes(64), "not a readable msgpack file"),
        "huge_ext.msgpack": (b"\x81\xa6params\xc9\xff\xff\xff\xff\x01" + bytes(64), "exceeds max_ext_len"),
        "deep.msgpack": (_nested(100), "nests deeper than 64 maps"),
        "very_deep.msgpack": (b"\x81\xa1a" * 100_000 + b"\x00", "nest deeper than msgpack's limit"),  # {"a": {"a": ...}}
        "text.msgpack": (b"this is not msgpack at all\n", "not a readable msgpack file"),
        "json.msgpack": (b'{"params": {"conv": {"kernel": [1, 2]}}}', "not a readable msgpack file"),
        "list.msgpack": (msgpack.packb([1, 2, 3]), "not a map of parameters"),
        "bytes_keys.msgpack": (msgpack.packb({b"params": {b"conv": 1}}, use_bin_type=True), "keys that are not text"),
        "trailing.msgpack": (data + b"\x00", "not a readable msgpack file"),
    })
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_flax")
    rows = [{"path": str(folder / "good.msgpack"), "name": "good.msgpack", "reason": ""}]
    shutil.copy(GOOD, folder / "good.msgpack")
    for name, (content, reason) in hostile_files().items():
        (folder / name).write_bytes(content)
        rows.append({"path": str(folder / name), "name": name, "reason": reason})
    pd.DataFrame(rows).drop(columns="reason").to_csv(folder / "manifest.csv", index=False)
    return folder, rows


def test_every_hostile_flax_file_fails_with_a_one_line_reason_and_the_good_one_extracts(hostile, tmp_path):
    folder, rows = hostile
    report = run_extraction(plan_extraction(read_manifest(folder / "manifest.csv"), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    good = [row["name"] for row in rows if not row["reason"]]
    assert len(models) == len(rows) and report.n_failed == len(rows) - len(good)
    for row in rows:
        status, error = models.at[row["name"], "status"], str(models.at[row["name"], "error"])
        if not row["reason"]:
            assert status == "ok" and models.at[row["name"], "n_filters"] == models.at["good.msgpack", "n_filters"] > 0, (row["name"], error)
            continue
        assert status == "failed", (row["name"], error)
        assert row["reason"] in error, (row["name"], error)
        assert "\n" not in error and len(error) < 400, (row["name"], error)


def test_no_hostile_file_makes_the_reader_allocate_what_it_claims(hostile):
    """Each read of a hostile file peaks under 1 MiB of Python and numpy allocations (the files
    claim up to terabytes)."""
    folder, rows = hostile
    for row in rows[1:]:
        tracemalloc.start()
        try:
            read_convolutions(Path(row["path"]), "flax")
        except ValueError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2**20, (row["name"], peak)


def test_bit_flips_never_crash_the_reader(tmp_path):
    """Every 5th byte of a Flax-written file inverted in turn: the reader returns 4-D weights or
    raises ValueError with one line, nothing else."""
    path = tmp_path / "flipped.msgpack"
    assert failures_of_flipped((DATA / "chunked.msgpack").read_bytes(), path, lambda: read_convolutions(path, "flax"), step=5) > 0
