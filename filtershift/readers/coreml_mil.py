"""Core ML ML Programs (``Model.mlProgram``, a MIL ``Program``), decoded by field number from
MIL.proto with :mod:`filtershift.readers.protowire`.

The ``main`` function's block (the specialization its ``opset`` names) is walked in order. A
``conv`` op (never ``conv_transpose``) with a rank-4 weight gives ``(out, in/groups, kh, kw)`` and
its ``groups``. The weight is followed back by name to a ``const`` op, whose ``val`` is an
immediate tensor or a blob file value (``@model_path/weights/weight.bin`` at an offset), through
``cast`` and the compression ops: ``constexpr_affine_dequantize`` (``(q - zero_point) * scale``
along ``axis``), ``constexpr_lut_to_dense`` (iOS16: n-bit indices packed least significant bit
first into a flat uint8 tensor; iOS18: typed indices, per-block tables of scalars) and
``constexpr_blockwise_shift_scale`` (``scale * (data - offset)``, each scale repeated over its
block). The inputs of iOS16 ``constexpr_*`` ops are stored as attributes, those of iOS18 ones as
inputs: both are read. Depth is the longest-path level over the ops' input names, counted in
convolutions. Ops nested in control flow (``cond``, ``while_loop``) are not searched.

A blob file (``weights/weight.bin``: a 64-byte header, then per blob a 64-byte metadata record —
sentinel ``0xDEADBEEF``, data type, size in bytes, data offset — and its data) is resolved inside
the model's folder, and every metadata record and data range is checked against the file's length
before it is read.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.readers.coreml_nn import MAX_ELEMENTS, bounded_floats, num, sub, subs, text, unpack_bits
from filtershift.readers.files import inside, read_range
from filtershift.types import ConvWeight

# Program: functions 2 (map). Function: opset 2, block_specializations 3 (map). Block: operations 3.
# Operation: type 1, inputs 2 (map name -> Argument), outputs 3 (NamedValueType: name 1), attributes 5.
# Argument: arguments 1 (Binding: name 1 | value 2). Map entries: key 1, value 2.
# Value: type 2 (ValueType: tensorType 1 -> dataType 1, dimensions 3 -> constant 1 -> size 1),
# immediateValue 3 (tensor 1 -> TensorValue), blobFileValue 5 (fileName 1, offset 2).
# TensorValue: floats 1, ints 2, bools 3, strings 4, longInts 5, doubles 6, bytes 7 (each: values 1).
DTYPES = {  # MIL DataType -> (numpy dtype, bits per element when packed below a byte)
    1: ("u1", 8), 10: ("<f2", 16), 11: ("<f4", 32), 12: ("<f8", 64), 21: ("i1", 8), 22: ("<i2", 16),
    23: ("<i4", 32), 24: ("<i8", 64), 25: ("i1", 4), 31: ("u1", 8), 32: ("<u2", 16), 33: ("<u4", 32),
    34: ("<u8", 64), 35: ("u1", 4), 36: ("u1", 2), 37: ("u1", 1), 38: ("u1", 6), 39: ("u1", 3),
}
# weight.bin BlobDataType -> the MIL DataType it stores
BLOB_TYPES = {1: 10, 2: 11, 3: 31, 4: 21, 5: 13, 6: 22, 7: 32, 8: 25, 9: 37, 10: 36, 11: 35, 12: 39, 13: 38, 14: 23, 15: 33}
SENTINEL = 0xDEADBEEF
METADATA = struct.Struct("<IIQQ")  # sentinel, data type, size in bytes, data offset (then reserved)
MAX_CHAIN = 8
MAX_IMMEDIATE_INTS = 2**20  # integer immediates are parameters (shapes, axes), never weights
MODEL_PATH = "@model_path/"


def program_convolutions(program: memoryview, model_path: Path, level_of: dict[str, int], prefix: str = "") -> list[ConvWeight]:
    """The regular 2-D convolutions of the ``main`` function of one serialized MIL Program; blob
    files are resolved inside ``model_path`` (the folder holding the model file)."""
    ops = _main_block_operations(program)
    producers: dict[str, dict] = {}
    values = _Values(producers, model_path)
    convs = []
    for i, raw in enumerate(ops):
        op = pw.parse(raw, {1, 2, 3, 5})
        kind = text(op, 1)
        inputs = _map(op, 2)
        attributes = _map(op, 5)
        outputs = [text(pw.parse(o, {1}), 1) for o in subs(op, 3)]
        record = {"type": kind, "inputs": inputs, "attributes": attributes, "name": outputs[0] if outputs else f"op_{i}"}
        for out in outputs:
            producers[out] = record
        names = [n for argument in inputs.values() for n, _ in _bindings(argument) if n is not None]
        upstream = max((level_of.get(n, -1) for n in names), default=-1)
        level = upstream + 1 if kind == "conv" else upstream
        for out in outputs:
            level_of[out] = level
        if kind != "conv":
            continue
        label = prefix + (_name_attribute(attributes) or record["name"])
        if "weight" not in inputs:
            raise ValueError(f"conv {label}: no weight input")
        weight = values.argument(inputs["weight"], 0, f"conv {label}'s weight")
        if weight is None:
            raise ValueError(f"conv {label}: its weight is computed at run time, not stored; cannot extract it")
        if weight.ndim != 4:
            continue  # a 1-D or 3-D convolution
        groups = 1
        if "groups" in inputs:
            value = values.argument(inputs["groups"], 0, f"conv {label}'s groups")
            if value is None or value.size != 1:
                raise ValueError(f"conv {label}: its groups are not a stored scalar")
            groups = int(value.ravel()[0])
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"conv {label}: groups {groups} does not divide its {weight.shape[0]} output channels")
        convs.append(ConvWeight(name=label, level=level, weight=weight.astype(np.float32, copy=False), groups=groups))
    return convs


def _main_block_operations(program: memoryview) -> list[memoryview]:
    functions = {text(entry, 1): sub(entry, 2) for entry in (pw.parse(e, {1, 2}) for e in subs(pw.parse(program, {2}), 2))}
    if not functions:
        raise ValueError("the ML Program has no functions")
    function = pw.parse(functions.get("main") or next(iter(functions.values())) or b"", {2, 3})
    opset = text(function, 2)
    blocks = {text(entry, 1): sub(entry, 2) for entry in (pw.parse(e, {1, 2}) for e in subs(function, 3))}
    block = blocks.get(opset) if opset in blocks else next(iter(blocks.values()), None)
    if block is None:
        raise ValueError("the ML Program's main function has no block")
    return subs(pw.parse(block, {3}), 3)


def _map(message: dict, number: int) -> dict[str, memoryview]:
    out = {}
    for raw in subs(message, number):
        entry = pw.parse(raw, {1, 2})
        out[text(entry, 1)] = sub(entry, 2) or memoryview(b"")
    return out


def _bindings(argument: memoryview) -> list[tuple[str | None, memoryview | None]]:
    """An Argument's bindings: ``(name, None)`` or ``(None, value)``."""
    out = []
    for raw in subs(pw.parse(argument, {1}), 1):
        binding = pw.parse(raw, {1, 2})
        out.append((text(binding, 1), None) if 1 in binding else (None, sub(binding, 2) or memoryview(b"")))
    return out


