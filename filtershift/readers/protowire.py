"""The protocol-buffer wire format, decoded without generated code.

Several checkpoint formats are protobuf messages whose schemas we know by field number (TensorFlow
tensor bundles and graphs, Paddle programs, Caffe nets, Core ML models, ONNX models). Only the fields a reader
names are decoded; every length is checked against the bytes that hold it, so a hostile file fails
with :class:`ValueError` instead of reading past its end. Length-delimited values are zero-copy
``memoryview`` slices of the input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated protobuf message (a varint runs past the end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("corrupt protobuf message (a varint longer than 10 bytes)")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of each field in order: an ``int`` for varints and
    fixed-width values (raw bits), a ``memoryview`` for length-delimited ones."""
    if isinstance(data, int):  # a varint where a message was expected: never memoryview(int) (allocates int bytes)
        raise ValueError("corrupt protobuf message (a number where a nested message belongs)")
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) or data.format != "B" else data
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("corrupt protobuf message (field number 0)")
        if wire == VARINT:
            value, pos = varint(buf, pos)
        elif wire == LENGTH:
            size, pos = varint(buf, pos)
            if size > end - pos:
                raise ValueError(f"truncated protobuf message (field {number} claims {size:,} bytes, {end - pos:,} remain)")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if width > end - pos:
                raise ValueError("truncated protobuf message (a fixed-width field runs past the end)")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise ValueError(f"corrupt protobuf message (field {number} has wire type {wire}, not one of 0, 1, 2, 5)")
        yield number, wire, value


def parse(data: bytes | memoryview, wanted: set[int] | None = None) -> dict[int, list]:
    """Field number -> its values, in order (repeated fields keep every value); with ``wanted``,
    only those fields are kept."""
    out: dict[int, list] = {}
    for number, _, value in fields(data):
        if wanted is None or number in wanted:
            out.setdefault(number, []).append(value)
    return out


def first(message: dict[int, list], number: int, default=None):
    values = message.get(number)
    return values[0] if values else default


def text(value: memoryview | None, default: str = "") -> str:
    if isinstance(value, int):  # never bytes(int): that allocates int zero bytes
        raise ValueError("corrupt protobuf message (a number where a string belongs)")
    return default if value is None else bytes(value).decode("utf-8", errors="replace")


def signed(value: int, bits: int = 64) -> int:
    """A two's-complement ``int32`` / ``int64`` from its varint."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def as_float(bits: int) -> float:
    return struct.unpack("<f", bits.to_bytes(4, "little"))[0]


def repeated_ints(message: dict[int, list], number: int) -> list[int]:
    """A repeated integer field, packed (one length-delimited value) or not, as signed ints."""
    out: list[int] = []
    for value in message.get(number, []):
        if isinstance(value, int):
            out.append(signed(value))
            continue
        pos = 0
        while pos < len(value):
            item, pos = varint(value, pos)
            out.append(signed(item))
    return out


def repeated_floats(message: dict[int, list], number: int, dtype: str = "<f4") -> np.ndarray:
    """A repeated ``float`` (``<f4``) or ``double`` (``<f8``) field, packed or not."""
    width = np.dtype(dtype).itemsize
    parts = []
    for value in message.get(number, []):
        if isinstance(value, int):
            parts.append(np.frombuffer(value.to_bytes(width, "little"), dtype))
        elif len(value) % width:
            raise ValueError(f"corrupt protobuf message (packed field {number} is {len(value)} bytes, not a multiple of {width})")
        else:
            parts.append(np.frombuffer(value, dtype))
    return np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.zeros(0, dtype))
