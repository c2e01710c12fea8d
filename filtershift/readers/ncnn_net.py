"""NCNN models: a text ``.param`` (the layer graph) and the ``.bin`` of the same stem beside it (the
weights, layer after layer, in ``.param`` order); no ncnn needed.

``.param``: the magic line ``7767517``, ``layer_count blob_count``, then one line per layer:
``type name bottom_count top_count bottoms... tops... key=value...`` (array values under keys
``-23300 - k``). ``Convolution`` and ``ConvolutionDepthWise`` layers give (num_output ``0``,
in/group, kernel_h ``11``, kernel_w ``1``) weights of ``6`` = weight_data_size values, group ``7``.
``Deconvolution`` / ``DeconvolutionDepthWise`` are excluded but their weights are stepped over.

``.bin``: each tensor a layer loads is either *tagged* (a 4-byte flag: ``0`` fp32,
``0x01306B47`` fp16, ``0x000D4B38`` int8, ``0x0002C056`` fp32, any other non-zero flag an 8-bit
index into a 256-entry float table that follows) or raw fp32 (biases, BatchNorm / Scale / PReLU
data); fp16 and int8 payloads are padded to 4 bytes. The weight-holding layers accounted for are
listed in :data:`WEIGHT_LAYERS`; an unknown layer type before the last convolution leaves the
offsets unknown and fails. Depth is the longest-path level over blob names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filtershift.readers.files import inside
from filtershift.types import ConvWeight

MAGIC = "7767517"
TAG_FP16, TAG_INT8, TAG_FP32 = 0x01306B47, 0x000D4B38, 0x0002C056
CONVS = {"Convolution", "ConvolutionDepthWise"}
# Layers that read nothing from the .bin (a layer of no other type before the last conv fails).
NO_WEIGHTS = frozenset(
    "Input Split Concat Slice Eltwise BinaryOp UnaryOp ReLU ReLU6 Clip Sigmoid TanH Swish HardSwish HardSigmoid "
    "Mish GELU ELU SELU Softmax Softplus Pooling Pooling1D Pooling3D Interp Crop Padding Flatten Reshape Permute "
    "Dropout Noop ShuffleChannel PixelShuffle Reorg Reduction AbsVal Power Exp Log Squeeze ExpandDims Tile "
    "MatMul Einsum Threshold Cast Yolov3DetectionOutput DetectionOutput Erf "
    "CopyTo Flip Fold Unfold".split()
)
MAX_PARAM_BYTES = 64 * 2**20


@dataclass(frozen=True)
class NcnnLayer:
    kind: str
    name: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: dict  # key -> int | float | tuple


def sniff(path: Path, head: bytes) -> bool:
    return head[:8].rstrip() == MAGIC.encode() or head.startswith(MAGIC.encode() + b"\r") or head.startswith(MAGIC.encode() + b"\n")


def companions(path: Path) -> list[Path]:
    weights = _bin_file(path)
    return [weights] if weights.is_file() else []  # a missing .bin: read says so


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    layers = parse_param(path)
    weights_file = _bin_file(path)
    if not weights_file.is_file():
        raise ValueError(f"the weights file {weights_file.name} is missing beside {path.name}")
    last_conv = max((i for i, layer in enumerate(layers) if layer.kind in CONVS), default=-1)
    reader = _BinReader(weights_file)
    level_of: dict[str, int] = {}
    convs = []
    for i, layer in enumerate(layers[: last_conv + 1]):
        upstream = max((level_of.get(b, -1) for b in layer.bottoms), default=-1)
        level = upstream + 1 if layer.kind in CONVS else upstream
        for top in layer.tops:
            level_of[top] = level
        tensors = _layer_tensors(layer)
        if tensors is None:
            raise ValueError(f"layer {layer.name!r} of type {layer.kind} before the last convolution: its weights in {weights_file.name} are not known, so the offsets after it are not either")
        values = [reader.take(count, tagged, f"{layer.kind} {layer.name!r}") for count, tagged in tensors]
        if layer.kind in CONVS:
            if values and values[0].dtype == np.int8 and not _int(layer, 8):
                raise ValueError(f"{layer.kind} {layer.name!r}: int8 weights but no int8_scale_term (8=) to dequantize them with")
            convs.append(_conv_weight(layer, level, values))
    return convs


def parse_param(path: Path) -> list[NcnnLayer]:
    if path.stat().st_size > MAX_PARAM_BYTES:
        raise ValueError(f"{path.name} is over 64 MB; not an NCNN .param")
    lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not lines or lines[0] != [MAGIC]:
        raise ValueError(f"{path.name} does not start with the NCNN magic {MAGIC} (a binary .param.bin is not read)")
    if len(lines) < 2 or len(lines[1]) != 2 or not all(t.isdigit() for t in lines[1]):
        raise ValueError(f"{path.name}: line 2 is not 'layer_count blob_count'")
    n_layers = int(lines[1][0])
    if n_layers != len(lines) - 2:
        raise ValueError(f"{path.name} declares {n_layers} layers but holds {len(lines) - 2} layer lines (truncated?)")
    return [_parse_layer(tokens, n + 3) for n, tokens in enumerate(lines[2:])]


def _parse_layer(tokens: list[str], line: int) -> NcnnLayer:
    try:
        kind, name, n_bottom, n_top = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
    except (IndexError, ValueError):
        raise ValueError(f"line {line}: not 'type name bottom_count top_count ...'") from None
    if n_bottom < 0 or n_top < 0 or 4 + n_bottom + n_top > len(tokens):
        raise ValueError(f"line {line} ({name}): {n_bottom} bottoms and {n_top} tops do not fit the line")
    names = tokens[4: 4 + n_bottom + n_top]
    params = {}
    for item in tokens[4 + n_bottom + n_top:]:
        key, sep, value = item.partition("=")
        try:
            key_int = int(key)
            if key_int <= -23300:
                count, *items = value.split(",")
                params[-23300 - key_int] = tuple(_number(v) for v in items)
                if int(count) != len(items):
                    raise ValueError
            else:
                params[key_int] = _number(value)
        except ValueError:
            raise ValueError(f"line {line} ({name}): bad parameter {item!r}") from None
    return NcnnLayer(kind, name, tuple(names[:n_bottom]), tuple(names[n_bottom:]), params)


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _int(layer: NcnnLayer, key: int, default: int = 0) -> int:
    value = layer.params.get(key, default)
    if not isinstance(value, int):
        raise ValueError(f"{layer.kind} {layer.name!r}: parameter {key}={value!r} is not an integer")
    return value


def _layer_tensors(layer: NcnnLayer) -> list[tuple[int, bool]] | None:
    """The tensors the layer reads from the .bin, in order: (element count, tagged?); ``None``
    when the layer's type is not known."""
    p = lambda key, default=0: _int(layer, key, default)  # noqa: E731
    kind = layer.kind
    if kind in ("Convolution", "ConvolutionDepthWise", "Deconvolution", "DeconvolutionDepthWise",
                "Convolution1D", "ConvolutionDepthWise1D", "Deconvolution1D", "Convolution3D"):
        if p(28 if kind.startswith("Deconvolution") else 19):  # dynamic_weight: a run-time input
            if kind in CONVS:
                raise ValueError(f"{kind} {layer.name!r} takes its weights as an input at run time (dynamic_weight=1); they are not stored")
            return []
        out = [(p(6), True)] + ([(p(0), False)] if p(5) else [])
        if p(8) and kind in CONVS:
            scales = p(0) if kind == "Convolution" else p(7, 1)
            out += [(scales, False), (1 if p(8) in (1, 101) or kind == "Convolution" else p(7, 1), False)]
            out += [(1, False)] if p(8) > 100 else []
        return out
    if kind == "InnerProduct":
        out = [(p(2), True)] + ([(p(0), False)] if p(1) else [])
        return out + ([(p(0), False), (1, False)] if p(8) else [])
    if kind == "BatchNorm":
        return [(p(0), False)] * 4
    if kind == "Scale":
        size = p(0)
        return [] if size == -233 else [(size, False)] + ([(size, False)] if p(1) else [])
    if kind == "PReLU":
        return [(p(0), False)]
    if kind == "Bias":
        return [(p(0), False)]
    if kind in ("InstanceNorm", "GroupNorm", "LayerNorm"):
        size, affine = {"InstanceNorm": (p(0), p(2, 1)), "GroupNorm": (p(1), p(3, 1)), "LayerNorm": (p(0), p(2, 1))}[kind]
        return [(size, False)] * 2 if affine else []
    if kind == "Embed":
        return [(p(3), True)] + ([(p(0), False)] if p(2) else [])
    if kind == "MemoryData":
        return [(max(p(0), 1) * max(p(1), 1) * max(p(11), 1) * max(p(2), 1), False)]
    if kind in ("Quantize", "Dequantize", "Requantize"):  # scales (and biases) by their sizes' keys
        return [(p(k), False) for k in {"Quantize": (0,), "Dequantize": (0, 1), "Requantize": (0, 1, 2)}[kind] if p(k)]
    if kind in NO_WEIGHTS:
        return []
    return None


