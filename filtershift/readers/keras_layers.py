"""What the two Keras readers (:mod:`keras_h5`, :mod:`keras_v3`) share: the model config's
convolution layers in execution order, Keras kernel layouts turned into ``(out, in/groups, kh, kw)``,
and HDF5 datasets read only after their claimed size is checked against the bytes stored.

Layers counted (class names of the ``model_config`` / ``config.json``):
- ``Conv2D`` (``Convolution2D``): kernel HWIO ``(kh, kw, in/groups, out)``, kernel (o, i) = K[:, :, i, o];
- ``DepthwiseConv2D``: ``(kh, kw, C, M)``, output channel ``c*M + m`` = K[:, :, c, m]: C*M kernels,
  groups = C;
- ``SeparableConv2D``: its depthwise part as above, then its pointwise part as a 1x1 conv one level
  deeper (counted, never stored: only 3x3 kernels are);
- never ``Conv2DTranspose`` (nor Conv1D / Conv3D, which are not 2-D).
Nested models (a layer whose config holds ``layers``) are walked; ``level`` is the longest-path level
in convolutions over the ``inbound_nodes`` graph (functional) or the layer order (Sequential): a conv
is one level deeper than the deepest conv upstream of it, so parallel convs share a level.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

from filtershift.readers.statedict import TRANSPOSED_PATTERN
from filtershift.types import ConvWeight

CONV_CLASSES = {
    "Conv2D": "conv", "Convolution2D": "conv",
    "DepthwiseConv2D": "depthwise",
    "SeparableConv2D": "separable", "SeparableConvolution2D": "separable",
}
# Keras's default names of transposed convs, which the state-dict pattern does not cover.
KERAS_TRANSPOSED = re.compile(r"conv2d_?transpose|deconvolution", re.IGNORECASE)
MAX_NESTING = 32
MAX_FILTER_RATIO = 100  # a compressed dataset may expand at most this much (Keras never compresses)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution layer of a model config: ``path`` holds ``(name, generic_name)`` of each
    enclosing model's layer and of the layer itself (outermost first); ``generic_name`` is the
    class-based name Keras 3 gives the layer's weight group (``conv2d``, ``conv2d_1``, ...)."""

    path: tuple[tuple[str, str], ...]
    kind: str  # conv | depthwise | separable
    level: int  # of the layer's first (for separable: depthwise) convolution
    groups: int

    @property
    def name(self) -> str:
        return "/".join(name for name, _ in self.path)


def parse_config(text: str | bytes, what: str) -> dict:
    """The JSON model config as a dict; ``ValueError`` naming ``what`` when it is not one."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), (dict, list)):
        raise ValueError(f"{what} is not a Keras model config (no 'config' object)")
    return config


def conv_layers(model: dict) -> list[ConvLayer]:
    """Every convolution layer of a model config (nested models walked), in execution order."""
    convs: list[ConvLayer] = []
    _walk(model, (), -1, convs, 0)
    return convs


def _layer_list(model: dict) -> list[dict]:
    config = model.get("config")
    layers = config if isinstance(config, list) else config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise ValueError(f"model {model.get('name', '?')!r}: its config has no list of layers")
    return layers


def is_model(layer: dict) -> bool:
    config = layer.get("config")
    return isinstance(config, list) or (isinstance(config, dict) and isinstance(config.get("layers"), list))


def layer_name(layer: dict) -> str:
    config = layer.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    name = name or layer.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {layer.get('class_name', '?')} layer of the config has no name")
    return name


def generic_names(layers: list[dict], sequential: bool) -> list[str]:
    """Keras 3's weight-group name of each layer: its class in snake case, numbered from the
    second of a class on (``conv2d``, ``conv2d_1``); a Sequential's InputLayer has none ("")."""
    seen: dict[str, int] = {}
    out = []
    for layer in layers:
        cls = str(layer.get("class_name", "")).rpartition(">")[2]
        if sequential and cls == "InputLayer":
            out.append("")
            continue
        snake = re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls)).lower()
        n = seen.get(snake, 0)
        seen[snake] = n + 1
        out.append(snake if n == 0 else f"{snake}_{n}")
    return out


def _walk(model: dict, scope: tuple, upstream: int, convs: list[ConvLayer], depth: int) -> int:
    """Append the convs of ``model`` (entered at conv level ``upstream``) to ``convs``; return the
    level of its deepest conv on the way to its outputs."""
    if depth > MAX_NESTING:
        raise ValueError(f"models nested more than {MAX_NESTING} deep; refused")
    layers = _layer_list(model)
    sequential = model.get("class_name") == "Sequential" or isinstance(model.get("config"), list)
    generic = generic_names(layers, sequential)
    names = [layer_name(layer) for layer in layers]
    order = range(len(layers)) if sequential else _topological(layers, names)
    level_of: dict[str, int] = {}
    level = upstream
    for i in order:
        layer = layers[i]
        if not sequential:
            level = max((level_of.get(ref, upstream) for ref in inbound_names(layer)), default=upstream)
        path = (*scope, (names[i], generic[i]))
        if is_model(layer):
            level = _walk(layer, path, level, convs, depth + 1)
        elif (kind := CONV_CLASSES.get(str(layer.get("class_name", "")).rpartition(">")[2])) is not None:
            groups = layer["config"].get("groups", 1) if isinstance(layer["config"], dict) else 1
            convs.append(ConvLayer(path=path, kind=kind, level=level + 1, groups=groups if isinstance(groups, int) and groups > 0 else 1))
            level += 2 if kind == "separable" else 1
        level_of[names[i]] = level
    if sequential:
        return level
    outputs = [name for name in _refs(model["config"].get("output_layers", [])) if name in level_of]
    return max((level_of[name] for name in outputs or level_of), default=upstream)


