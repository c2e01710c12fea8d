"""Protobuf wire encoding for the tests' hand-built files (Caffe, Core ML, Paddle, TensorFlow
bundles): written from the published encoding, independently of ``filtershift.readers.protowire``."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Base-128 varint; negative values as their 64-bit two's complement, as protobuf writes them."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    """One field: an int as a varint (wire type 0), bytes or text length-delimited (wire type 2)."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    value = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields: tuple[int, int | bytes | str]) -> bytes:
    return b"".join(field(n, v) for n, v in fields)
