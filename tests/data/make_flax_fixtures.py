"""Writes the Flax fixtures under tests/data/flax/ and tests/data/crossformat/net.msgpack (run by
hand, never at test time; CPU only):

    python3 -m venv /work/venvs/flax && /work/venvs/flax/bin/pip install "jax[cpu]" flax optax
    /work/venvs/flax/bin/python tests/data/make_flax_fixtures.py
    /work/venvs/flax/bin/pip install "transformers<5"
    /work/venvs/flax/bin/python tests/data/make_flax_fixtures.py --hugging-face  # hf_resnet, hf_regnet, hf_vit
    /work/venvs/flax/bin/python tests/data/make_flax_fixtures.py --resnet18 /tmp/resnet18.msgpack [bfloat16]  # the benchmark's model

Written with jax 0.10.2, flax 0.12.8, optax 0.2.8. Every file is ``flax.serialization.to_bytes``
(or ``msgpack_serialize``) of a Linen model's variables, as Flax users and Hugging Face save them.

``mixed`` (6x6x3 input, a few channels, so that the files stay small), Linen names in creation
order:

    Conv_0 (3x3, 3 -> 4) -> BatchNorm_0 -> dw_conv (3x3, feature_group_count 4: depthwise)
    -> Conv_1 (1x1, 4 -> 8) -> Conv_2 (5x5, 8 -> 4) -> ConvTranspose_0 (3x3, excluded)
    -> conv_grouped (3x3, 4 -> 4, feature_group_count 2) -> attn_out (DenseGeneral over two axes:
    a 4-D kernel that is no conv) -> Dense_0 (2-D kernel)

- ``mixed_f32.msgpack``, ``mixed_f16.msgpack``, ``mixed_bf16.msgpack``: ``to_bytes(variables)``
  (``params`` + ``batch_stats``) with ``param_dtype`` float32 / float16 / bfloat16;
- ``mixed_bare.msgpack``: ``to_bytes(params)``, a bare params tree as Hugging Face saves it;
- ``trainstate.msgpack``: a ``TrainState`` of ``deep`` (12 auto-named 3x3 convs ``Conv_0`` ...
  ``Conv_11``, 2 channels) with Adam, after one update: optax's tree functions leave the params
  (and ``opt_state``'s ``mu`` / ``nu``, a copy of every kernel) with sorted keys, ``Conv_10``
  before ``Conv_2``;
- ``custom.msgpack``: ``to_bytes({"step", "model", "ema_params", "opt_state"})``, a hand-made
  checkpoint dict whose params sit under ``model`` beside an EMA copy and optimizer state;
- ``hf_style.msgpack``: a bare params tree named as Hugging Face's Flax models name theirs
  (``embeddings/patch_embeddings/projection``, ``encoder/layers/0/layer/0/convolution``,
  ``shortcut/convolution``, ``downsample``);
- ``hf_resnet.msgpack``, ``hf_regnet.msgpack``, ``hf_vit.msgpack``: tiny random Hugging Face Flax
  models (transformers 4.57.6 ``save_pretrained``'s ``flax_model.msgpack``; ``--hugging-face``);
- ``chunked.msgpack``: ``msgpack_serialize`` of ``mixed``'s f32 variables with
  ``flax.serialization.MAX_CHUNK_SIZE`` lowered from 1 GiB to 256 bytes, so that Flax writes every
  array over 256 bytes (``Conv_0``: 2 chunks, ``Conv_2``: 13) in its chunked form (a real chunked file would be over 1 GiB);
- ``<stem>.npz``: the framework's own params, flattened with ``/`` (``Conv_0/kernel``), in Flax's
  layout (H, W, I, O), NOT transposed; bfloat16 kernels as float32 (exact), float16 as float16
  (``mixed_bare`` and ``chunked`` hold ``mixed_f32``'s params: no npz of their own).

``crossformat/net.msgpack``: the torch weights of ``crossformat/net.npz`` (OIHW) put into a Flax
model ``conv_a`` -> ``dw`` (feature_group_count 4, multiplier 2) -> ``conv_b``.

Every conv layer of each model is checked against a numpy convolution from the weights in
PyTorch's (out, in/groups, kh, kw) layout, so the layout rule the reader applies is Flax's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "flax"
CROSS = Path(__file__).resolve().parent / "crossformat"


def models():
    import flax.linen as nn
    import jax.numpy as jnp

    class Mixed(nn.Module):
        param_dtype: object = jnp.float32

        @nn.compact
        def __call__(self, x):
            d = self.param_dtype
            x = nn.Conv(4, (3, 3), param_dtype=d)(x)
            x = nn.BatchNorm(use_running_average=True, param_dtype=d)(x)
            x = nn.Conv(4, (3, 3), feature_group_count=4, name="dw_conv", param_dtype=d)(x)
            x = nn.Conv(8, (1, 1), param_dtype=d)(x)
            x = nn.Conv(4, (5, 5), param_dtype=d)(x)
            x = nn.ConvTranspose(4, (3, 3), param_dtype=d)(x)
            x = nn.Conv(4, (3, 3), feature_group_count=2, name="conv_grouped", param_dtype=d)(x)
            x = nn.DenseGeneral((2, 2), axis=(-2, -1), name="attn_out", param_dtype=d)(x)
            return nn.Dense(3, param_dtype=d)(x.reshape(x.shape[0], -1))

    class Deep(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(12):
                x = nn.Conv(2, (3, 3))(x)
            return x

    def named(conv_name: str, features: int, size: int, stride: int = 1):
        class Wrapper(nn.Module):  # a module holding one conv named conv_name
            @nn.compact
            def __call__(self, x):
                return nn.Conv(features, (size, size), strides=stride, name=conv_name)(x)

        return Wrapper

    PatchEmbeddings, Shortcut = named("projection", 4, 2, 2), named("convolution", 4, 1)

    class Embeddings(nn.Module):
        @nn.compact
        def __call__(self, x):
            return PatchEmbeddings(name="patch_embeddings")(x)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(4, (3, 3), name="convolution")(x) + Shortcut(name="shortcut")(x)

    class Encoder(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Layers(name="layers")(x)

    class Layers(nn.Module):
        @nn.compact
        def __call__(self, x):
            for i in range(2):
                x = Block(name=str(i))(x)
            return x

    class HFStyle(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Encoder(name="encoder")(Embeddings(name="embeddings")(x))
            return nn.Conv(4, (3, 3), strides=2, name="downsample")(x)

    return Mixed, Deep, HFStyle


def reference_conv(x: np.ndarray, weight: np.ndarray, groups: int) -> np.ndarray:
    """SAME-padded stride-1 cross-correlation, NHWC input, PyTorch weight (out, in/groups, kh, kw)."""
    n, h, w, c = x.shape
    out, per, kh, kw = weight.shape
    pad = np.pad(x.astype(np.float64), ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    y = np.zeros((n, h, w, out))
    for o in range(out):
        g = o // (out // groups)
        for i in range(per):
            for a in range(kh):
                for b in range(kw):
                    y[..., o] += pad[:, a:a + h, b:b + w, g * per + i] * weight[o, i, a, b]
    return y


def check_layout(kernel: np.ndarray, groups: int) -> None:
    """Flax's conv with this kernel equals the numpy conv with kernel (o, i) = K[:, :, i, o]."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    kernel = np.asarray(kernel, np.float32)
    kh, kw, per, out = kernel.shape
    x = np.random.default_rng(0).standard_normal((1, 6, 6, per * groups)).astype(np.float32)
    conv = nn.Conv(out, (kh, kw), feature_group_count=groups, use_bias=False, precision=jax.lax.Precision.HIGHEST)
    got = np.asarray(conv.apply({"params": {"kernel": jnp.asarray(kernel)}}, x))
    np.testing.assert_allclose(got, reference_conv(x, kernel.transpose(3, 2, 0, 1), groups), rtol=1e-4, atol=1e-4)