def _name_attribute(attributes: dict) -> str:
    raw = attributes.get("name")
    if raw is None:
        return ""
    strings = sub(_tensor_message(raw), 4)
    return "" if strings is None else text(pw.parse(strings, {1}), 1)


def _tensor_message(value: memoryview) -> dict:
    immediate = sub(pw.parse(value, {3}), 3)
    tensor = None if immediate is None else sub(pw.parse(immediate, {1}), 1)
    return {} if tensor is None else pw.parse(tensor)


class _Values:
    """Stored tensor values: const ops, blob files, and the compression ops over them."""

    def __init__(self, producers: dict[str, dict], model_path: Path):
        self.producers, self.model_path = producers, model_path
        self.blob_files: dict[str, Path] = {}

    def argument(self, argument: memoryview, depth: int, what: str) -> np.ndarray | None:
        bindings = _bindings(argument)
        if len(bindings) != 1:
            return None
        name, value = bindings[0]
        return self.value(value, what) if value is not None else self.named(name, depth, what)

    def named(self, name: str, depth: int, what: str) -> np.ndarray | None:
        op = self.producers.get(name)
        if op is None or depth > MAX_CHAIN:
            return None
        kind = op["type"]
        if kind == "const":
            return self.value(op["attributes"].get("val"), f"const {op['name']}")
        if kind == "cast":
            x = self.param(op, "x", depth)
            return None if x is None else x.astype(np.float32)
        if kind == "constexpr_affine_dequantize":
            return _affine(op["name"], *(self.param(op, k, depth) for k in ("quantized_data", "zero_point", "scale", "axis")))
        if kind == "constexpr_blockwise_shift_scale":
            return _shift_scale(op["name"], *(self.param(op, k, depth, optional=k == "offset") for k in ("data", "scale", "offset")))
        if kind == "constexpr_lut_to_dense":
            return _lut(op["name"], *(self.param(op, k, depth, optional=k in ("shape", "vector_axis")) for k in ("lut", "indices", "shape", "vector_axis")))
        if kind.startswith("constexpr_"):
            raise ValueError(f"{kind} {op['name']}: weights compressed this way are not read (dequantize, lookup-table and shift-scale are)")
        return None

    def param(self, op: dict, key: str, depth: int, optional: bool = False) -> np.ndarray | None:
        """An op's parameter from its inputs (iOS18 constexpr ops, most ops) or its attributes
        (iOS16 constexpr ops)."""
        what = f"{op['type']} {op['name']}'s {key}"
        if key in op["inputs"]:
            value = self.argument(op["inputs"][key], depth + 1, what)
        elif key in op["attributes"]:
            value = self.value(op["attributes"][key], what)
        elif optional:
            return None
        else:
            raise ValueError(f"{what} is missing")
        if value is None and not optional:
            raise ValueError(f"{what} is not a stored value")
        return value

    def value(self, raw: memoryview | None, what: str) -> np.ndarray | None:
        """A Value: its tensor type (data type and shape) and its immediate or blob-file data."""
        if raw is None:
            return None
        message = pw.parse(raw, {2, 3, 5})
        dtype_code, shape = _tensor_type(sub(message, 2), what)
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise ValueError(f"{what}: absurd shape {shape}")
        if 5 in message:
            return self._blob(sub(message, 5), dtype_code, shape, what)
        tensor = _tensor_message(raw)
        if not tensor:
            return None
        if dtype_code not in DTYPES:
            return None  # strings and other non-numeric constants
        dtype, bits = DTYPES[dtype_code]
        if 7 in tensor:  # raw bytes (fp16, 8-bit and packed types)
            data = sub(pw.parse(sub(tensor, 7), {1}), 1) or memoryview(b"")
            return _from_bytes(data, dtype_code, shape, what)
        if 1 in tensor or 6 in tensor:
            flat = bounded_floats(sub(tensor, 1 if 1 in tensor else 6), 1, count, what, "<f4" if 1 in tensor else "<f8")
            flat = np.zeros(0, np.float32) if flat is None else flat
        elif 2 in tensor or 5 in tensor or 3 in tensor:
            number = 2 if 2 in tensor else (5 if 5 in tensor else 3)
            if count > MAX_IMMEDIATE_INTS:
                raise ValueError(f"{what}: {count:,} integers stored one by one; refused (weights are stored as bytes or blobs)")
            ints = sub(tensor, number)
            if len(ints) > 11 * count + 16:  # at most 10 bytes a varint, and a key when not packed
                raise ValueError(f"{what}: {len(ints):,} bytes of integers for {count:,} values")
            flat = np.array(pw.repeated_ints(pw.parse(ints, {1}), 1), np.int64)
        else:
            return None
        if flat.size != count:
            raise ValueError(f"{what}: {flat.size:,} values for shape {shape}")
        return flat.astype(dtype if bits >= 8 else np.int64).reshape(shape)

    def _blob(self, raw: memoryview, dtype_code: int, shape: tuple[int, ...], what: str) -> np.ndarray:
        blob = pw.parse(raw, {1, 2})
        file_name, offset = text(blob, 1), num(blob, 2)
        path = self._blob_file(file_name, what)
        sentinel, blob_type, size, data_offset = METADATA.unpack(read_range(path, offset, METADATA.size, f"{what}: blob metadata"))
        if sentinel != SENTINEL:
            raise ValueError(f"{what}: no blob metadata at offset {offset:,} of {path.name} (sentinel {sentinel:#x}, not 0xdeadbeef)")
        if BLOB_TYPES.get(blob_type) != dtype_code:
            raise ValueError(f"{what}: the blob at offset {offset:,} holds data type {blob_type}, the program says MIL type {dtype_code}")
        return _from_bytes(read_range(path, data_offset, size, f"{what}: blob data"), dtype_code, shape, what)

    def _blob_file(self, file_name: str, what: str) -> Path:
        if file_name not in self.blob_files:
            if not file_name.startswith(MODEL_PATH):
                raise ValueError(f"{what}: blob file {file_name!r} is not under @model_path; refused")
            path = inside(self.model_path, file_name[len(MODEL_PATH):], "blob file")
            if not path.is_file():
                raise ValueError(f"{what}: blob file {file_name!r} is missing from the model's folder")
            self.blob_files[file_name] = path
        return self.blob_files[file_name]


