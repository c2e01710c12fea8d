"""ONNX models: ``Conv`` nodes (never ``ConvTranspose``) with 2-D kernels, and quantized
``QLinearConv`` nodes, whose weights are dequantized to float32.

Weights come from initializers, ``Constant`` nodes or external data (which must lie inside the
model's folder), through ``Identity`` / ``Cast`` / ``DequantizeLinear`` chains. Depth is the
longest-path level from the graph inputs counted in convolutions: a conv is one level deeper than
the deepest conv upstream of it, so parallel convs share a level (docs/design.md §2). Subgraphs of
control-flow nodes (``If``, ``Loop``) are not searched.

The file is memory-mapped and decoded with :mod:`filtershift.readers.protowire` by onnx.proto's field
numbers: nodes are decoded, an initializer only down to its name until a convolution needs its value,
and every other payload is skipped by its length. Weights are read-only views of the mapping (:mod:`.onnx_tensors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.readers.onnx_tensors import Tensor, mapped
from filtershift.types import ConvWeight

CONV_OPS = {"Conv": 1, "QLinearConv": 3}  # op -> index of the weight input
MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_NODE, GRAPH_INITIALIZER = 1, 5  # GraphProto
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 2, 3, 4, 5, 7  # NodeProto
ATTR_NAME, ATTR_I, ATTR_T, ATTR_TYPE, ATTR_TENSOR = 1, 3, 5, 20, 4  # AttributeProto, and its type TENSOR


class _Node(NamedTuple):
    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attributes: list[memoryview]  # AttributeProto wire bytes, decoded only for the nodes that need them

    def attribute(self, name: str) -> dict[int, list] | None:
        """The first attribute called ``name``, as its fields (``None`` if absent)."""
        for wire in self.attributes:
            fields = pw.parse(wire, {ATTR_NAME, ATTR_I, ATTR_T, ATTR_TYPE})
            if pw.text(_last(fields, ATTR_NAME)) == name:
                return fields
        return None

    def int_attribute(self, name: str, default: int) -> int:
        fields = self.attribute(name)
        return default if fields is None else pw.signed(_int(_last(fields, ATTR_I, 0)))


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    try:
        nodes, initializers = _graph(mapped(path))
    except (ValueError, OSError) as exc:
        raise ValueError(f"not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not nodes:
        raise ValueError("the ONNX file has an empty graph; is it an ONNX model?")
    weights = _StoredTensors(nodes, initializers, path.parent)
    level_of: dict[str, int] = {}
    convs = []
    for i, node in enumerate(nodes):
        upstream = max((level_of.get(name, -1) for name in node.inputs if name), default=-1)
        if node.op_type not in CONV_OPS or node.domain not in ("", "ai.onnx"):
            for out in node.outputs:
                level_of[out] = upstream
            continue
        level = upstream + 1
        for out in node.outputs:
            level_of[out] = level
        label = node.name or f"{node.op_type}_{i}"
        weight = weights.value(_input(node, CONV_OPS[node.op_type], label))
        if weight is None:
            raise ValueError(f"{node.op_type} node {label}: its weight is computed at run time, not stored; cannot extract it")
        if node.op_type == "QLinearConv":
            weight = _dequantize(weight, weights.value(_input(node, 4, label)), weights.value(_input(node, 5, label)), axis=0)
        if weight.ndim == 4:
            weight = _as_float32(weight)
            if weight.dtype.kind in "biu":  # Conv takes floats only: a corrupt or hostile data type
                raise ValueError(f"{node.op_type} node {label}: its weight is {weight.dtype}, not floating point")
            convs.append(ConvWeight(name=label, level=level, weight=weight, groups=int(node.int_attribute("group", 1))))
    return convs


def _graph(data: memoryview) -> tuple[list[_Node], list[Tensor]]:
    """The graph's nodes (in order) and initializers; every graph field is visited, as protobuf
    merges repeated occurrences of a message. Payloads nobody reads are skipped by their length."""
    nodes: list[_Node] = []
    initializers: list[Tensor] = []
    for number, _, graph in pw.fields(data):
        if number != MODEL_GRAPH or isinstance(graph, int):
            continue
        for field, _, value in pw.fields(graph):
            if isinstance(value, int):
                continue
            if field == GRAPH_NODE:
                node = pw.parse(value, {NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP, NODE_ATTRIBUTE, NODE_DOMAIN})
                nodes.append(_Node(
                    op_type=pw.text(_last(node, NODE_OP)), domain=pw.text(_last(node, NODE_DOMAIN)), name=pw.text(_last(node, NODE_NAME)),
                    inputs=[pw.text(v) for v in node.get(NODE_INPUT, [])], outputs=[pw.text(v) for v in node.get(NODE_OUTPUT, [])],
                    attributes=node.get(NODE_ATTRIBUTE, []),
                ))
            elif field == GRAPH_INITIALIZER:
                initializers.append(Tensor(value))
    return nodes, initializers


def _input(node: _Node, index: int, label: str) -> str:
    if index >= len(node.inputs):
        raise ValueError(f"{node.op_type} node {label} has {len(node.inputs)} inputs; its weight would be input {index}")
    return node.inputs[index]


def _last(message: dict[int, list], number: int, default=None):
    values = message.get(number)
    return values[-1] if values else default


def _int(value) -> int:
    if not isinstance(value, int):
        raise ValueError("corrupt ONNX attribute (bytes where an integer belongs)")
    return value


class _StoredTensors:
    """Values of a graph's stored tensors (initializers, Constant outputs), reached through
    Identity / Cast / DequantizeLinear chains; external data only from inside ``folder``."""

    def __init__(self, nodes: list[_Node], initializers: list[Tensor], folder: Path):
        self.folder = folder.resolve()
        self.files: dict[Path, memoryview] = {}  # external data files, mapped once each
        self.tensors = {t.name: t for t in initializers}
        for node in nodes:
            if node.op_type == "Constant" and node.outputs:
                for wire in node.attributes:
                    attr = pw.parse(wire, {ATTR_NAME, ATTR_T, ATTR_TYPE})
                    if pw.text(_last(attr, ATTR_NAME)) == "value" and _last(attr, ATTR_TYPE) == ATTR_TENSOR and ATTR_T in attr:
                        self.tensors[node.outputs[0]] = Tensor(_last(attr, ATTR_T))
        self.producers = {out: node for node in nodes for out in node.outputs}

    def value(self, name: str, depth: int = 0) -> np.ndarray | None:
        if name in self.tensors:
            return self.tensors[name].value(self.folder, self.files)
        node = self.producers.get(name)
        if node is None or depth > 8:
            return None
        if node.op_type in ("Identity", "Cast"):
            value = self.value(node.inputs[0], depth + 1) if node.inputs else None
            return None if value is None else _as_float32(value)
        if node.op_type == "DequantizeLinear":
            axis = node.int_attribute("axis", 1)
            raw = self.value(node.inputs[0], depth + 1) if node.inputs else None
            scale = self.value(node.inputs[1], depth + 1) if len(node.inputs) > 1 else None
            zero = self.value(node.inputs[2], depth + 1) if len(node.inputs) > 2 and node.inputs[2] else None
            return None if raw is None else _dequantize(raw, scale, zero, axis)
        return None


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