def inbound_names(layer: dict) -> list[str]:
    """Names of the layers feeding ``layer`` (Keras 2 ``[[name, node, tensor, kwargs]]`` lists and
    Keras 3 ``keras_history`` entries alike)."""
    return list(dict.fromkeys(_refs(layer.get("inbound_nodes", []))))


def _refs(obj, depth: int = 0):
    if depth > 64:
        raise ValueError("a layer's inbound_nodes are nested too deep; refused")
    if isinstance(obj, dict):
        history = obj.get("keras_history")
        if isinstance(history, list) and history and isinstance(history[0], str):
            yield history[0]
            return
        for value in obj.values():
            yield from _refs(value, depth + 1)
    elif isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            yield obj[0]
            return
        for value in obj:
            yield from _refs(value, depth + 1)


def _topological(layers: list[dict], names: list[str]) -> list[int]:
    """Layer indices with every layer after the layers feeding it (config order among equals);
    a cycle is refused."""
    index = {name: i for i, name in enumerate(names)}
    feeds = [[index[ref] for ref in inbound_names(layer) if ref in index] for layer in layers]
    done: set[int] = set()
    order: list[int] = []
    for start in range(len(layers)):
        stack = [(start, iter(feeds[start]))]
        visiting = {start}
        while stack:
            node, pending = stack[-1]
            nxt = next((j for j in pending if j not in done), None)
            if nxt is None:
                stack.pop()
                visiting.discard(node)
                if node not in done:
                    done.add(node)
                    order.append(node)
            elif nxt in visiting:
                raise ValueError(f"the layer graph has a cycle through {names[nxt]!r}; refused")
            else:
                visiting.add(nxt)
                stack.append((nxt, iter(feeds[nxt])))
    return order


def conv_weights(layer: ConvLayer, kernels: list[np.ndarray]) -> list[ConvWeight]:
    """The layer's ConvWeights from its stored kernel(s) (a separable layer: depthwise, pointwise)."""
    if layer.kind == "conv":
        return [ConvWeight(layer.name, layer.level, hwio_to_oihw(kernels[0], layer.name), layer.groups)]
    depthwise, groups = hwcm_to_oihw(kernels[0], layer.name)
    out = [ConvWeight(layer.name, layer.level, depthwise, groups)]
    if layer.kind == "separable":
        out.append(ConvWeight(f"{layer.name}/pointwise", layer.level + 1, hwio_to_oihw(kernels[1], layer.name), 1))
    return out


def hwio_to_oihw(kernel: np.ndarray, name: str) -> np.ndarray:
    """A Conv2D kernel ``(kh, kw, in/groups, out)`` as float32 ``(out, in/groups, kh, kw)``."""
    _check_kernel(kernel, name)
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)


def hwcm_to_oihw(kernel: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """A depthwise kernel ``(kh, kw, C, M)`` as float32 ``(C*M, 1, kh, kw)`` and groups = C."""
    _check_kernel(kernel, name)
    kh, kw, c, m = kernel.shape
    return np.ascontiguousarray(kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw), dtype=np.float32), int(c)


def _check_kernel(kernel: np.ndarray, name: str) -> None:
    if kernel.ndim != 4 or 0 in kernel.shape:
        raise ValueError(f"layer {name}: kernel of shape {kernel.shape} is not a 2-D convolution kernel")


def is_transposed_name(name: str) -> bool:
    """The weights-only rule's test for a transposed conv: the state-dict pattern or Keras's
    default ``conv2d_transpose`` names."""
    return bool(TRANSPOSED_PATTERN.search(name) or KERAS_TRANSPOSED.search(name))


def read_dataset(dataset, stored_limit: int, what: str) -> np.ndarray:
    """An HDF5 dataset's values, read only when it is a plain floating dataset stored inside the
    file whose claimed size fits the bytes it has there (``stored_limit``: the file's size)."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise ValueError(f"{what} is not an HDF5 dataset")
    if dataset.dtype.kind != "f":
        raise ValueError(f"{what}: weights of dtype {dataset.dtype} are not floating point; not read")
    if dataset.external or dataset.is_virtual:
        raise ValueError(f"{what}: its data lives in another file; refused")
    claimed = math.prod(dataset.shape) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    filtered = dataset.id.get_create_plist().get_nfilters() > 0
    limit = stored * MAX_FILTER_RATIO if filtered else stored
    if stored > stored_limit or claimed > limit:
        raise ValueError(f"{what}: shape {dataset.shape} claims {claimed:,} bytes but {stored:,} are stored; refused")
    return dataset[()]


def h5_child(group, relative: str):
    """``group[relative]`` through hard links only (Keras writes no others: a soft or external
    link could lead anywhere, even into another file)."""
    import h5py

    node = group
    for part in relative.strip("/").split("/"):
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            raise ValueError(f"{node.name}: no {part!r} in the file")
        if not isinstance(link, h5py.HardLink):
            raise ValueError(f"{node.name}/{part} is a {type(link).__name__}, not stored data; refused")
        node = node[part]
    return node
