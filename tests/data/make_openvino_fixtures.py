"""Writes tests/data/openvino/ with OpenVINO's own converter (run by hand; not needed by the tests):

    /work/venv-ov/bin/python tests/data/make_openvino_fixtures.py

(a venv with ``pip install openvino onnx nncf torch==2.13.0``). Outputs, from the seeded
:class:`tiny_convnet.TinyConvNet`:

- ``tiny_fp32.xml/.bin``: ``openvino.convert_model`` of the torch module, saved uncompressed;
- ``tiny_fp16.xml/.bin``: the same, saved with ``compress_to_fp16=True`` (f16 Const + Convert);
- ``tiny_int8.xml/.bin``: NNCF ``compress_weights`` (u8 weights, Subtract zero point, Multiply scale);
- ``tiny.onnx`` and ``tiny_onnx.xml/.bin``: the module exported to ONNX, and that ONNX file converted
  to IR (the same weights in two formats);
- ``tiny_weights.npz``: each regular conv's weight as PyTorch holds it, (out, in/groups, kh, kw),
  keyed by module name.
"""

import sys
from pathlib import Path

import numpy as np
import openvino as ov
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tiny_convnet import conv_weights, seeded_model  # noqa: E402

OUT = HERE / "openvino"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = seeded_model()
    example = torch.zeros(1, 3, 8, 8)
    np.savez(OUT / "tiny_weights.npz", **conv_weights(model))
    converted = ov.convert_model(model, example_input=example)
    ov.save_model(converted, OUT / "tiny_fp32.xml", compress_to_fp16=False)
    ov.save_model(converted, OUT / "tiny_fp16.xml", compress_to_fp16=True)
    torch.onnx.export(model, (example,), OUT / "tiny.onnx", dynamo=False, opset_version=17)
    ov.save_model(ov.convert_model(OUT / "tiny.onnx"), OUT / "tiny_onnx.xml", compress_to_fp16=False)
    import nncf

    fresh = ov.convert_model(model, example_input=example)
    compressed = nncf.compress_weights(fresh, mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(compressed, OUT / "tiny_int8.xml", compress_to_fp16=False)
    for path in sorted(OUT.iterdir()):
        print(f"{path.name:24s} {path.stat().st_size:8,d} bytes")


if __name__ == "__main__":
    main()
