"""TensorFlow.js models: ``model.json`` (topology + weights manifest) beside its weight shards
(``group1-shard1of2.bin`` ...), read without TensorFlow. The manifest row names the ``model.json``.

Weights: each manifest group's shard files (``paths``, resolved inside the model's folder) are one
byte stream holding the group's weights in order, each ``prod(shape)`` values of its stored dtype
(``quantization.dtype`` when quantized, else ``dtype``; strings are a uint32 length and the bytes per
element). Quantized weights are dequantized to float32: ``float16`` as is, ``uint8`` / ``uint16`` as
``q * scale + min``. Every size is checked against the shards' bytes before a read.

Layer kinds:
- layers models (``format`` ``layers-model``): the Keras config in ``modelTopology.model_config``.
  ``Conv2D`` (``kernel``, HWIO, ``groups`` from its config), ``DepthwiseConv2D``
  (``depthwise_kernel`` (H, W, C, M), groups = C), ``SeparableConv2D`` (its depthwise part, then its
  1x1 pointwise part one level deeper); ``Conv2DTranspose`` excluded; nested models walked. Depth is
  the longest-path level over the layers' ``inbound_nodes`` (a Sequential model: layer order).
  A layer's weight is the manifest entry named ``<layer>/<weight>`` (or ending in it).
- graph models (``graph-model``): the GraphDef as JSON; ``Conv2D``, ``DepthwiseConv2dNative``,
  ``_FusedConv2D``, ``FusedDepthwiseConv2dNative`` whose filter input is a manifest weight (through
  ``Identity``), walked as :mod:`filtershift.readers.tf_graph` walks a SavedModel's graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from filtershift.readers import tf_graph
from filtershift.readers.files import inside, read_range
from filtershift.readers.tf_savedmodel import conv_weight
from filtershift.types import ConvWeight

MAX_JSON_BYTES = 1 << 30
SNIFF_BYTES = 4096
WIDTHS = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2, "int8": 1, "int16": 2, "complex64": 8}
CONV_LAYERS = {"Conv2D": "kernel", "Convolution2D": "kernel", "DepthwiseConv2D": "depthwise_kernel"}
SEPARABLE_LAYERS = ("SeparableConv2D", "SeparableConvolution2D")


def sniff(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as f:
            start = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return start.lstrip().startswith(b"{") and (b'"modelTopology"' in start or b'"weightsManifest"' in start)


def load_json(path: Path) -> dict:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path.name} is {size:,} bytes; a TF.js model.json that large is refused")
    try:
        model = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(model, dict) or not isinstance(model.get("weightsManifest"), list):
        raise ValueError(f"{path.name} has no weightsManifest list; is it a TF.js model.json?")
    return model


def _groups(model: dict) -> list[dict]:
    groups = model["weightsManifest"]
    if not all(isinstance(g, dict) and isinstance(g.get("paths"), list) and isinstance(g.get("weights"), list) for g in groups):
        raise ValueError("a weightsManifest group without a paths list and a weights list")
    return groups


def companions(path: Path) -> list[Path]:
    """The weight shards the manifest names, inside the model's folder."""
    shards = []
    for group in _groups(load_json(path)):
        for name in group["paths"]:
            shard = inside(path.parent, str(name), "weight shard")
            if not shard.is_file():
                raise ValueError(f"weight shard {shard.name} named by {path.name} is missing")
            if shard not in shards and shard != path.resolve():
                shards.append(shard)
    return shards


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    model = load_json(path)
    weights = Weights(path, _groups(model))
    topology = model.get("modelTopology")
    if not isinstance(topology, dict):
        raise ValueError(f"{path.name} has no modelTopology; a weights-only manifest gives no layer kinds")
    if "node" in topology:
        return _graph_convs(topology, weights)
    config = topology.get("model_config", topology)
    convs: list[ConvWeight] = []
    _walk_layers(config, weights, -1, convs)
    return sorted(convs, key=lambda c: c.level)