def flat(tree) -> dict[str, np.ndarray]:
    from flax.traverse_util import flatten_dict

    out = {}
    for key, value in flatten_dict(tree, sep="/").items():
        value = np.asarray(value)
        out[key] = value.astype(np.float32) if value.dtype.name == "bfloat16" else value
    return out


def write(name: str, data: bytes, params=None) -> None:
    (OUT / f"{name}.msgpack").write_bytes(data)
    if params is not None:
        np.savez_compressed(OUT / f"{name}.npz", **flat(params))
    print(f"{name}.msgpack: {len(data):,} bytes")


def main():
    import flax.serialization as ser
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    OUT.mkdir(exist_ok=True)
    Mixed, Deep, HFStyle = models()
    x = jnp.ones((1, 6, 6, 3))
    for dtype, tag in ((jnp.float32, "f32"), (jnp.float16, "f16"), (jnp.bfloat16, "bf16")):
        variables = Mixed(param_dtype=dtype).init(jax.random.key(0), x)  # not jitted: creation order kept
        write(f"mixed_{tag}", ser.to_bytes(variables), variables["params"])
        if tag == "f32":
            params = variables["params"]
            for layer, groups in (("Conv_0", 1), ("dw_conv", 4), ("Conv_1", 1), ("Conv_2", 1), ("conv_grouped", 2)):
                check_layout(params[layer]["kernel"], groups)
            write("mixed_bare", ser.to_bytes(params))
            ser.MAX_CHUNK_SIZE = 256  # flax chunks arrays over this many bytes (1 GiB by default)
            data = ser.msgpack_serialize(jax.tree_util.tree_map(np.asarray, dict(variables)))
            ser.MAX_CHUNK_SIZE = 2**30
            restored = ser.msgpack_restore(data)
            assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(variables)))
            assert b"__msgpack_chunked_array__" in data
            write("chunked", data)

    deep = Deep()
    params = deep.init(jax.random.key(1), jnp.ones((1, 6, 6, 2)))["params"]
    state = train_state.TrainState.create(apply_fn=deep.apply, params=params, tx=optax.adam(1e-2))
    grads = jax.grad(lambda p: deep.apply({"params": p}, jnp.ones((1, 6, 6, 2))).sum())(state.params)
    state = state.apply_gradients(grads=grads)
    assert list(state.params) == sorted(state.params)  # optax's update sorted the keys
    write("trainstate", ser.to_bytes(state), state.params)

    params = Mixed().init(jax.random.key(2), x)["params"]
    ema = jax.tree_util.tree_map(lambda p: p * 0.5, params)
    opt_state = optax.sgd(0.1, momentum=0.9).init(params)
    write("custom", ser.to_bytes({"step": 3, "model": params, "ema_params": ema, "opt_state": opt_state}), params)

    params = HFStyle().init(jax.random.key(3), jnp.ones((1, 8, 8, 3)))["params"]
    write("hf_style", ser.to_bytes(params), params)

    torch_weights = np.load(CROSS / "net.npz")  # OIHW, from tests/data/make_crossformat_fixtures.py
    net = {name: {"kernel": jnp.asarray(torch_weights[name].transpose(2, 3, 1, 0))} for name in ("conv_a", "dw", "conv_b")}
    for name, groups in (("conv_a", 1), ("dw", 4), ("conv_b", 1)):
        check_layout(net[name]["kernel"], groups)
    (CROSS / "net.msgpack").write_bytes(ser.to_bytes({"params": net}))


