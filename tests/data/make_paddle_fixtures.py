"""Paddle fixtures for tests/test_reader_paddle.py, written by PaddlePaddle itself. Run by hand in
a separate venv (never needed by the tests or at run time):

    python3 -m venv /work/venvs/paddle && /work/venvs/paddle/bin/pip install paddlepaddle
    /work/venvs/paddle/bin/python tests/data/make_paddle_fixtures.py

Written with paddlepaddle 3.3.1 (CPU wheel), into tests/data/paddle/:

- ``convs.pdparams`` / ``convs_fp16.pdparams``: ``paddle.save(model.state_dict())`` (pickle
  protocol 4); ``convs_p2.pdparams``: the same with ``protocol=2`` (numpy's bytes through
  ``_codecs.encode``, as Paddle 2.x wrote them);
- ``convs.pdmodel`` + ``convs.pdiparams`` and ``convs_fp16.*``: ``paddle.jit.save`` with
  ``FLAGS_enable_pir_api=0`` (the ProgramDesc protobuf and the combined parameters);
- ``convs.json``: ``paddle.jit.save`` with Paddle 3's default PIR program (JSON), beside the same
  ``convs.pdiparams`` (the script checks that PIR wrote the same parameter bytes);
- ``convs_int8.pdmodel`` + ``convs_int8.pdiparams``: the model after Paddle's post-training
  quantization (``paddle.quantization.PTQ``, per-tensor abs-max, 8 bits), weights as integers behind
  ``dequantize_linear`` ops (a PIR export of it needs a fixed batch size and is not kept);
- ``convs.npz`` / ``convs_fp16.npz``: the framework's own weights, ``state_dict()`` as numpy, keyed
  by the layer's structured name (``conv3.weight``); ``__names__`` pairs each with its parameter
  name (``conv3.weight=conv2d_0.w_0``), which the inference programs use.

Each save runs in its own process because the PIR flag is read when paddle is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent / "paddle"


def build(dtype: str):
    import paddle
    from paddle import nn

    class Convs(nn.Layer):
        """Regular (with batch norm: persistable statistics), depthwise, grouped, 1x1, 5x5, two
        parallel branches, two transposed convs (a neutral name and a depthwise one) and a head."""

        def __init__(self):
            super().__init__()
            self.conv3 = nn.Conv2D(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2D(8)
            self.depthwise = nn.Conv2D(8, 8, 3, padding=1, groups=8)
            self.grouped = nn.Conv2D(8, 16, 3, padding=1, groups=2)
            self.point = nn.Conv2D(16, 8, 1)
            self.conv5 = nn.Conv2D(8, 8, 5, padding=2)
            self.branch_a = nn.Conv2D(8, 8, 3, padding=1)
            self.branch_b = nn.Conv2D(8, 8, 3, padding=1)
            self.up = nn.Conv2DTranspose(8, 8, 2, stride=2)
            self.deconv_dw = nn.Conv2DTranspose(8, 8, 3, padding=1, groups=8)
            self.head = nn.Conv2D(8, 4, 3, padding=1)

        def forward(self, x):
            x = self.conv5(self.point(self.grouped(self.depthwise(self.bn(self.conv3(x))))))
            x = self.branch_a(x) + self.branch_b(x)
            return self.head(self.deconv_dw(self.up(x)))

    paddle.seed(0)
    model = Convs()
    if dtype == "float16":
        model.to(dtype="float16")
    model.eval()
    return model


def quantized(model):
    """The model after post-training quantization (per-tensor abs-max, 8 bits) on a few batches:
    its convs' weights are exported as integers behind dequantize_linear ops."""
    import paddle
    from paddle.quantization import PTQ, QuantConfig
    from paddle.quantization.observers import AbsmaxObserver

    ptq = PTQ(QuantConfig(activation=AbsmaxObserver(quant_bits=8), weight=AbsmaxObserver(quant_bits=8)))
    observed = ptq.quantize(model, inplace=False)
    paddle.seed(1)  # the same calibration batches in every process
    for _ in range(4):
        observed(paddle.randn([2, 3, 16, 16]))
    return ptq.convert(observed, inplace=False)


def save(kind: str) -> None:
    import numpy as np
    import paddle
    from paddle.static import InputSpec

    dtype = "float16" if kind.endswith("fp16") else "float32"
    model = build(dtype)
    stem = {"legacy": "convs", "legacy_fp16": "convs_fp16", "pir": "convs_pir", "legacy_int8": "convs_int8"}[kind]
    if kind.endswith("int8"):
        paddle.jit.save(quantized(model), str(OUT / stem), input_spec=[InputSpec([None, 3, 16, 16], dtype, "x")])
        return
    if kind != "pir":
        paddle.save(model.state_dict(), str(OUT / f"{stem}.pdparams"))
        if kind == "legacy":
            paddle.save(model.state_dict(), str(OUT / "convs_p2.pdparams"), protocol=2)
        state = model.state_dict()
        names = np.array([f"{key}={param.name}" for key, param in state.items()])
        np.savez(OUT / f"{stem}.npz", __names__=names, **{key: param.numpy() for key, param in state.items()})
    paddle.jit.save(model, str(OUT / stem), input_spec=[InputSpec([None, 3, 16, 16], dtype, "x")])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        save(sys.argv[1])
    else:
        OUT.mkdir(exist_ok=True)
        for kind in ("legacy", "legacy_fp16", "pir", "legacy_int8"):
            env = dict(os.environ, FLAGS_enable_pir_api="1" if kind == "pir" else "0")
            subprocess.run([sys.executable, __file__, kind], env=env, check=True)
        assert (OUT / "convs_pir.pdiparams").read_bytes() == (OUT / "convs.pdiparams").read_bytes()
        (OUT / "convs_pir.json").rename(OUT / "convs.json")
        (OUT / "convs_pir.pdiparams").unlink()
        for info in OUT.glob("*.pdiparams.info"):  # parameter attributes (a pickle); not read
            info.unlink()
        for path in sorted(OUT.iterdir()):
            print(f"{path.name:28} {path.stat().st_size:8,} bytes")