class Weights:
    """The manifest's weights, located (group, offset, size) without reading them."""

    def __init__(self, path: Path, groups: list[dict]):
        self.where: dict[str, tuple] = {}
        for group in groups:
            shards = [inside(path.parent, str(p), "weight shard") for p in group["paths"]]
            for shard in shards:
                if not shard.is_file():
                    raise ValueError(f"weight shard {shard.name} named by {path.name} is missing")
            stream = _Stream(shards)
            offset = 0
            for entry in group["weights"]:
                name, dtype, shape = _entry(entry)
                if dtype == "string":
                    size = stream.string_bytes(offset, int(np.prod(shape, dtype=object)), name)
                else:
                    size = int(np.prod(shape, dtype=object)) * WIDTHS[dtype]
                if offset + size > stream.size:
                    raise ValueError(f"weight {name!r} of shape {shape} needs bytes {offset:,}..{offset + size:,}; its shards hold {stream.size:,}")
                self.where[name] = (stream, offset, size, dtype, shape, entry.get("quantization"))
                offset += size

    def array(self, name: str) -> np.ndarray:
        stream, offset, size, dtype, shape, quantization = self.where[name]
        if dtype not in ("float32", "float16", "uint8", "uint16"):
            raise ValueError(f"weight {name!r} is stored as {dtype}, not a floating or quantized weight")
        stored = {"float32": "<f4", "float16": "<f2", "uint8": "u1", "uint16": "<u2"}[dtype]
        values = np.frombuffer(stream.read(offset, size, name), stored).reshape(shape)
        if dtype in ("uint8", "uint16"):
            if not isinstance(quantization, dict) or not all(isinstance(quantization.get(k), (int, float)) for k in ("scale", "min")):
                raise ValueError(f"weight {name!r} is {dtype}-quantized without a numeric scale and min")
            return (values.astype(np.float64) * quantization["scale"] + quantization["min"]).astype(np.float32)
        return values.astype(np.float32)


def _entry(entry) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("shape"), list):
        raise ValueError(f"a weightsManifest entry without a name and a shape: {str(entry)[:80]}")
    shape = entry["shape"]
    if not all(isinstance(d, int) and 0 <= d for d in shape) or len(shape) > 8:
        raise ValueError(f"weight {entry['name']!r} has an invalid shape {shape[:8]}")
    quantization = entry.get("quantization")
    dtype = quantization.get("dtype") if isinstance(quantization, dict) else entry.get("dtype", "float32")
    if dtype not in WIDTHS and dtype != "string":
        raise ValueError(f"weight {entry['name']!r} has an unknown dtype {dtype!r}")
    return entry["name"].removesuffix(":0"), dtype, tuple(shape)


class _Stream:
    """Shard files read as one byte stream."""

    def __init__(self, shards: list[Path]):
        self.shards = [(s, s.stat().st_size) for s in shards]
        self.size = sum(n for _, n in self.shards)

    def read(self, offset: int, size: int, what: str) -> bytes:
        parts, start = [], 0
        for shard, length in self.shards:
            lo, hi = max(offset, start), min(offset + size, start + length)
            if lo < hi:
                parts.append(read_range(shard, lo - start, hi - lo, f"weight {what!r}"))
            start += length
        data = b"".join(parts)
        if len(data) != size:
            raise ValueError(f"weight {what!r}: its shards end early")
        return data

    def string_bytes(self, offset: int, count: int, what: str) -> int:
        """The stored size of ``count`` strings (uint32 length, bytes) at ``offset``."""
        pos = offset
        for _ in range(count):
            length = int.from_bytes(self.read(pos, 4, what), "little") if pos + 4 <= self.size else self.size
            pos += 4 + length
            if pos > self.size:
                raise ValueError(f"string weight {what!r} runs past the end of its shards")
        return pos - offset


def _graph_convs(topology: dict, weights: Weights) -> list[ConvWeight]:
    nodes = tuple(_json_node(n, weights) for n in topology.get("node", []))
    library = topology.get("library") or {}
    functions = {}
    for function in library.get("function", []) if isinstance(library, dict) else []:
        signature = function.get("signature", {})
        body = tuple(_json_node(n, weights) for n in function.get("nodeDef", []))
        outputs = [a.get("name", "") for a in signature.get("outputArg", [])]
        ret = function.get("ret", {})
        functions[signature.get("name", "")] = tf_graph.Function(signature.get("name", ""), tuple(a.get("name", "") for a in signature.get("inputArg", [])),
                                                                 tuple(ret.get(o, "") for o in outputs), body)
    walk = tf_graph.Walk(functions)
    walk.nodes(nodes, {})
    convs, done = [], set()
    for use in sorted(walk.uses, key=lambda u: u.level):
        if use.variable is None:
            raise ValueError(f"{use.op} node {use.node}: its filter is computed at run time, not a stored weight; cannot extract it")
        if use.variable not in done:
            done.add(use.variable)
            convs.append(conv_weight(use.node, use.level, weights.array(use.variable), use.op in tf_graph.DEPTHWISE_OPS))
    return convs


