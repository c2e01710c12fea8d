"""Core ML NeuralNetwork layers (``NeuralNetwork``, ``NeuralNetworkClassifier``,
``NeuralNetworkRegressor``), decoded by field number from NeuralNetwork.proto with
:mod:`filtershift.readers.protowire`.

A ``convolution`` layer (``ConvolutionLayerParams``) with ``isDeconvolution`` false gives weights
of shape ``(outputChannels, kernelChannels, kh, kw)`` and ``nGroups`` groups. ``WeightParams`` hold
them as ``floatValue`` (float32), ``float16Value`` (bytes of halves), or quantized in ``rawValue``
(``numberOfBits``-bit unsigned integers packed most significant bit first) with either a linear
quantization (``w = scale * q + bias``, one or ``outputChannels`` scales and biases) or a lookup
table (``w = table[q]``); ``int8RawValue`` holds signed 8-bit values with a linear quantization.
Depth is the longest-path level over the layers' input and output blob names, counted in
convolutions. The nested networks of ``branch`` and ``loop`` layers are not searched.
"""

from __future__ import annotations

import math

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.types import ConvWeight

# NeuralNetwork / NeuralNetworkClassifier / NeuralNetworkRegressor: layers 1
NETWORK_LAYERS = 1
# NeuralNetworkLayer: name 1, input 2, output 3, convolution 100
LAYER_NAME, LAYER_INPUT, LAYER_OUTPUT, LAYER_CONVOLUTION = 1, 2, 3, 100
# ConvolutionLayerParams
OUT_CHANNELS, KERNEL_CHANNELS, N_GROUPS, KERNEL_SIZE, IS_DECONVOLUTION, WEIGHTS = 1, 2, 10, 20, 60, 90
# WeightParams
FLOAT_VALUE, FLOAT16_VALUE, RAW_VALUE, INT8_RAW_VALUE, QUANTIZATION = 1, 2, 30, 31, 40
# QuantizationParams: numberOfBits 1, linearQuantization 101 (scale 1, bias 2), lookupTableQuantization 102 (floatValue 1)
N_BITS, LINEAR, LOOKUP_TABLE = 1, 101, 102
MAX_ELEMENTS = 2**31


def sub(message: dict, number: int) -> memoryview | None:
    """The first value of a message (or bytes) field; a corrupt file whose field holds a number
    instead is refused rather than read as something else."""
    values = subs(message, number)
    return values[0] if values else None


def subs(message: dict, number: int) -> list[memoryview]:
    values = message.get(number, [])
    if any(not isinstance(v, memoryview) for v in values):
        raise ValueError(f"corrupt protobuf message (field {number} should be length-delimited)")
    return values


def text(message: dict, number: int) -> str:
    value = sub(message, number)
    return "" if value is None else pw.text(value)


def texts(message: dict, number: int) -> list[str]:
    return [pw.text(v) for v in subs(message, number)]


def num(message: dict, number: int, default: int = 0) -> int:
    values = message.get(number)
    if not values:
        return default
    if not isinstance(values[0], int):
        raise ValueError(f"corrupt protobuf message (field {number} should be a number)")
    return values[0]


def network_convolutions(network: memoryview, level_of: dict[str, int], prefix: str = "") -> list[ConvWeight]:
    """The regular 2-D convolutions of one serialized NeuralNetwork message, in layer order;
    ``level_of`` maps blob names to levels and is shared by the models of a pipeline."""
    layers = subs(pw.parse(network, {NETWORK_LAYERS}), NETWORK_LAYERS)
    convs = []
    for i, raw in enumerate(layers):
        layer = pw.parse(raw, {LAYER_NAME, LAYER_INPUT, LAYER_OUTPUT, LAYER_CONVOLUTION})
        name = prefix + (text(layer, LAYER_NAME) or f"layer_{i}")
        inputs = texts(layer, LAYER_INPUT)
        outputs = texts(layer, LAYER_OUTPUT)
        upstream = max((level_of.get(b, -1) for b in inputs), default=-1)
        params = sub(layer, LAYER_CONVOLUTION)
        conv = None if params is None else _convolution(params, name)
        level = upstream + 1 if conv is not None else upstream
        for blob in outputs:
            level_of[blob] = level
        if conv is not None:
            weight, groups = conv
            convs.append(ConvWeight(name=name, level=level, weight=weight, groups=groups))
    return convs


def _convolution(raw: memoryview, name: str) -> tuple[np.ndarray, int] | None:
    """(weight, groups) of a convolution layer; ``None`` for a deconvolution."""
    conv = pw.parse(raw, {OUT_CHANNELS, KERNEL_CHANNELS, N_GROUPS, KERNEL_SIZE, IS_DECONVOLUTION, WEIGHTS})
    if num(conv, IS_DECONVOLUTION):
        return None
    size = pw.repeated_ints(conv, KERNEL_SIZE) or [3, 3]  # the spec's default kernel is 3x3
    if len(size) != 2:
        raise ValueError(f"convolution layer {name!r}: kernelSize {size} is not (height, width)")
    shape = (num(conv, OUT_CHANNELS), num(conv, KERNEL_CHANNELS), *size)
    count = math.prod(shape)
    if any(d <= 0 for d in shape) or count > MAX_ELEMENTS:
        raise ValueError(f"convolution layer {name!r}: absurd weight shape {shape}")
    groups = num(conv, N_GROUPS, 1) or 1
    if shape[0] % groups:
        raise ValueError(f"convolution layer {name!r}: nGroups {groups} does not divide its {shape[0]} output channels")
    params = sub(conv, WEIGHTS)
    if params is None:
        raise ValueError(f"convolution layer {name!r} holds no weights")
    return weight_values(params, count, shape[0], name).reshape(shape), int(groups)


