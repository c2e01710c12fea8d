"""Paddle's serialized tensors, as ``save_combine`` writes an inference model's ``.pdiparams``: the
persistable tensors one after another, each (little-endian)

    uint32 version (0) | uint64 LoD levels, each a uint64 byte count and that many bytes |
    uint32 tensor version (0) | int32 n | n bytes of a ``VarType.TensorDesc`` protobuf
    (data_type = 1, dims = 2) | the raw data, prod(dims) x the dtype's size, C order.

Every count and length is checked against the bytes that remain before it is used, and the shape's
byte count before any array is made, so a hostile file fails with a one-line ``ValueError`` and
nothing is allocated from a size it claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filtershift.readers import protowire as pw

# VarType.Type -> numpy dtype (BF16 is read as uint16 and widened)
DTYPES = {0: "?", 1: "<i2", 2: "<i4", 3: "<i8", 4: "<f2", 5: "<f4", 6: "<f8", 20: "u1", 21: "i1", 22: "<u2", 36: "<u2", 37: "<u4", 38: "<u8"}
BF16 = 22
FLOAT_TYPES = {4, 5, 6, BF16}
MAX_LOD_LEVELS = 64
MAX_ELEMENTS = 2**40


@dataclass(frozen=True)
class TensorEntry:
    """One serialized tensor: its ``VarType`` dtype code, dims, and where its data lies."""

    dtype: int
    dims: tuple[int, ...]
    offset: int
    nbytes: int


def _uint(buf: memoryview, pos: int, width: int, what: str) -> int:
    if pos + width > len(buf):
        raise ValueError(f"the .pdiparams ends inside {what} (byte {pos:,} of {len(buf):,})")
    return int.from_bytes(buf[pos:pos + width], "little")


def entry_at(buf: memoryview, pos: int, index: int) -> tuple[TensorEntry, int]:
    """The tensor serialized at ``pos`` and the position after it."""
    what = f"tensor {index}"
    if (version := _uint(buf, pos, 4, f"{what}'s header")) != 0:
        raise ValueError(f"{what} at byte {pos:,} has version {version}, not 0: not a Paddle parameters file, or corrupt")
    levels = _uint(buf, pos + 4, 8, f"{what}'s LoD count")
    if levels > MAX_LOD_LEVELS:
        raise ValueError(f"{what} at byte {pos:,} claims {levels:,} LoD levels; corrupt")
    pos += 12
    for _ in range(levels):
        size = _uint(buf, pos, 8, f"{what}'s LoD")
        if size > len(buf) - pos - 8:
            raise ValueError(f"{what}'s LoD claims {size:,} bytes, past the end of the .pdiparams")
        pos += 8 + size
    if (version := _uint(buf, pos, 4, f"{what}'s tensor version")) != 0:
        raise ValueError(f"{what} has tensor version {version}, not 0; corrupt")
    desc_size = _uint(buf, pos + 4, 4, f"{what}'s description size")
    pos += 8
    if desc_size > len(buf) - pos:
        raise ValueError(f"{what}'s description claims {desc_size:,} bytes, past the end of the .pdiparams")
    desc = pw.parse(buf[pos:pos + desc_size], {1, 2})
    pos += desc_size
    dtype, dims = pw.first(desc, 1), tuple(pw.repeated_ints(desc, 2))
    if dtype not in DTYPES:
        raise ValueError(f"{what} has data type {dtype}, not a tensor type Paddle saves; corrupt")
    count = 1
    for d in dims:
        if not 0 <= d <= MAX_ELEMENTS:
            raise ValueError(f"{what} has an impossible shape {dims}; corrupt")
        count *= d
    nbytes = count * np.dtype(DTYPES[dtype]).itemsize
    if nbytes > len(buf) - pos:
        raise ValueError(f"{what} of shape {dims} claims {nbytes:,} bytes, but only {len(buf) - pos:,} remain in the .pdiparams")
    return TensorEntry(dtype, dims, pos, nbytes), pos + nbytes


def entries(buf: memoryview) -> list[TensorEntry]:
    """Every tensor of a combined parameters file, in order; the file must end after the last."""
    out, pos = [], 0
    while pos < len(buf):
        entry, pos = entry_at(buf, pos, len(out))
        out.append(entry)
    return out


def array(buf: memoryview, entry: TensorEntry) -> np.ndarray:
    """The tensor's values: floating types as float32 (bfloat16 widened exactly), others as stored."""
    values = np.frombuffer(buf, DTYPES[entry.dtype], count=entry.nbytes // np.dtype(DTYPES[entry.dtype]).itemsize, offset=entry.offset)
    if entry.dtype == BF16:
        values = (values.astype(np.uint32) << 16).view(np.float32)
    elif entry.dtype in FLOAT_TYPES:
        values = values.astype(np.float32)
    return values.reshape(entry.dims)


def named_tensors(path: Path, declared: dict[str, tuple[int, ...] | None]) -> tuple[memoryview, dict[str, TensorEntry]]:
    """The tensors of the ``.pdiparams`` at ``path`` by name: ``save_combine`` writes the program's
    persistable tensors in the order of their sorted names. The count must match, and each tensor's
    dims must be the ones the program declares (where it declares them)."""
    buf = memoryview(path.read_bytes())
    found = entries(buf)
    names = sorted(declared)
    if len(found) != len(names):
        raise ValueError(f"{path.name} holds {len(found)} tensors but the program declares {len(names)} persistable ones; the two files do not belong together")
    for name, entry in zip(names, found):
        dims = declared[name]
        if dims is not None and -1 not in dims and tuple(dims) != entry.dims:
            raise ValueError(f"{path.name}: tensor {name!r} has shape {entry.dims} but the program declares {tuple(dims)}; the two files do not belong together")
    return buf, dict(zip(names, found))