class _BinReader:
    """Sequential reads from the .bin, every size checked against the bytes left."""

    def __init__(self, path: Path):
        self.path = path
        self.data = memoryview(path.read_bytes())
        self.size = len(self.data)
        self.pos = 0

    def _bytes(self, n: int, what: str) -> memoryview:
        if n < 0 or n > self.size - self.pos:
            raise ValueError(f"{what}: needs {n:,} bytes at offset {self.pos:,} of {self.path.name}, which holds {self.size:,}")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def take(self, count: int, tagged: bool, what: str) -> np.ndarray:
        if count < 0 or count > self.size:
            raise ValueError(f"{what}: absurd tensor size {count:,} for a {self.size:,}-byte {self.path.name}")
        if not tagged:
            return np.frombuffer(self._bytes(4 * count, what), "<f4")
        tag = int.from_bytes(self._bytes(4, what), "little")
        if tag == TAG_FP16:
            data = self._bytes(_align4(2 * count), what)
            return np.frombuffer(data[: 2 * count], "<f2").astype(np.float32)
        if tag == TAG_INT8:
            data = self._bytes(_align4(count), what)
            return np.frombuffer(data[:count], np.int8)  # divided by its scales in _conv_weight
        if tag in (0, TAG_FP32):
            return np.frombuffer(self._bytes(4 * count, what), "<f4")
        table = np.frombuffer(self._bytes(4 * 256, what), "<f4")
        return table[np.frombuffer(self._bytes(_align4(count), what)[:count], np.uint8)]


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _conv_weight(layer: NcnnLayer, level: int, values: list[np.ndarray]) -> ConvWeight:
    out, kw = _int(layer, 0), _int(layer, 1)
    kh = _int(layer, 11, kw)
    groups = _int(layer, 7, 1) if layer.kind == "ConvolutionDepthWise" else 1
    size = _int(layer, 6)
    if out < 1 or kw < 1 or kh < 1 or groups < 1 or out % groups or size % (out * kh * kw):
        raise ValueError(f"{layer.kind} {layer.name!r}: num_output {out}, kernel {kh}x{kw}, group {groups} do not fit weight_data_size {size}")
    weight = values[0]
    if _int(layer, 8) and weight.dtype != np.int8:
        raise ValueError(f"{layer.kind} {layer.name!r}: int8_scale_term set but its weights are not stored as int8")
    if _int(layer, 8):  # int8: divide each output channel (or group) by its scale
        scales = values[2] if _int(layer, 5) else values[1]
        per = np.repeat(scales, out // scales.size) if scales.size and out % scales.size == 0 else None
        if per is None or np.any(per == 0):
            raise ValueError(f"{layer.kind} {layer.name!r}: int8 weight scales do not fit its {out} outputs")
        weight = (weight.astype(np.float32).reshape(out, -1) / per[:, None].astype(np.float32)).reshape(-1)
    return ConvWeight(name=layer.name, level=level, weight=weight.reshape(out, size // (out * kh * kw), kh, kw), groups=groups)


def _bin_file(path: Path) -> Path:
    return inside(path.parent, path.with_suffix(".bin").name, "NCNN weights file")
