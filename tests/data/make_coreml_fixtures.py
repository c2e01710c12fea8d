"""Writes tests/data/coreml/ with coremltools (run by hand; not needed by the tests):

    python3 -m venv /work/venvs/coreml
    /work/venvs/coreml/bin/pip install coremltools==9.0 torch==2.13.0
    /work/venvs/coreml/bin/python tests/data/make_coreml_fixtures.py

coremltools writes (but cannot run) models on Linux. Outputs, from :class:`tiny_convnet.TinyConvNet`
with the conv weights of ``tests/data/openvino/tiny_weights.npz`` loaded into it (so the OpenVINO
fixtures and these hold the same kernels):

- ``tiny_nn_fp32.mlmodel``: ``ct.convert(..., convert_to="neuralnetwork")`` (floatValue weights);
- ``tiny_nn_fp16.mlmodel``: that model through ``quantize_weights(nbits=16)`` (float16Value);
- ``tiny_nn_int8.mlmodel``: ``quantize_weights(nbits=8, quantization_mode="linear")`` (rawValue
  bytes, a scale and bias per output channel);
- ``tiny_nn_lut4.mlmodel``: ``quantize_weights(nbits=4, quantization_mode="linear_lut")`` (4-bit
  indices packed into rawValue, a 16-entry lookup table);
- ``tiny_fp32.mlpackage`` / ``tiny_fp16.mlpackage``: ``convert_to="mlprogram"`` with
  ``compute_precision`` FLOAT32 / FLOAT16 (the default): ``const`` weights in ``weights/weight.bin``;
- ``tiny_int8.mlpackage``: the fp16 program (iOS16 target) through ``linear_quantize_weights``
  (``constexpr_affine_dequantize``);
- ``tiny_lut4.mlpackage``: the fp16 program (iOS16 target) through ``palettize_weights`` uniform
  4-bit (``constexpr_lut_to_dense``);
- ``tiny_int8_ios18.mlpackage``: an iOS18-target program through ``linear_quantize_weights``
  (``constexpr_blockwise_shift_scale``);
- ``tiny_lut4_ios18.mlpackage``: the iOS18 program through ``palettize_weights`` uniform 4-bit
  (iOS18 ``constexpr_lut_to_dense``: uint4 indices shaped as the weight, a per-tensor table).

``weight_threshold=0`` everywhere: coremltools skips tensors under 2,048 elements by default, and
every weight here is smaller.
"""

import shutil
import sys
from pathlib import Path

import coremltools as ct
import coremltools.optimize.coreml as cto
import numpy as np
import torch
from coremltools.models.neural_network import quantization_utils

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tiny_convnet import seeded_model  # noqa: E402

OUT = HERE / "coreml"


def convert(traced, **options):
    return ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8))], **options)


def save(model, name: str) -> None:
    target = OUT / name
    if target.is_dir():
        shutil.rmtree(target)
    model.save(str(target))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = seeded_model()
    with np.load(HERE / "openvino" / "tiny_weights.npz") as npz, torch.no_grad():
        for name in npz:
            getattr(model, name).weight.copy_(torch.from_numpy(npz[name]))
    traced = torch.jit.trace(model, torch.zeros(1, 3, 8, 8))

    nn = convert(traced, convert_to="neuralnetwork")
    save(nn, "tiny_nn_fp32.mlmodel")
    save(quantization_utils.quantize_weights(nn, nbits=16), "tiny_nn_fp16.mlmodel")
    save(quantization_utils.quantize_weights(nn, nbits=8, quantization_mode="linear"), "tiny_nn_int8.mlmodel")
    save(quantization_utils.quantize_weights(nn, nbits=4, quantization_mode="linear_lut"), "tiny_nn_lut4.mlmodel")

    save(convert(traced, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32), "tiny_fp32.mlpackage")
    fp16 = convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    save(fp16, "tiny_fp16.mlpackage")
    linear = cto.OptimizationConfig(cto.OpLinearQuantizerConfig(mode="linear", dtype="int8", weight_threshold=0))
    save(cto.linear_quantize_weights(fp16, linear), "tiny_int8.mlpackage")
    lut = cto.OptimizationConfig(cto.OpPalettizerConfig(mode="uniform", nbits=4, weight_threshold=0))
    save(cto.palettize_weights(fp16, lut), "tiny_lut4.mlpackage")
    ios18 = convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18)
    save(cto.linear_quantize_weights(ios18, linear), "tiny_int8_ios18.mlpackage")
    save(cto.palettize_weights(ios18, lut), "tiny_lut4_ios18.mlpackage")

    for path in sorted(OUT.rglob("*")):
        if path.is_file():
            print(f"{str(path.relative_to(OUT)):60s} {path.stat().st_size:8,d} bytes")


if __name__ == "__main__":
    main()
