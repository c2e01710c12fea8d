"""OpenVINO IR models: an ``.xml`` graph (IR version 10 and later) and its ``.bin`` weights by stem.

``Convolution`` and ``GroupConvolution`` layers with 2-D kernels are returned (never the
``*BackpropData`` transposed convolutions). A weight input is followed back through the ``<edges>``
to its ``Const`` layers, whose bytes are read from the ``.bin`` by offset and size, through
``Convert`` (fp16 -> fp32), ``Subtract`` / ``Multiply`` dequantization (``(q - zero) * scale``),
``FakeQuantize`` and ``Reshape``. A ``GroupConvolution`` weight ``(G, O/G, I/G, kh, kw)`` becomes
``(O, I/G, kh, kw)`` with ``groups=G``. Depth is the longest-path level counted in convolutions, as
for ONNX graphs.

The XML is untrusted: a document declaring a DOCTYPE or an ENTITY is refused before it is parsed,
so no entity is ever expanded.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from filtershift.readers.files import inside, read_range
from filtershift.types import ConvWeight

CONV_TYPES = {"Convolution": 4, "GroupConvolution": 5}  # layer type -> rank of a 2-D conv's weight
ELEMENT_TYPES = {
    "f64": "<f8", "f32": "<f4", "f16": "<f2", "i64": "<i8", "i32": "<i4", "i16": "<i2", "i8": "i1",
    "u64": "<u8", "u32": "<u4", "u16": "<u2", "u8": "u1", "boolean": "u1",
}
MAX_CHAIN = 16  # layers between a convolution and the Const that feeds its weight
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def sniff(path: Path, head: bytes) -> bool:
    return path.is_file() and b"<net " in head and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def companions(path: Path) -> list[Path]:
    weights = inside(path.parent, path.stem + ".bin", "OpenVINO weights")
    return [weights] if weights.is_file() else []


@dataclass
class _Layer:
    id: str
    type: str
    name: str
    data: dict[str, str]
    inputs: list[str] = field(default_factory=list)  # input port ids, in order


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    layers, producers = _parse_graph(path.read_bytes())
    weights = inside(path.parent, path.stem + ".bin", "OpenVINO weights")
    if not weights.is_file():
        raise ValueError(f"the OpenVINO weights {weights.name} are missing next to {path.name}")
    graph = _Graph(layers, producers, weights)
    level_of: dict[str, int] = {}
    convs = []
    for layer in _topological(layers, producers):
        upstream = max((level_of.get(producers[(layer.id, port)][0], -1) for port in layer.inputs if (layer.id, port) in producers), default=-1)
        if layer.type not in CONV_TYPES:
            level_of[layer.id] = upstream
            continue
        level_of[layer.id] = upstream + 1
        if len(layer.inputs) < 2:
            raise ValueError(f"{layer.type} layer {layer.name}: fewer than two inputs")
        weight = graph.value(layer.id, layer.inputs[1], 0)
        if weight is None:
            raise ValueError(f"{layer.type} layer {layer.name}: its weight is computed at run time, not stored; cannot extract it")
        if weight.ndim != CONV_TYPES[layer.type]:
            continue  # a 1-D or 3-D convolution
        groups = 1
        if layer.type == "GroupConvolution":
            groups = weight.shape[0]
            weight = weight.reshape(groups * weight.shape[1], *weight.shape[2:])
        convs.append(ConvWeight(name=layer.name, level=level_of[layer.id], weight=weight.astype(np.float32, copy=False), groups=int(groups)))
    return convs


def _parse_graph(xml: bytes) -> tuple[dict[str, _Layer], dict[tuple[str, str], tuple[str, str]]]:
    """The layers by id and ``(to layer, to port) -> (from layer, from port)`` from the edges."""
    if _DECLARATION.search(xml):
        raise ValueError("the OpenVINO XML declares a DOCTYPE or ENTITY; refused (entity expansion is not allowed)")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"not a readable OpenVINO XML ({exc})") from None
    if root.tag != "net":
        raise ValueError(f"not an OpenVINO IR: the XML's root is <{root.tag}>, not <net>")
    version = root.get("version", "")
    if not version.isdigit() or int(version) < 10:
        raise ValueError(f"OpenVINO IR version {version or '?'} is not supported (only IR v10 and later)")
    layers = {}
    for element in root.iterfind("layers/layer"):
        data = element.find("data")
        ports = [p.get("id", "") for p in element.iterfind("input/port")]
        layer = _Layer(element.get("id", ""), element.get("type", ""), element.get("name", ""), dict(data.attrib) if data is not None else {}, ports)
        layers[layer.id] = layer
    if not layers:
        raise ValueError("the OpenVINO XML has no layers")
    producers = {}
    for edge in root.iterfind("edges/edge"):
        to = (edge.get("to-layer", ""), edge.get("to-port", ""))
        source = (edge.get("from-layer", ""), edge.get("from-port", ""))
        if to[0] not in layers or source[0] not in layers:
            raise ValueError(f"an OpenVINO edge joins layers that do not exist ({source[0]} -> {to[0]})")
        producers[to] = source
    return layers, producers


def _topological(layers: dict[str, _Layer], producers: dict) -> list[_Layer]:
    """The layers in an order where every producer comes before its consumers (Kahn's algorithm,
    file order among the ready ones); a cycle is refused."""
    consumers: dict[str, list[str]] = {}
    waiting = {layer_id: 0 for layer_id in layers}
    for (to, _), (source, _) in producers.items():
        consumers.setdefault(source, []).append(to)
        waiting[to] += 1
    ready = [layer_id for layer_id, n in waiting.items() if n == 0][::-1]
    order = []
    while ready:
        layer_id = ready.pop()
        order.append(layers[layer_id])
        for to in reversed(consumers.get(layer_id, [])):
            waiting[to] -= 1
            if waiting[to] == 0:
                ready.append(to)
    if len(order) != len(layers):
        raise ValueError("the OpenVINO graph has a cycle; cannot order its layers")
    return order


class _Graph:
    """Values of the stored tensors a weight is computed from (Const bytes through Convert,
    Subtract, Multiply, FakeQuantize and Reshape), ``None`` when one depends on a run-time input."""

    def __init__(self, layers: dict[str, _Layer], producers: dict, weights: Path):
        self.layers, self.producers, self.weights = layers, producers, weights
        self.size = weights.stat().st_size

    def value(self, layer_id: str, port: str, depth: int) -> np.ndarray | None:
        source = self.producers.get((layer_id, port))
        if source is None or depth > MAX_CHAIN:
            return None
        layer = self.layers[source[0]]
        if layer.type == "Const":
            return self._const(layer)
        inputs = [self.value(layer.id, p, depth + 1) for p in layer.inputs]
        if any(x is None for x in inputs) or not inputs:
            return None
        if layer.type == "Convert":
            return inputs[0].astype(np.float32)
        if layer.type in ("Subtract", "Multiply") and len(inputs) == 2:
            a, b = (x.astype(np.float32, copy=False) for x in inputs)
            _check_broadcast(layer, a, b)
            return a - b if layer.type == "Subtract" else a * b
        if layer.type == "FakeQuantize" and len(inputs) == 5:
            return _fake_quantize(layer, *(x.astype(np.float32, copy=False) for x in inputs))
        if layer.type == "Reshape" and len(inputs) == 2:
            return _reshape(layer, *inputs)
        return None

    def _const(self, layer: _Layer) -> np.ndarray:
        element = layer.data.get("element_type", "")
        if element not in ELEMENT_TYPES:
            raise ValueError(f"Const {layer.name}: element type {element!r} is not supported")
        shape = _shape(layer)
        dtype = np.dtype(ELEMENT_TYPES[element])
        try:
            offset, size = int(layer.data.get("offset", "")), int(layer.data.get("size", ""))
        except ValueError:
            raise ValueError(f"Const {layer.name}: no integer offset and size in its data") from None
        count = int(np.prod(shape, dtype=object))
        if count * dtype.itemsize != size:
            raise ValueError(f"Const {layer.name}: shape {shape} of {element} needs {count * dtype.itemsize:,} bytes, its size says {size:,}")
        raw = read_range(self.weights, offset, size, f"Const {layer.name}")
        return np.frombuffer(raw, dtype).reshape(shape)


def _shape(layer: _Layer) -> tuple[int, ...]:
    text = layer.data.get("shape", "").strip()
    try:
        shape = tuple(int(d) for d in text.split(",")) if text else ()
    except ValueError:
        raise ValueError(f"Const {layer.name}: shape {text!r} is not a list of integers") from None
    if len(shape) > 8 or any(d < 0 for d in shape):
        raise ValueError(f"Const {layer.name}: shape {text!r} is not a stored tensor's shape")
    return shape


def _check_broadcast(layer: _Layer, a: np.ndarray, b: np.ndarray) -> None:
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{layer.type} {layer.name}: shapes {a.shape} and {b.shape} do not broadcast") from None
    if shape != a.shape and shape != b.shape:  # a result larger than both stored operands
        raise ValueError(f"{layer.type} {layer.name}: shapes {a.shape} and {b.shape} broadcast to {shape}, larger than either")


def _fake_quantize(layer: _Layer, x, in_low, in_high, out_low, out_high) -> np.ndarray:
    """OpenVINO's FakeQuantize: clamp to the input range, round to ``levels`` steps, map onto the
    output range."""
    try:
        levels = int(layer.data.get("levels", ""))
    except ValueError:
        raise ValueError(f"FakeQuantize {layer.name}: no integer 'levels'") from None
    if levels < 2:
        raise ValueError(f"FakeQuantize {layer.name}: levels={levels} (at least 2 needed)")
    for bound in (in_low, in_high, out_low, out_high):
        _check_broadcast(layer, x, bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.round((x - in_low) / (in_high - in_low) * (levels - 1))
        out = steps / (levels - 1) * (out_high - out_low) + out_low
    out = np.where(x <= np.minimum(in_low, in_high), out_low, np.where(x > np.maximum(in_low, in_high), out_high, out))
    return out.astype(np.float32)


def _reshape(layer: _Layer, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    if target.ndim != 1 or target.dtype.kind not in "iu":
        raise ValueError(f"Reshape {layer.name}: its target shape is not a list of integers")
    dims = [int(d) for d in target]
    if layer.data.get("special_zero", "false").lower() == "true":
        dims = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(dims)]
    try:
        return x.reshape(dims)
    except ValueError:
        raise ValueError(f"Reshape {layer.name}: cannot reshape {x.shape} to {dims}") from None