def _json_node(node, weights: Weights) -> tf_graph.Node:
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        raise ValueError(f"a graph node without a name: {str(node)[:80]}")
    inputs = node.get("input") or []
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise ValueError(f"graph node {node['name']!r} has malformed inputs")
    op = str(node.get("op", ""))
    func = ((node.get("attr") or {}).get("f") or {}).get("func") or {}
    variable = node["name"] if op == "Const" and node["name"] in weights.where else ""
    return tf_graph.Node(node["name"], op, tuple(inputs), str(func.get("name", "")) if isinstance(func, dict) else "", variable)


def _inbound(value) -> list[str]:
    """Names of the layers an ``inbound_nodes`` value reads (tf_keras lists or Keras 3 dicts)."""
    if isinstance(value, dict):
        history = (value.get("config") or {}).get("keras_history") if isinstance(value.get("config"), dict) else None
        if isinstance(history, list) and history and isinstance(history[0], str):
            return [history[0]]
        return [n for v in value.values() for n in _inbound(v)]
    if isinstance(value, list):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            return [value[0]]
        return [n for v in value for n in _inbound(v)]
    return []


def _walk_layers(config: dict, weights: Weights, upstream: int, convs: list[ConvWeight], depth: int = 0) -> int:
    """Append the convs of a (nested) Keras model config; the level of its output."""
    if depth > 32:
        raise ValueError("Keras models nest deeper than 32 levels")
    layers = (config.get("config") or {}).get("layers") if isinstance(config.get("config"), dict) else None
    if not isinstance(layers, list):
        raise ValueError("modelTopology holds no Keras layer list (model_config.config.layers)")
    out: dict[str, int] = {}
    last = upstream
    for layer in layers:
        if not isinstance(layer, dict):
            raise ValueError("a Keras layer config that is not an object")
        layer_config = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        name = str(layer.get("name") or layer_config.get("name", ""))
        inbound = [out[n] for n in _inbound(layer.get("inbound_nodes", [])) if n in out]
        before = last if "inbound_nodes" not in layer else max(inbound, default=upstream)  # Sequential: the layer before
        level = _layer(layer, layer_config, name, weights, before, convs, depth)
        out[name] = last = level
    return max(out.values(), default=upstream) if config.get("class_name") != "Sequential" else last


def _layer(layer: dict, config: dict, name: str, weights: Weights, before: int, convs: list[ConvWeight], depth: int) -> int:
    kind = layer.get("class_name")
    if isinstance(config.get("layers"), list):
        return _walk_layers(layer, weights, before, convs, depth + 1)
    if kind in CONV_LAYERS:
        conv = conv_weight(name, before + 1, weights.array(_weight_name(weights, name, CONV_LAYERS[kind])), kind == "DepthwiseConv2D")
        groups = int(config.get("groups", 1) or 1) if kind != "DepthwiseConv2D" else conv.groups
        convs.append(ConvWeight(conv.name, conv.level, conv.weight, groups))
        return before + 1
    if kind in SEPARABLE_LAYERS:
        convs.append(conv_weight(f"{name}/depthwise", before + 1, weights.array(_weight_name(weights, name, "depthwise_kernel")), True))
        convs.append(conv_weight(f"{name}/pointwise", before + 2, weights.array(_weight_name(weights, name, "pointwise_kernel")), False))
        return before + 2
    return before


def _weight_name(weights: Weights, layer: str, weight: str) -> str:
    exact = f"{layer}/{weight}"
    if exact in weights.where:
        return exact
    found = [n for n in weights.where if n.endswith("/" + exact)]
    if len(found) != 1:
        raise ValueError(f"layer {layer!r}: {'no' if not found else 'more than one'} manifest weight named {exact!r}")
    return found[0]
