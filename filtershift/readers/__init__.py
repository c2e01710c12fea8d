"""Checkpoint readers behind one registry. Each reader turns a file into the model's regular 2-D
convolutions (:class:`filtershift.types.ConvWeight`, execution ordered); selecting 3x3 kernels and
assigning depths is pure code in :mod:`filtershift.extraction.kernels`."""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

from filtershift.errors import FiltershiftError
from filtershift.types import ConvWeight

# format -> "module:function(path, arch) -> list[ConvWeight]"
READERS: dict[str, str] = {
    "torch": "filtershift.readers.torch_pickle:read_torch",
    "torchscript": "filtershift.readers.torchscript:read_torchscript",
    "safetensors": "filtershift.readers.safetensors_file:read_safetensors",
    "onnx": "filtershift.readers.onnx_graph:read_onnx",
}
FORMATS = tuple(READERS)


class CheckpointError(FiltershiftError, ValueError):
    """A checkpoint that cannot be read as its format; the message says what is wrong."""


def detect_format(path: Path) -> str:
    """Infer the format from the file's suffix and, for PyTorch zip archives, their contents."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".ckpt", ".bin", ".tar", ".pkl", ".jit", ".torchscript"):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any("/code/" in n or n.endswith("/constants.pkl") for n in archive.namelist()):
                    return "torchscript"
        return "torch"
    raise ValueError(f"cannot infer the format of {path.name} from its suffix; set 'format' to one of {', '.join(FORMATS)}")


def read_convolutions(path: Path, fmt: str, arch: str = "") -> list[ConvWeight]:
    """Every regular 2-D convolution of the checkpoint at ``path``, in execution order."""
    if fmt not in READERS:
        raise CheckpointError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    module_name, _, function = READERS[fmt].partition(":")
    reader = getattr(importlib.import_module(module_name), function)
    return reader(Path(path), arch)