def _tensor_type(raw: memoryview | None, what: str) -> tuple[int, tuple[int, ...]]:
    tensor = None if raw is None else sub(pw.parse(raw, {1}), 1)
    if tensor is None:
        raise ValueError(f"{what}: not a tensor value")
    message = pw.parse(tensor, {1, 3})
    shape = []
    for raw_dim in subs(message, 3):
        constant = sub(pw.parse(raw_dim, {1}), 1)
        if constant is None:
            raise ValueError(f"{what}: a stored tensor with an unknown dimension")
        shape.append(num(pw.parse(constant, {1}), 1))
    return num(message, 1), tuple(shape)


def _from_bytes(data: memoryview | bytes, dtype_code: int, shape: tuple[int, ...], what: str) -> np.ndarray:
    if dtype_code not in DTYPES:
        raise ValueError(f"{what}: data type {dtype_code} is not read")
    dtype, bits = DTYPES[dtype_code]
    count = math.prod(shape)
    if bits < 8:
        values = unpack_bits(data, bits, count, msb_first=False, what=what)
        if dtype_code == 25:  # int4: two's complement
            values = np.where(values >= 8, values - 16, values)
        return values.reshape(shape)
    itemsize = np.dtype(dtype).itemsize
    if len(data) != count * itemsize:
        raise ValueError(f"{what}: {len(data):,} bytes for shape {shape} of {np.dtype(dtype).name} ({count * itemsize:,} needed)")
    return np.frombuffer(data, dtype).reshape(shape)


