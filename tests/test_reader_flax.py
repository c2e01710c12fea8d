"""The Flax msgpack reader on files written by Flax itself (tests/data/make_flax_fixtures.py: jax
0.10.2, flax 0.12.8); kernels compared bit for bit with the framework's own params (the ``.npz``
beside each file, in Flax's (H, W, I, O) layout)."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest

from filtershift import store
from filtershift.extraction.extract import plan_extraction, run_extraction
from filtershift.extraction.manifest import read_manifest
from filtershift.readers import HEAD_BYTES, detect_format, flax_msgpack, read_convolutions

DATA = Path(__file__).parent / "data" / "flax"
OTHER_FORMATS = Path(__file__).parent / "data"

# the `mixed` model in creation order: name, level, groups (the rule's), shape (out, in/groups, kh, kw)
MIXED = [
    ("Conv_0", 0, -1, (4, 3, 3, 3)),
    ("dw_conv", 1, 4, (4, 1, 3, 3)),  # depthwise: I = 1 and a depthwise name
    ("Conv_1", 2, -1, (8, 4, 1, 1)),
    ("Conv_2", 3, -1, (4, 8, 5, 5)),
    ("conv_grouped", 4, -1, (4, 2, 3, 3)),  # feature_group_count 2 is not stored: unknown
]  # ConvTranspose_0, attn_out (a 4-D DenseGeneral kernel) and Dense_0 are left out
SORTED = ["Conv_0", "Conv_1", "Conv_2", "conv_grouped", "dw_conv"]  # msgpack_serialize sorts keys (JAX tree_map)
HF = [
    "embeddings/patch_embeddings/projection", "encoder/layers/0/convolution", "encoder/layers/0/shortcut/convolution",
    "encoder/layers/1/convolution", "encoder/layers/1/shortcut/convolution", "downsample",
]


def reference(kernel: np.ndarray) -> np.ndarray:
    """(out, in/groups, kh, kw), element by element: kernel (o, i) = K[:, :, i, o]."""
    kh, kw, i_n, o_n = kernel.shape
    out = np.empty((o_n, i_n, kh, kw), kernel.dtype)
    for o in range(o_n):
        for i in range(i_n):
            out[o, i] = kernel[:, :, i, o]
    return out


def same_bits(weight: np.ndarray, kernel: np.ndarray, name: str) -> None:
    """The reader's weight equals the framework's kernel transposed, bit for bit in its own dtype
    (bfloat16 kernels are kept as float32 in the npz: the cast is exact both ways)."""
    if weight.dtype.name == "bfloat16":
        weight = weight.astype(np.float32)
    assert weight.dtype == kernel.dtype, name
    np.testing.assert_array_equal(weight.view(np.uint8), np.ascontiguousarray(reference(kernel)).view(np.uint8), err_msg=name)


@pytest.mark.parametrize("file, npz, dtype, prefix, order", [
    ("mixed_f32.msgpack", "mixed_f32", "float32", "", None),
    ("mixed_f16.msgpack", "mixed_f16", "float16", "", None),
    ("mixed_bf16.msgpack", "mixed_bf16", "bfloat16", "", None),
    ("mixed_bare.msgpack", "mixed_f32", "float32", "", None),  # a bare params tree (as Hugging Face saves)
    ("chunked.msgpack", "mixed_f32", "float32", "", SORTED),  # Conv_0 and Conv_2 in Flax's chunked form
    ("custom.msgpack", "custom", "float32", "model/", None),  # params under 'model', beside EMA and optimizer copies
])
def test_every_convolution_matches_the_frameworks_weights_bit_for_bit(file, npz, dtype, prefix, order):
    params = np.load(DATA / f"{npz}.npz")
    convs = read_convolutions(DATA / file, "flax")
    expected = {name: (groups, shape) for name, _, groups, shape in MIXED}
    names = order or [name for name, *_ in MIXED]
    assert [c.name for c in convs] == [prefix + n for n in names]
    for level, (conv, name) in enumerate(zip(convs, names)):
        assert conv.weight.dtype.name == dtype and (conv.level, conv.groups, conv.weight.shape) == (level, *expected[name]), name
        same_bits(conv.weight, params[f"{name}/kernel"], name)


def test_chunked_file_holds_flax_chunked_arrays():
    tree = flax_msgpack.load_tree(DATA / "chunked.msgpack")
    for layer, n_chunks in (("Conv_0", 2), ("Conv_2", 13)):
        kernel = tree["params"][layer]["kernel"]
        assert kernel[flax_msgpack.CHUNKED] is True and len(kernel["chunks"]) == n_chunks, layer
    assert isinstance(tree["params"]["Conv_1"]["kernel"], flax_msgpack.Leaf)  # 128 bytes: not chunked


def test_a_sorted_trainstate_is_read_in_natural_order_and_its_optimizer_state_never(monkeypatch):
    tree = flax_msgpack.load_tree(DATA / "trainstate.msgpack")
    assert list(tree) == ["step", "params", "opt_state"] and list(tree["params"])[:4] == ["Conv_0", "Conv_1", "Conv_10", "Conv_11"]
    assert set(tree["opt_state"]["0"]["mu"]) == set(tree["params"])  # Adam's copies of every kernel
    decoded = []
    real = flax_msgpack.decode_array
    monkeypatch.setattr(flax_msgpack, "decode_array", lambda leaf, name: decoded.append(name) or real(leaf, name))
    params = np.load(DATA / "trainstate.npz")
    convs = read_convolutions(DATA / "trainstate.msgpack", "flax")
    assert [c.name for c in convs] == [f"Conv_{k}" for k in range(12)] and [c.level for c in convs] == list(range(12))
    for conv in convs:
        same_bits(conv.weight, params[f"{conv.name}/kernel"], conv.name)
    decoded.clear()
    for file in ("trainstate.msgpack", "custom.msgpack", "mixed_f32.msgpack"):
        read_convolutions(DATA / file, "flax")
    assert decoded and not any(n.startswith(("opt_state", "ema", "batch_stats", "step")) for n in decoded)
    assert len(decoded) == 12 + 5 + 5  # the conv kernels and nothing else


def test_hugging_face_style_names_are_convolutions():
    params = np.load(DATA / "hf_style.npz")
    convs = read_convolutions(DATA / "hf_style.msgpack", "flax")
    assert [c.name for c in convs] == HF and [c.level for c in convs] == list(range(6))
    for conv in convs:
        assert conv.groups == -1
        same_bits(conv.weight, params[f"{conv.name}/kernel"], conv.name)


@pytest.mark.parametrize("model, n_conv", [("resnet", 8), ("regnet", 9), ("vit", 1)])
def test_hugging_face_files_written_by_transformers(model, n_conv):
    """``save_pretrained``'s ``flax_model.msgpack`` (params + batch_stats for ResNet / RegNet, bare
    params for ViT): every 4-D kernel the params hold, in their order, is a conv, except RegNet's
    squeeze-excitation 1x1 convs (``layer/2/attention/0``, ``/2``): modules named by position
    under ``attention``, which the name rule does not take for convs (its known miss)."""
    params = np.load(DATA / f"hf_{model}.npz")
    kernels = [k.removesuffix("/kernel") for k in params.files if k.endswith("/kernel") and params[k].ndim == 4]
    missed = [k for k in kernels if "/attention/" in k]
    assert len(missed) == (4 if model == "regnet" else 0)
    convs = read_convolutions(DATA / f"hf_{model}.msgpack", "flax")
    assert [c.name for c in convs] == [k for k in kernels if k not in missed] and len(convs) == n_conv
    for level, conv in enumerate(convs):
        assert (conv.level, conv.groups) == (level, -1)
        same_bits(conv.weight, params[f"{conv.name}/kernel"], conv.name)


def test_flax_files_are_detected_by_content_and_other_files_are_not_claimed(tmp_path):
    for file in sorted(DATA.glob("*.msgpack")):
        shutil.copy(file, tmp_path / "model.bin")
        assert detect_format(tmp_path / "model.bin") == "flax", file.name
    others = [p for p in OTHER_FORMATS.rglob("*") if p.is_file() and p.suffix != ".msgpack" and p.parent != DATA]
    assert len(others) > 20
    for path in others:
        with open(path, "rb") as f:
            assert not flax_msgpack.sniff(path, f.read(HEAD_BYTES)), path
    plain = {"plain.dat": msgpack.packb({"a": [1, 2, 3], "b": {"c": 1.5}}), "other_ext.dat": msgpack.packb({"w": msgpack.ExtType(1, b"\x01\x02")}),
             "list.dat": msgpack.packb([{"kernel": 1}]), "pickle.dat": b"\x80\x04\x95" + bytes(20)}
    for name, data in plain.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="cannot infer the format"):
            detect_format(tmp_path / name)


def test_fixtures_through_the_extraction(tmp_path):
    rows = ["mixed_f32", "mixed_bf16", "chunked", "trainstate", "hf_style"]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [str(DATA / f"{r}.msgpack") for r in rows], "name": rows, "task": "test"}).to_csv(manifest, index=False)
    report = run_extraction(plan_extraction(read_manifest(manifest), tmp_path / "db"), show_progress=False)
    assert report.n_failed == 0
    db = store.open_database(tmp_path / "db")
    filters = db.filters().compute()
    layers = db.layers.merge(db.models[["model_id", "name"]].rename(columns={"name": "model"}), on="model_id")
    expected = {  # model: [(3x3 layer, conv_index, groups)], n_conv, npz
        "mixed_f32": ([("Conv_0", 0, -1), ("dw_conv", 1, 4), ("conv_grouped", 4, -1)], 5, "mixed_f32"),
        "mixed_bf16": ([("Conv_0", 0, -1), ("dw_conv", 1, 4), ("conv_grouped", 4, -1)], 5, "mixed_bf16"),
        "chunked": ([("Conv_0", 0, -1), ("conv_grouped", 3, -1), ("dw_conv", 4, 4)], 5, "mixed_f32"),
        "trainstate": ([(f"Conv_{k}", k, -1) for k in range(12)], 12, "trainstate"),
        "hf_style": ([(HF[k], k, -1) for k in (1, 3, 5)], 6, "hf_style"),
    }
    for model, (want, n_conv, npz) in expected.items():
        got = layers[layers["model"] == model].sort_values("conv_index")
        assert [(r.name, r.conv_index, r.groups) for r in got.itertuples()] == want, model
        assert (got["n_conv"] == n_conv).all() and np.allclose(got["depth"], got["conv_index"] / (n_conv - 1)), model
        params = np.load(DATA / f"{npz}.npz")
        for row in got.itertuples():
            kernel = reference(params[f"{row.name}/kernel"].astype(np.float32)).reshape(-1, 9)
            np.testing.assert_array_equal(filters[row.start:row.stop], kernel, err_msg=f"{model} {row.name}")


def test_an_old_flax_optim_checkpoint_is_read_from_its_target(tmp_path):
    """``flax.optim`` (removed from Flax) saved ``{"target": params, "state": {"step", "param_states"}}``
    with a momentum copy of every kernel in ``param_states``; rebuilt here from mixed_f32's arrays."""
    tree = msgpack.unpackb((DATA / "mixed_f32.msgpack").read_bytes(), ext_hook=msgpack.ExtType, raw=False)
    old = {"target": tree["params"], "state": {"step": 7, "param_states": tree["params"]}}
    (tmp_path / "old.msgpack").write_bytes(msgpack.packb(old))
    convs = read_convolutions(tmp_path / "old.msgpack", "flax")
    assert [c.name for c in convs] == [name for name, *_ in MIXED]
    params = np.load(DATA / "mixed_f32.npz")
    for conv in convs:
        same_bits(conv.weight, params[f"{conv.name}/kernel"], conv.name)
