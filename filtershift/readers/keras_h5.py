"""Keras 2 HDF5 files (``.h5`` / ``.hdf5``): full models (``model.save``) and weights-only files
(``model.save_weights``), read with h5py, never with Keras.

Full models: the layer classes come from the ``model_config`` attribute (nested Sequential /
functional models walked, see :mod:`keras_layers`); each top-level layer's weights are the
datasets its group's ``weight_names`` attribute lists (``conv1/kernel:0``; the inner group may be
named ``conv1_1``, and a nested model's group lists the weights of all its layers, found by
their owner's name). ``optimizer_weights`` is never read.

Weights-only files have no config, so layer types are unknown and the state-dict rule applies
(filtershift/readers/statedict.py): a 4-D ``kernel`` is taken as a Conv2D kernel (HWIO) with
groups unknown (-1), excluded only when its layer's name says transposed (``conv2d_transpose``,
``deconv``, ...); a 4-D ``depthwise_kernel`` is depthwise (groups = C) and a 4-D
``pointwise_kernel`` a 1x1 conv; order is the ``layer_names`` order.

Every dataset's claimed size is checked against the bytes stored for it before it is read; links
(to other files or elsewhere) are refused. Keras 1 files are refused (kernel layouts differ).
"""

from __future__ import annotations

import re
from pathlib import Path

from filtershift.readers.keras_layers import (
    ConvLayer, conv_layers, conv_weights, h5_child, hwcm_to_oihw, hwio_to_oihw, is_transposed_name, parse_config, read_dataset,
)
from filtershift.types import ConvWeight

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_ATTRS = ("model_config", "layer_names", "keras_version")
# each kernel a layer stores, by its possible variable names (Keras 3 calls a depthwise kernel "kernel")
KERNEL_LEAVES = {"conv": (("kernel",),), "depthwise": (("depthwise_kernel", "kernel"),), "separable": (("depthwise_kernel",), ("pointwise_kernel",))}


def sniff(path: Path, head: bytes) -> bool:
    """An HDF5 file with Keras attributes at its root or in its ``model_weights`` group."""
    if not head.startswith(HDF5_MAGIC):
        return False
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return _is_keras(f)
    except Exception:  # garbage is simply not ours
        return False


def _is_keras(f) -> bool:
    weights = f.get("model_weights", getclass=True)
    return any(k in f.attrs for k in KERAS_ATTRS) or (weights is not None and "layer_names" in f["model_weights"].attrs)


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    """Every regular 2-D convolution of a Keras HDF5 file (``arch`` is not used: the file holds
    its own config, or none)."""
    import h5py

    size = path.stat().st_size
    try:
        with h5py.File(path, "r") as f:
            return read_keras_h5(f, size, path.name)
    except (OSError, KeyError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name}: not a readable Keras HDF5 file ({type(exc).__name__}: {text})") from None


def read_keras_h5(f, size: int, label: str) -> list[ConvWeight]:
    """The convolutions of an open Keras HDF5 file of ``size`` bytes (full model or weights only)."""
    version = _text(f.attrs.get("keras_version", ""))
    if version.startswith("1."):
        raise ValueError(f"{label}: a Keras {version} file (Keras 1 kernel layouts are not read); re-save it with Keras 2")
    if "model_config" in f.attrs:
        config = parse_config(_text(f.attrs["model_config"]), f"{label}: the model_config attribute")
        return full_model(config, h5_child(f, "model_weights"), size)
    if "layer_names" in f.attrs:
        return weights_only(f, size)
    if f.get("model_weights", getclass=True) is not None and "layer_names" in f["model_weights"].attrs:
        return weights_only(f["model_weights"], size)
    raise ValueError(f"{label}: an HDF5 file without Keras layers (no model_config or layer_names attribute); not a Keras model")


def full_model(config: dict, weights, size: int) -> list[ConvWeight]:
    convs, used = [], set()
    for layer in conv_layers(config):
        group = h5_child(weights, layer.path[0][0])
        names = [n for n in weight_names(group) if (group.name, n) not in used]
        picked = [_pick(names, layer, leaves) for leaves in KERNEL_LEAVES[layer.kind]]
        used.update((group.name, n) for n in picked)
        kernels = [read_dataset(_dataset(group, name), size, f"layer {layer.name} ({name})") for name in picked]
        convs.extend(conv_weights(layer, kernels))
    return convs


def _pick(names: list[str], layer: ConvLayer, leaves: tuple[str, ...]) -> str:
    """The weight name holding a kernel of ``layer`` among the unused ``weight_names`` of its
    top-level group: of a variable named one of ``leaves`` (in that order of preference), owned by
    the layer (``name``, else ``name_<n>``) when the group holds several layers' weights (a nested
    model) or several such variables."""
    owner = layer.path[-1][0]
    for leaf in leaves:
        found = [n for n in names if _parts(n)[-1] == leaf]
        if len(layer.path) > 1 or len(found) > 1:
            exact = [n for n in found if len(_parts(n)) > 1 and _parts(n)[-2] == owner]
            found = exact or [n for n in found if len(_parts(n)) > 1 and _owned_by(_parts(n)[-2], owner)]
        if found:
            return found[0]
    raise ValueError(f"layer {layer.name}: no {' or '.join(leaves)} of it among the weight_names of its group {layer.path[0][0]!r}")


def weights_only(root, size: int) -> list[ConvWeight]:
    convs = []
    for name in _names(root.attrs["layer_names"]):
        group = h5_child(root, name)
        for weight in weight_names(group):
            parts = _parts(weight)
            if parts[-1] not in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                continue
            dataset = _dataset(group, weight)
            owner = name if len(parts) < 2 or _owned_by(parts[-2], name) else f"{name}/{parts[-2]}"
            if dataset.ndim != 4 or (parts[-1] == "kernel" and is_transposed_name(weight_path := f"{name}/{weight}")):
                continue
            kernel = read_dataset(dataset, size, f"layer {owner} ({parts[-1]})")
            if parts[-1] == "depthwise_kernel":
                convs.append(ConvWeight(owner, len(convs), *hwcm_to_oihw(kernel, owner)))
            elif parts[-1] == "pointwise_kernel":
                convs.append(ConvWeight(f"{owner}/pointwise", len(convs), hwio_to_oihw(kernel, owner), 1))
            else:
                convs.append(ConvWeight(owner, len(convs), hwio_to_oihw(kernel, weight_path), -1))
    return convs


def _owned_by(owner: str, name: str) -> bool:
    """A weight's owner is the layer itself: its name, ``name_<n>``, or none."""
    return owner in (name, "") or re.fullmatch(re.escape(name) + r"_\d+", owner) is not None


def weight_names(group) -> list[str]:
    if "weight_names" not in group.attrs:
        raise ValueError(f"group {group.name}: no weight_names attribute; not a Keras layer group")
    return _names(group.attrs["weight_names"])


def _names(values) -> list[str]:
    return [_text(v) for v in list(values)]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _parts(weight: str) -> list[str]:
    return weight.rsplit(":", 1)[0].split("/")


def _dataset(group, weight: str):
    return h5_child(group, weight)
