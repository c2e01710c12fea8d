"""ONNX models: ``Conv`` nodes (never ``ConvTranspose``) with 2-D kernels, and quantized
``QLinearConv`` nodes, whose weights are dequantized to float32.

Weights come from initializers, ``Constant`` nodes or external data (which must lie inside the
model's folder), through ``Identity`` / ``Cast`` / ``DequantizeLinear`` chains. Depth is the
longest-path level from the graph inputs counted in convolutions: a conv is one level deeper than
the deepest conv upstream of it, so parallel convs share a level (docs/design.md §2). Subgraphs of
control-flow nodes (``If``, ``Loop``) are not searched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from filtershift.types import ConvWeight

CONV_OPS = {"Conv": 1, "QLinearConv": 3}  # op -> index of the weight input


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise ValueError(f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    graph = model.graph
    if not graph.node:
        raise ValueError("the ONNX file has an empty graph; is it an ONNX model?")
    weights = _StoredTensors(graph, path.parent)
    level_of: dict[str, int] = {}
    convs = []
    for i, node in enumerate(graph.node):
        upstream = max((level_of.get(name, -1) for name in node.input if name), default=-1)
        if node.op_type not in CONV_OPS or node.domain not in ("", "ai.onnx"):
            for out in node.output:
                level_of[out] = upstream
            continue
        level = upstream + 1
        for out in node.output:
            level_of[out] = level
        label = node.name or f"{node.op_type}_{i}"
        weight = weights.value(node.input[CONV_OPS[node.op_type]])
        if weight is None:
            raise ValueError(f"{node.op_type} node {label}: its weight is computed at run time, not stored; cannot extract it")
        if node.op_type == "QLinearConv":
            weight = _dequantize(weight, weights.value(node.input[4]), weights.value(node.input[5]), axis=0)
        if weight.ndim == 4:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            convs.append(ConvWeight(name=label, level=level, weight=_as_float32(weight), groups=int(groups)))
    return convs


class _StoredTensors:
    """Values of a graph's stored tensors (initializers, Constant outputs), reached through
    Identity / Cast / DequantizeLinear chains; external data only from inside ``folder``."""

    def __init__(self, graph, folder: Path):
        self.folder = folder.resolve()
        self.tensors = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == attr.TENSOR:
                        self.tensors[node.output[0]] = attr.t
        self.producers = {out: node for node in graph.node for out in node.output}

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if name in self.tensors:
            return self._array(self.tensors[name])
        node = self.producers.get(name)
        if node is None or depth > 8:
            return None
        if node.op_type in ("Identity", "Cast"):
            value = self.value(node.input[0], depth + 1)
            return None if value is None else _as_float32(value)
        if node.op_type == "DequantizeLinear":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            raw = self.value(node.input[0], depth + 1)
            scale = self.value(node.input[1], depth + 1)
            zero = self.value(node.input[2], depth + 1) if len(node.input) > 2 and node.input[2] else None
            return None if raw is None else _dequantize(raw, scale, zero, axis)
        return None

    def _array(self, tensor) -> np.ndarray:
        from onnx import TensorProto, numpy_helper

        if tensor.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(tensor)
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (self.folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(self.folder):
            raise ValueError(f"tensor {tensor.name!r}: external data {location!r} lies outside the model's folder; refused")
        if not target.is_file():
            raise ValueError(f"tensor {tensor.name!r}: external data file {location!r} is missing next to the model")
        return numpy_helper.to_array(tensor, base_dir=str(self.folder))


def _as_float32(array: np.ndarray) -> np.ndarray:
    """fp16 / bf16 / fp64 -> float32; integers (quantized weights) stay as they are."""
    if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
        return array.astype(np.float32, copy=False)
    return array


def _dequantize(raw: np.ndarray, scale: np.ndarray | None, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32, per tensor or per ``axis``."""
    if scale is None:
        raise ValueError("quantized convolution without a stored weight scale; cannot dequantize")
    q = raw.astype(np.float32)
    shape = [1] * q.ndim
    per_axis = np.ndim(scale) == 1 and q.ndim > 1
    if per_axis:
        shape[axis] = -1
    scale = np.asarray(scale, np.float32).reshape(shape if per_axis else ())
    zero = np.zeros((), np.float32) if zero is None else np.asarray(zero, np.float32).reshape(shape if per_axis else ())
    return (q - zero) * scale
