"""Caffe models: ``.caffemodel`` files (a protobuf ``NetParameter``), decoded by field number from
caffe.proto with :mod:`filtershift.readers.protowire`; no Caffe needed.

Both layer lists are read: the current ``layer`` field (100, ``LayerParameter``: type as a string)
and the legacy ``layers`` field (2, ``V1LayerParameter``: type as an enum). ``Convolution`` layers
give ``blobs[0]`` of shape (out, in/group, kh, kw) and ``group`` from ``convolution_param``;
``Deconvolution`` is excluded. When the caffemodel holds no ``convolution_param`` for a layer (some
converters strip it), the ``group`` of the same layer in the deploy ``.prototxt`` of the same stem
is used. Depth is the longest-path level over the bottom / top blob names (in-place layers, whose
top is their bottom, are handled in layer order).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.readers.files import inside
from filtershift.types import ConvWeight

# NetParameter
NET_LAYER, NET_LAYERS_V1 = 100, 2
# LayerParameter (V2) and V1LayerParameter field numbers: name, type, bottom, top, blobs, conv param
V2 = {"name": 1, "type": 2, "bottom": 3, "top": 4, "blobs": 7, "conv": 106}
V1 = {"name": 4, "type": 5, "bottom": 2, "top": 3, "blobs": 6, "conv": 10}
V1_CONVOLUTION = 4
# BlobProto: legacy num/channels/height/width 1-4, data 5, shape 7 (BlobShape.dim 1), double_data 8
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE = 5, 7, 8
# ConvolutionParameter: group 5
CONV_GROUP = 5
MAX_ELEMENTS = 2**31


def sniff(path: Path, head: bytes) -> bool:
    return path.suffix.lower() == ".caffemodel"


def companions(path: Path) -> list[Path]:
    deploy = _deploy_file(path)
    return [deploy] if deploy is not None else []


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    data = path.read_bytes()
    net = pw.parse(data, {NET_LAYER, NET_LAYERS_V1})
    layers = [(raw, V2) for raw in net.get(NET_LAYER, [])] or [(raw, V1) for raw in net.get(NET_LAYERS_V1, [])]
    if not layers:
        raise ValueError("the .caffemodel holds no layers (neither 'layer' nor the legacy 'layers'); is it a Caffe model?")
    deploy_groups: dict[str, int] | None = None
    level_of: dict[str, int] = {}
    convs = []
    for i, (raw, schema) in enumerate(layers):
        layer = pw.parse(raw, set(schema.values()))
        name = pw.text(pw.first(layer, schema["name"])) or f"layer_{i}"
        bottoms = [pw.text(b) for b in layer.get(schema["bottom"], [])]
        tops = [pw.text(t) for t in layer.get(schema["top"], [])]
        upstream = max((level_of.get(b, -1) for b in bottoms), default=-1)
        if not _is_convolution(layer, schema):
            for top in tops:
                level_of[top] = upstream
            continue
        level = upstream + 1
        for top in tops:
            level_of[top] = level
        blobs = layer.get(schema["blobs"], [])
        if not blobs:
            raise ValueError(f"Convolution layer {name!r} holds no weights (a deploy file, not a trained .caffemodel?)")
        conv_param = pw.first(layer, schema["conv"])
        if conv_param is not None:
            groups = pw.first(pw.parse(conv_param, {CONV_GROUP}), CONV_GROUP, 1)
        else:
            if deploy_groups is None:
                deploy_groups = _deploy_groups(path)
            groups = deploy_groups.get(name, 1)
        weight = _blob_array(blobs[0], name)
        if weight.ndim != 4:
            raise ValueError(f"Convolution layer {name!r}: weights of shape {weight.shape}, not (out, in/group, kh, kw)")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"Convolution layer {name!r}: group {groups} does not divide its {weight.shape[0]} outputs")
        convs.append(ConvWeight(name=name, level=level, weight=weight, groups=int(groups)))
    return convs


def _is_convolution(layer: dict, schema: dict) -> bool:
    kind = pw.first(layer, schema["type"])
    if schema is V1:
        return kind == V1_CONVOLUTION
    return pw.text(kind) == "Convolution"


def _blob_array(raw: memoryview, name: str) -> np.ndarray:
    blob = pw.parse(raw, {1, 2, 3, 4, BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE})
    shape_msg = pw.first(blob, BLOB_SHAPE)
    if shape_msg is not None:
        shape = pw.repeated_ints(pw.parse(shape_msg, {1}), 1)
    else:  # legacy 4-D blob
        shape = [pw.signed(pw.first(blob, n, 1), 32) for n in (1, 2, 3, 4)]
    if any(d <= 0 for d in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_ELEMENTS:
        raise ValueError(f"Convolution layer {name!r}: absurd weight shape {tuple(shape)}")
    values = pw.repeated_floats(blob, BLOB_DATA) if BLOB_DATA in blob else pw.repeated_floats(blob, BLOB_DOUBLE, "<f8")
    count = int(np.prod(shape))
    if values.size != count:
        raise ValueError(f"Convolution layer {name!r}: {values.size:,} weight values for a blob of shape {tuple(shape)} ({count:,})")
    return values.astype(np.float32, copy=False).reshape(shape)


def _deploy_file(path: Path) -> Path | None:
    candidate = path.with_suffix(".prototxt").name
    target = inside(path.parent, candidate, "deploy file")
    return target if target.is_file() else None


_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\]|\\.)*"|\'[^\']*\'|[{}:]|[^\s{}:"\']+')


def _deploy_groups(path: Path) -> dict[str, int]:
    """Layer name -> ``convolution_param.group`` from the deploy ``.prototxt`` of the same stem
    (protobuf text format: only ``name`` and ``group`` are looked at)."""
    deploy = _deploy_file(path)
    if deploy is None:
        return {}
    if deploy.stat().st_size > 64 * 2**20:
        raise ValueError(f"deploy file {deploy.name} is over 64 MB; not a prototxt")
    groups: dict[str, int] = {}
    stack: list[dict] = [{}]
    key = None
    for token in _TOKEN.findall(deploy.read_text(encoding="utf-8", errors="replace")):
        if token.startswith("#") or token == ":":
            continue
        if token == "{":
            stack.append({"block": key})
            key = None
        elif token == "}":
            block = stack.pop() if len(stack) > 1 else {}
            if block.get("block") in ("layer", "layers") and "name" in block and "group" in block:
                groups[block["name"]] = block["group"]
            elif block.get("block") == "convolution_param" and "group" in block:
                stack[-1]["group"] = block["group"]
        elif key is None:
            key = token
        else:
            if key == "name":
                stack[-1]["name"] = token.strip("\"'")
            elif key == "group" and token.isdigit():
                stack[-1]["group"] = int(token)
            key = None
    return groups
