"""Checkpoint readers behind one registry. Each reader turns a checkpoint into the model's regular
2-D convolutions (:class:`filtershift.types.ConvWeight`, execution ordered); selecting 3x3 kernels
and assigning depths is pure code in :mod:`filtershift.extraction.kernels`.

A format is one module under ``filtershift/readers/`` with
``read(path, arch) -> list[ConvWeight]`` and, optionally,
``sniff(path, head) -> bool`` (is this file or folder mine? ``head`` is the file's first bytes, empty
for a folder) and ``companions(path) -> list[Path]`` (the other files the model is made of, inside
its folder). Formats are detected by content first, in the order of :data:`REGISTRY`, then by suffix.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from filtershift.errors import FiltershiftError
from filtershift.readers.files import folder_files
from filtershift.types import ConvWeight

HEAD_BYTES = 512


@dataclass(frozen=True)
class Format:
    name: str
    module: str  # under filtershift.readers
    suffixes: tuple[str, ...] = ()  # the fallback when no sniff claims the file
    folder: bool = False  # a model that is a folder (SavedModel, .mlpackage)


REGISTRY: tuple[Format, ...] = (
    Format("torchscript", "torchscript", (".jit", ".torchscript")),
    Format("torch", "torch_pickle", (".pt", ".pth", ".ckpt", ".bin", ".tar", ".pkl")),
    Format("safetensors", "safetensors_file", (".safetensors",)),
    Format("onnx", "onnx_graph", (".onnx",)),
    Format("tflite", "tflite", (".tflite",)),
    Format("keras_h5", "keras_h5", (".h5", ".hdf5")),
    Format("keras", "keras_v3", (".keras",)),
    Format("savedmodel", "tf_savedmodel", folder=True),
    Format("tf_checkpoint", "tf_checkpoint", (".index",)),
    Format("tfjs", "tfjs_model"),  # model.json: by content only (.json is no evidence)
    Format("flax", "flax_msgpack", (".msgpack",)),
    Format("caffe", "caffe_net", (".caffemodel",)),
    Format("ncnn", "ncnn_net", (".param",)),
    Format("openvino", "openvino_ir", (".xml",)),
    Format("paddle_params", "paddle_pickle", (".pdparams",)),
    Format("paddle_inference", "paddle_program", (".pdmodel",)),
    Format("coreml", "coreml_model", (".mlmodel",)),
    Format("coreml_package", "coreml_package", (".mlpackage",), folder=True),
)
BY_NAME = {f.name: f for f in REGISTRY}
FORMATS = tuple(BY_NAME)


class CheckpointError(FiltershiftError, ValueError):
    """A checkpoint that cannot be read as its format; the message says what is wrong."""


def _module(fmt: Format):
    return importlib.import_module(f"filtershift.readers.{fmt.module}")


def detect_format(path: Path) -> str:
    """The format of the file or folder at ``path``: by content (each format's ``sniff``), then by
    suffix; ``ValueError`` naming the choices when neither tells."""
    path = Path(path)
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    for fmt in REGISTRY:
        if fmt.folder != path.is_dir():
            continue
        sniff = getattr(_module(fmt), "sniff", None)
        if sniff is not None and sniff(path, head):
            return fmt.name
    suffix = path.suffix.lower()
    for fmt in REGISTRY:
        if suffix in fmt.suffixes and fmt.folder == path.is_dir():
            return fmt.name
    kind = "folder" if path.is_dir() else "file"
    raise ValueError(f"cannot infer the format of the {kind} {path.name} from its content or suffix; set 'format' to one of {', '.join(FORMATS)}")


def model_files(path: Path, fmt: str) -> list[Path]:
    """Every file the checkpoint at ``path`` is made of: the file and its companions, or every
    file of a model folder (sorted, inside the folder)."""
    path = Path(path)
    if path.is_dir():
        return folder_files(path)
    companions = getattr(_module(BY_NAME[fmt]), "companions", None) if fmt in BY_NAME else None
    return [path, *(companions(path) if companions else [])]


def read_convolutions(path: Path, fmt: str, arch: str = "") -> list[ConvWeight]:
    """Every regular 2-D convolution of the checkpoint at ``path``, in execution order."""
    if fmt not in BY_NAME:
        raise CheckpointError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return _module(BY_NAME[fmt]).read(Path(path), arch)