def hugging_face() -> None:
    """Tiny randomly initialised Hugging Face Flax models saved by ``save_pretrained`` (transformers
    4.57.6, the last line with Flax models: ``pip install "transformers<5"``), their
    ``flax_model.msgpack`` copied as ``hf_<model>.msgpack`` with the params beside it."""
    import shutil
    import tempfile

    from transformers import FlaxRegNetModel, FlaxResNetModel, FlaxViTModel, RegNetConfig, ResNetConfig, ViTConfig

    models = {
        "resnet": (FlaxResNetModel, ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck"), 32),
        "regnet": (FlaxRegNetModel, RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4), 32),
        "vit": (FlaxViTModel, ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, image_size=8,
                                        patch_size=4), 8),
    }
    for name, (cls, config, size) in models.items():
        model = cls(config, input_shape=(1, size, size, 3), seed=0)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            shutil.copy(Path(folder) / "flax_model.msgpack", OUT / f"hf_{name}.msgpack")
        params = model.params.get("params", model.params)  # ResNet and RegNet hold params + batch_stats
        np.savez_compressed(OUT / f"hf_{name}.npz", **flat(params))
        print(f"hf_{name}.msgpack: {(OUT / f'hf_{name}.msgpack').stat().st_size:,} bytes")


def write_resnet18(path: Path, dtype: str = "float32") -> None:
    """A ResNet-18 as Flax's ImageNet example builds it (``conv_init``, blocks of ``Conv_0``,
    ``Conv_1`` and ``conv_proj``), random weights of ``dtype``, ``to_bytes`` of its variables: the
    model of tests/data/bench_flax_vs_onnx.py (47 MB in float32, never committed)."""
    import flax.linen as nn
    import flax.serialization as ser
    import jax
    import jax.numpy as jnp

    class Block(nn.Module):
        filters: int
        strides: int

        @nn.compact
        def __call__(self, x):
            y = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(self.filters, (3, 3), self.strides)(x)))
            y = nn.BatchNorm(use_running_average=True)(nn.Conv(self.filters, (3, 3))(y))
            if x.shape != y.shape:
                x = nn.Conv(self.filters, (1, 1), self.strides, name="conv_proj")(x)
            return nn.relu(x + y)

    class ResNet18(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(64, (7, 7), (2, 2), name="conv_init")(x)
            for stage, filters in enumerate((64, 128, 256, 512)):
                for block in range(2):
                    x = Block(filters, 2 if stage and not block else 1)(x)
            return nn.Dense(1000)(x.mean((1, 2)))

    variables = ResNet18().init(jax.random.key(0), jnp.ones((1, 64, 64, 3)))
    variables = {"params": jax.tree_util.tree_map(lambda p: p.astype(dtype), variables["params"]), "batch_stats": variables["batch_stats"]}
    path.write_bytes(ser.to_bytes(variables))
    print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--resnet18"]:
        write_resnet18(Path(sys.argv[2]), *sys.argv[3:4])
    elif sys.argv[1:2] == ["--hugging-face"]:
        hugging_face()
    else:
        main()
