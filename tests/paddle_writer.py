"""Paddle's tensor serialization (save_combine, the .pdiparams layout) written from its description,
independently of the reader, for the Paddle tests."""

from __future__ import annotations

import struct

from tests.protobuf_writer import varint as _varint


def tensor_bytes(dims: tuple[int, ...], dtype: int, data: bytes, version: int = 0, lod: list[bytes] | None = None, desc_size: int | None = None) -> bytes:
    """One tensor as save_combine writes it (written here from the layout, not by the reader)."""
    desc = bytes([0x08, dtype]) + b"".join(b"\x10" + _varint(d & (2**64 - 1)) for d in dims)
    lod = lod or []
    head = struct.pack("<IQ", version, len(lod)) + b"".join(struct.pack("<Q", len(level)) + level for level in lod)
    return head + struct.pack("<Ii", 0, len(desc) if desc_size is None else desc_size) + desc + data
