"""TensorFlow Lite models (``.tflite``): a FlatBuffer with file identifier ``TFL3``, read field by
field after the documented schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``) with the
bounds-checked decoder of :mod:`filtershift.readers.flatbuf`; TensorFlow is not needed.

Convolutions are the ``CONV_2D`` and ``DEPTHWISE_CONV_2D`` operators (``TRANSPOSE_CONV`` is not a
regular convolution and is not returned). A ``CONV_2D`` filter is OHWI: kernel (o, i) is
``W[o, :, :, i]``; its groups are the input's channels over the filter's ``I``. A
``DEPTHWISE_CONV_2D`` filter is ``[1, H, W, C * M]``: one kernel per output channel, groups = C (the
input tensor's channels, or ``C * M / depth_multiplier`` when the input shape is unknown).
A filter is a constant tensor, or the output of ``DEQUANTIZE`` (float16 or int8 weights) or
``DENSIFY`` (sparse weights) of one; stored values are dequantized to float32
(see :mod:`filtershift.readers.tflite_tensors`). Buffers are read inside the flatbuffer, or at the
offset and size a buffer gives relative to the start of the file (how converters store models
over 2 GB); weights in separate external files are refused.

Depth is the longest-path level over the operator graph counted in convolutions, as for ONNX: a
conv is one level deeper than the deepest conv upstream of it. Only subgraph 0, the main graph
that runs the model, is read: other subgraphs are control-flow bodies (``WHILE``, ``IF``, ``CALL_ONCE``)
and their convolutions are not returned.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from filtershift.readers import flatbuf
from filtershift.readers.tflite_tensors import dequantized, stored_values
from filtershift.types import ConvWeight

IDENTIFIER = b"TFL3"
CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, DENSIFY = 3, 4, 6, 124
PASS_THROUGH = (DEQUANTIZE, DENSIFY)  # ops whose output is their (constant) input, decoded
MAX_CHAIN = 4


def sniff(path: Path, head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == IDENTIFIER


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"a {size}-byte file is not a TFLite model")
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _Model(buf).convolutions()
    except (ValueError, IndexError, OverflowError, struct.error) as exc:
        raise ValueError(f"not a readable TFLite model: {exc}") from None


class _Model:
    def __init__(self, buf):
        self.buf = buf
        model = flatbuf.root(buf, IDENTIFIER, "the model")
        if model.scalar(0, "I") != 3:
            raise ValueError(f"schema version {model.scalar(0, 'I')}, not 3")
        self.codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in model.tables(1, "operator codes")]
        subgraphs = model.tables(2, "subgraphs")
        if not subgraphs:
            raise ValueError("the model has no subgraph")
        self.buffers = model.tables(4, "buffers")
        graph = subgraphs[0]
        self.tensors = graph.tables(0, "tensors")
        self.operators = graph.tables(3, "operators")
        if not self.operators:
            raise ValueError("subgraph 0 has no operators")
        self.ops = [self._operator(i, op) for i, op in enumerate(self.operators)]
        self.producer = {out: i for i, (_, _, outs) in enumerate(self.ops) for out in outs}

    def _operator(self, i: int, op) -> tuple[int, list[int], list[int]]:
        index = op.scalar(0, "I")
        if index >= len(self.codes):
            raise ValueError(f"operator {i} uses operator code {index} of {len(self.codes)}")
        inputs = [int(t) for t in op.numbers(1, "<i4", f"operator {i}'s inputs")]
        outputs = [int(t) for t in op.numbers(2, "<i4", f"operator {i}'s outputs")]
        for t in inputs + outputs:
            if not -1 <= t < len(self.tensors):
                raise ValueError(f"operator {i} names tensor {t} of {len(self.tensors)}")
        return self.codes[index], inputs, [t for t in outputs if t >= 0]

    def convolutions(self) -> list[ConvWeight]:
        level_of: dict[int, int] = {}
        convs = []
        for i, (code, inputs, outputs) in enumerate(self.ops):
            upstream = max((level_of.get(t, -1) for t in inputs if t >= 0), default=-1)
            is_conv = code in (CONV_2D, DEPTHWISE_CONV_2D)
            for out in outputs:
                level_of[out] = upstream + 1 if is_conv else upstream
            if is_conv:
                convs.append(self._conv(i, code, inputs, upstream + 1))
        return convs

    def _conv(self, i: int, code: int, inputs: list[int], level: int) -> ConvWeight:
        kind = "CONV_2D" if code == CONV_2D else "DEPTHWISE_CONV_2D"
        if len(inputs) < 2 or inputs[1] < 0:
            raise ValueError(f"{kind} operator {i} has no filter input")
        label = self._name(inputs[1]) or f"{kind}_{i}"
        weight = self._constant(inputs[1], 0)
        if weight is None:
            raise ValueError(f"{kind} operator {i} ({label}): its filter is computed at run time, not stored; cannot extract it")
        if weight.ndim != 4:
            raise ValueError(f"{kind} operator {i} ({label}): a {weight.ndim}-D filter {weight.shape}, not 4-D")
        channels = self._channels(inputs[0])
        if code == CONV_2D:
            oihw = weight.transpose(0, 3, 1, 2)
            per_group = weight.shape[3]
            groups = channels // per_group if channels and per_group and channels % per_group == 0 else 1
        else:
            if weight.shape[0] != 1:
                raise ValueError(f"DEPTHWISE_CONV_2D operator {i} ({label}): filter shape {weight.shape}, not [1, H, W, C*M]")
            oihw = weight[0].transpose(2, 0, 1)[:, None]
            groups = channels or weight.shape[3] // max(self._depth_multiplier(i), 1)
            if groups <= 0 or weight.shape[3] % groups:
                raise ValueError(f"DEPTHWISE_CONV_2D operator {i} ({label}): {weight.shape[3]} output channels for {groups} input channels")
        return ConvWeight(name=label, level=level, weight=np.ascontiguousarray(oihw, dtype=np.float32), groups=int(groups))

    def _constant(self, t: int, depth: int) -> np.ndarray | None:
        """Tensor ``t``'s stored value as float32, through DEQUANTIZE / DENSIFY; None if computed."""
        tensor = self.tensors[t]
        data = self._buffer(tensor.scalar(2, "I"), t)
        if data is not None:
            name = self._name(t) or f"#{t}"
            return dequantized(tensor, stored_values(tensor, data, name, len(self.buf)), name)
        producer = self.producer.get(t)
        if producer is None or depth >= MAX_CHAIN:
            return None
        code, inputs, _ = self.ops[producer]
        if code not in PASS_THROUGH or not inputs or inputs[0] < 0:
            return None
        return self._constant(inputs[0], depth + 1)

    def _buffer(self, index: int, t: int):
        """The bytes of buffer ``index`` (a view of the file), or None when it holds nothing."""
        if index >= len(self.buffers):
            raise ValueError(f"tensor {t} uses buffer {index} of {len(self.buffers)}")
        if self.tensors[t].scalar(10, "I"):
            raise ValueError(f"tensor {t}: its data lives in an external file, which is not read")
        buffer = self.buffers[index]
        data = buffer.numbers(0, "u1", f"buffer {index}")
        if data.size:
            return data
        offset, size = buffer.scalar(1, "Q"), buffer.scalar(2, "Q")
        if offset <= 1 or size == 0:  # 0: unused; 1: the converter's placeholder
            return None
        if offset + size > len(self.buf):
            raise ValueError(f"buffer {index}: bytes {offset:,}..{offset + size:,} lie past the end of the {len(self.buf):,}-byte file")
        return np.frombuffer(self.buf, np.uint8, count=size, offset=offset)

    def _name(self, t: int) -> str:
        """Tensor ``t``'s name; of a fused name ("a/Relu;a/Conv2D") the last part."""
        return self.tensors[t].string(3, "name").rsplit(";", 1)[-1]

    def _channels(self, t: int) -> int:
        """The input's channel count (NHWC), 0 when unknown."""
        if t < 0:
            return 0
        shape = self.tensors[t].numbers(0, "<i4", f"tensor {t}'s shape")
        return int(shape[-1]) if shape.size == 4 and shape[-1] > 0 else 0

    def _depth_multiplier(self, i: int) -> int:
        options = self.operators[i].table(4, f"operator {i}'s options")
        return options.scalar(3, "i") if options is not None else 1