def weight_values(raw: memoryview, count: int, channels: int, name: str) -> np.ndarray:
    """The ``count`` float32 values of a ``WeightParams``, dequantized per output channel."""
    params = pw.parse(raw, {FLOAT16_VALUE, RAW_VALUE, INT8_RAW_VALUE, QUANTIZATION})
    quantization = sub(params, QUANTIZATION)
    values = bounded_floats(raw, FLOAT_VALUE, count, f"convolution layer {name!r}")
    if values is None:
        if quantization is not None and (RAW_VALUE in params or INT8_RAW_VALUE in params):
            return _dequantize(params, quantization, count, channels, name)
        data = sub(params, FLOAT16_VALUE)
        if data is None:
            raise ValueError(f"convolution layer {name!r}: no floatValue, float16Value or quantized weights")
        if len(data) != 2 * count:
            raise ValueError(f"convolution layer {name!r}: {len(data):,} bytes of float16 weights for {count:,} values")
        values = np.frombuffer(data, "<f2").astype(np.float32)
    if values.size != count:
        raise ValueError(f"convolution layer {name!r}: {values.size:,} weight values for a kernel of {count:,}")
    return values.astype(np.float32, copy=False)


def bounded_floats(raw: memoryview, number: int, count: int, what: str, dtype: str = "<f4") -> np.ndarray | None:
    """A repeated ``float`` / ``double`` field, packed (as writers store it) or one value per field,
    refused as soon as it holds more than ``count`` values, so a hostile file cannot make a Python
    object per value; ``None`` when the field is absent."""
    width = np.dtype(dtype).itemsize
    parts: list[np.ndarray] = []
    singles: list[int] = []
    found = total = 0
    for field, wire, value in pw.fields(raw):
        if field != number:
            continue
        found = 1
        if wire == pw.LENGTH:
            if len(value) % width:
                raise ValueError(f"{what}: packed values of {len(value):,} bytes, not a multiple of {width}")
            parts.append(np.frombuffer(value, dtype))
            total += len(value) // width
        elif wire == (pw.FIXED32 if width == 4 else pw.FIXED64):
            singles.append(value)
            total += 1
        else:
            raise ValueError(f"{what}: values of wire type {wire}")
        if total > count:
            raise ValueError(f"{what}: more than {count:,} values for {count:,} weights")
    if not found:
        return None
    if singles:
        parts.append(np.array(singles, np.uint32 if width == 4 else np.uint64).view(dtype))
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


def _dequantize(params: dict, raw_quantization: memoryview, count: int, channels: int, name: str) -> np.ndarray:
    quantization = pw.parse(raw_quantization, {N_BITS, LINEAR, LOOKUP_TABLE})
    if INT8_RAW_VALUE in params:
        data = sub(params, INT8_RAW_VALUE)
        if len(data) != count:
            raise ValueError(f"convolution layer {name!r}: {len(data):,} int8 weights for {count:,} values")
        q = np.frombuffer(data, "i1").astype(np.float32)
    else:
        bits = num(quantization, N_BITS)
        if not 1 <= bits <= 8:
            raise ValueError(f"convolution layer {name!r}: {bits}-bit quantized weights (1 to 8 bits are read)")
        q = unpack_bits(sub(params, RAW_VALUE), bits, count, msb_first=True, what=f"convolution layer {name!r}")
    linear, table = sub(quantization, LINEAR), sub(quantization, LOOKUP_TABLE)
    if table is not None:
        lut = pw.repeated_floats(pw.parse(table, {1}), 1)
        if INT8_RAW_VALUE in params or lut.size < 2 ** num(quantization, N_BITS):
            raise ValueError(f"convolution layer {name!r}: a lookup table of {lut.size} entries for {num(quantization, N_BITS)}-bit indices")
        return lut[q.astype(np.intp)]
    if linear is None:
        raise ValueError(f"convolution layer {name!r}: quantized weights without linear or lookup-table parameters")
    scales = pw.parse(linear, {1, 2})
    scale, bias = pw.repeated_floats(scales, 1), pw.repeated_floats(scales, 2)
    if scale.size not in (1, channels) or bias.size not in (0, 1, channels):
        raise ValueError(f"convolution layer {name!r}: {scale.size} scales and {bias.size} biases for {channels} output channels")
    per_channel = q.reshape(channels, -1)
    out = per_channel * scale.reshape(-1, 1) + (bias.reshape(-1, 1) if bias.size else np.float32(0))
    return out.astype(np.float32, copy=False).ravel()


def unpack_bits(data: memoryview | bytes, bits: int, count: int, msb_first: bool, what: str) -> np.ndarray:
    """``count`` unsigned ``bits``-bit integers packed into ``data`` (most or least significant bit
    of each byte first), as int64; the byte count is checked before anything is expanded."""
    need = (count * bits + 7) // 8
    if len(data) != need:
        raise ValueError(f"{what}: {len(data):,} bytes of {bits}-bit values, {need:,} needed for {count:,}")
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw.astype(np.int64)
    flat = np.unpackbits(raw, bitorder="big" if msb_first else "little")[: count * bits].reshape(count, bits)
    weights = 1 << (np.arange(bits)[::-1] if msb_first else np.arange(bits))
    return flat.astype(np.int64) @ weights
