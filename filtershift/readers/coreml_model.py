"""Core ML ``.mlmodel`` files: a protobuf ``Model`` (Model.proto), decoded by field number with
:mod:`filtershift.readers.protowire`; no coremltools needed.

The model's type decides the reader: ``neuralNetwork`` (500), ``neuralNetworkClassifier`` (403) and
``neuralNetworkRegressor`` (303) go to :mod:`filtershift.readers.coreml_nn`; ``mlProgram`` (502) to
:mod:`filtershift.readers.coreml_mil`, its blob files resolved in the folder holding the model file
(Core ML's ``@model_path``); the models of a ``pipeline`` (202), ``pipelineClassifier`` (200) and
``pipelineRegressor`` (201) are read in order, their layers' levels continued over the feature names
that join them. Other model types (trees, GLMs, ...) hold no convolution.
"""

from __future__ import annotations

from pathlib import Path

from filtershift.readers import protowire as pw
from filtershift.readers.coreml_mil import program_convolutions
from filtershift.readers.coreml_nn import network_convolutions, sub, subs, texts
from filtershift.readers.files import folder_files
from filtershift.types import ConvWeight

SPEC_VERSION, DESCRIPTION = 1, 2
NEURAL_NETWORKS = (500, 403, 303)
ML_PROGRAM = 502
PIPELINES = (202, 200, 201)  # Pipeline, PipelineClassifier (pipeline 1), PipelineRegressor (pipeline 1)
PIPELINE_MODELS, PIPELINE_NAMES = 1, 2
MAX_NESTING = 8
MAX_MODEL_BYTES = 2**31  # protobuf's own limit on one message


def sniff(path: Path, head: bytes) -> bool:
    """A Model message starts with ``specificationVersion`` (field 1, a small varint), then its
    ``description`` (field 2) whose first field is an input's ``FeatureDescription`` (field 1),
    itself starting with the input's name (field 1); and it holds a model type (a field numbered
    200 or more), which tells it from other protobufs that start alike (a SavedModel's
    ``saved_model.pb``)."""
    if not path.is_file() or len(head) < 8 or head[0] != 0x08 or not 1 <= head[1] <= 64 or head[2] != 0x12:
        return False
    try:
        _, pos = pw.varint(memoryview(head), 3)
        if head[pos] != 0x0A:
            return False
        _, pos = pw.varint(memoryview(head), pos + 1)
        if head[pos] != 0x0A:
            return False
    except (ValueError, IndexError):
        return False
    return any(number >= 200 for number in _top_level_fields(path))


def companions(path: Path) -> list[Path]:
    """An ML Program's blob files beside a bare ``model.mlmodel``: every file under ``weights/``."""
    weights = path.parent / "weights"
    if not weights.is_dir() or ML_PROGRAM not in _top_level_fields(path):
        return []
    return folder_files(weights)


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    return read_model_file(path, path.parent)


def read_model_file(path: Path, model_path: Path) -> list[ConvWeight]:
    """Every regular 2-D convolution of the Model in ``path``; ML Program blob files are resolved
    inside ``model_path``."""
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{path.name} is {size:,} bytes, past protobuf's 2 GB limit; not a Core ML model")
    data = path.read_bytes()
    model = pw.parse(data, {SPEC_VERSION, DESCRIPTION, *NEURAL_NETWORKS, ML_PROGRAM, *PIPELINES})
    if SPEC_VERSION not in model or DESCRIPTION not in model:
        raise ValueError(f"{path.name} is not a Core ML model (no specificationVersion and description)")
    return _model_convolutions(model, model_path, {}, "", 0)


def _model_convolutions(model: dict, model_path: Path, level_of: dict[str, int], prefix: str, nesting: int) -> list[ConvWeight]:
    if nesting > MAX_NESTING:
        raise ValueError(f"Core ML pipelines nested more than {MAX_NESTING} deep; refused")
    for number in NEURAL_NETWORKS:
        if number in model:
            return network_convolutions(sub(model, number), level_of, prefix)
    if ML_PROGRAM in model:
        return program_convolutions(sub(model, ML_PROGRAM), model_path, level_of, prefix)
    for number in PIPELINES:
        if number in model:
            pipeline = sub(model, number)
            if number != 202:
                pipeline = sub(pw.parse(pipeline, {1}), 1) or memoryview(b"")
            return _pipeline_convolutions(pipeline, model_path, level_of, prefix, nesting)
    return []


def _pipeline_convolutions(pipeline: memoryview, model_path: Path, level_of: dict[str, int], prefix: str, nesting: int) -> list[ConvWeight]:
    message = pw.parse(pipeline, {PIPELINE_MODELS, PIPELINE_NAMES})
    names = texts(message, PIPELINE_NAMES)
    convs = []
    for i, raw in enumerate(subs(message, PIPELINE_MODELS)):
        sub = pw.parse(raw, {SPEC_VERSION, DESCRIPTION, *NEURAL_NETWORKS, ML_PROGRAM, *PIPELINES})
        label = names[i] if i < len(names) and names[i] else f"model_{i}"
        convs += _model_convolutions(sub, model_path, level_of, f"{prefix}{label}/", nesting + 1)
    return convs


def _top_level_fields(path: Path, limit: int = 64) -> set[int]:
    """The field numbers at the top level of the message in ``path`` (at most ``limit`` fields),
    found by skipping from key to key without reading the values; a corrupt tail ends the scan."""
    numbers: set[int] = set()
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos < size and len(numbers) < limit:
            f.seek(pos)
            chunk = memoryview(f.read(24))
            try:
                key, at = pw.varint(chunk, 0)
                wire = key & 7
                if wire == pw.VARINT:
                    _, at = pw.varint(chunk, at)
                elif wire == pw.LENGTH:
                    length, at = pw.varint(chunk, at)
                    at += length
                elif wire in (pw.FIXED64, pw.FIXED32):
                    at += 8 if wire == pw.FIXED64 else 4
                else:
                    break
            except ValueError:
                break
            numbers.add(key >> 3)
            pos += at
    return numbers
