"""Core ML ``.mlpackage`` folders: ``Manifest.json`` names the root model file under ``Data/``
(``rootModelIdentifier`` -> ``itemInfoEntries[id].path``, by default
``com.apple.CoreML/model.mlmodel``), read as a ``.mlmodel`` by
:mod:`filtershift.readers.coreml_model` (an ML Program, or a NeuralNetwork saved as a package). Its
``@model_path`` is the folder holding that file, so ``weights/weight.bin`` is found beside it; every
path is resolved inside the package, never through a symlink that leaves it.
"""

from __future__ import annotations

import json
from pathlib import Path

from filtershift.readers.coreml_model import read_model_file
from filtershift.readers.files import inside
from filtershift.types import ConvWeight

MANIFEST = "Manifest.json"
DEFAULT_ROOT = "com.apple.CoreML/model.mlmodel"
MAX_MANIFEST_BYTES = 2**20


def sniff(path: Path, head: bytes) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file() and (path / "Data").is_dir()


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    model_file = inside(path / "Data", _root_model(path), "root model file")
    if not model_file.resolve().is_relative_to(path.resolve()):
        raise ValueError("the root model file lies outside the package; refused")
    if not model_file.is_file():
        raise ValueError(f"the package's root model Data/{_root_model(path)} is missing")
    return read_model_file(model_file, model_file.parent)


def _root_model(package: Path) -> str:
    """The root model's path under ``Data/`` from the manifest (the default when it names none)."""
    manifest = inside(package, MANIFEST, "package manifest")
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{MANIFEST} is over 1 MB; not a Core ML package manifest")
    try:
        content = json.loads(manifest.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{MANIFEST} is not JSON ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    entries, root = content.get("itemInfoEntries"), content.get("rootModelIdentifier")
    if not isinstance(entries, dict) or root is None:
        return DEFAULT_ROOT
    entry = entries.get(root)
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError(f"{MANIFEST}: the root model {root!r} has no entry with a path")
    return entry["path"]