def _per_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * rank
    shape[axis] = -1
    return param.reshape(shape)


def _affine(name, q, zero, scale, axis) -> np.ndarray:
    axis = int(axis.ravel()[0]) if axis is not None and axis.size else 0
    if not -q.ndim <= axis < q.ndim:
        raise ValueError(f"constexpr_affine_dequantize {name}: axis {axis} for a rank-{q.ndim} tensor")
    axis %= q.ndim
    for p in (zero, scale):
        if p.size not in (1, q.shape[axis]):
            raise ValueError(f"constexpr_affine_dequantize {name}: {p.size} parameters for {q.shape[axis]} channels")
    out = (q.astype(np.float32) - _per_axis(zero, q.ndim, axis).astype(np.float32)) * _per_axis(scale, q.ndim, axis).astype(np.float32)
    return out.astype(np.float32)


def _shift_scale(name, data, scale, offset) -> np.ndarray:
    if scale.ndim != data.ndim or any(s == 0 or d % s for d, s in zip(data.shape, scale.shape)):
        raise ValueError(f"constexpr_blockwise_shift_scale {name}: scale of shape {scale.shape} does not tile data of shape {data.shape}")
    if offset is not None and offset.shape != scale.shape:
        raise ValueError(f"constexpr_blockwise_shift_scale {name}: offset of shape {offset.shape}, scale of shape {scale.shape}")
    out = data.astype(np.float32)
    blocks = [d // s for d, s in zip(data.shape, scale.shape)]
    scale, offset = (None if p is None else _repeat_blocks(p.astype(np.float32), blocks) for p in (scale, offset))
    if offset is not None:
        out = out - offset
    return out * scale


def _repeat_blocks(param: np.ndarray, blocks: list[int]) -> np.ndarray:
    for axis, block in enumerate(blocks):
        if block > 1:
            param = np.repeat(param, block, axis)
    return param


def _lut(name, lut, indices, shape, vector_axis) -> np.ndarray:
    if shape is not None:  # iOS16: a flat table, indices packed into uint8 bytes, the shape given
        shape = tuple(int(d) for d in shape.ravel())
        count = math.prod(shape)
        bits = int(lut.size).bit_length() - 1
        if lut.ndim != 1 or lut.size != 1 << bits or not 1 <= bits <= 8 or count > MAX_ELEMENTS:
            raise ValueError(f"constexpr_lut_to_dense {name}: a table of {lut.size} entries for shape {shape}")
        q = unpack_bits(indices.astype(np.uint8).tobytes(), bits, count, msb_first=False, what=f"constexpr_lut_to_dense {name}")
        return lut.astype(np.float32)[q].reshape(shape)
    # iOS18: lut of shape (blocks per axis..., entries, vector size), indices typed and shaped
    if vector_axis is not None or lut.ndim != indices.ndim + 2 or lut.shape[-1] != 1:
        raise ValueError(f"constexpr_lut_to_dense {name}: vector palettization (table of shape {lut.shape}) is not read")
    blocks = lut.shape[:-2]
    if any(b == 0 or d % b for d, b in zip(indices.shape, blocks)) or (indices >= lut.shape[-2]).any():
        raise ValueError(f"constexpr_lut_to_dense {name}: a table of shape {lut.shape} for indices of shape {indices.shape}")
    position = tuple(np.arange(d).reshape([-1 if a == i else 1 for a in range(indices.ndim)]) // (d // b) for i, (d, b) in enumerate(zip(indices.shape, blocks)))
    return lut[(*position, indices.astype(np.intp), 0)].astype(np.float32)
