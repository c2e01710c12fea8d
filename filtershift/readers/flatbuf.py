"""A bounds-checked reader of FlatBuffers tables, for formats read by field number (TFLite).

A FlatBuffer is a tree of tables addressed by 32-bit offsets: the file starts with the offset of
the root table; a table starts with a signed offset back to its vtable, whose 16-bit entries give
each field's position inside the table (0: absent, use the default). Offset fields (tables,
vectors, strings) hold an unsigned offset from the field itself; a vector is a 32-bit length
followed by its elements (for a vector of tables, one 32-bit offset each).

Every position and length is checked against the buffer before it is used, so a hostile file
raises ``ValueError`` with one line naming what lies outside, never reads past the end, and never
allocates more than the bytes that are actually there. Vectors of numbers come back as numpy views
of the buffer (no copy).
"""

from __future__ import annotations

import struct

import numpy as np

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")


class Table:
    """One table at ``pos`` of ``buf``; ``what`` names it in error messages."""

    __slots__ = ("buf", "pos", "what", "_fields")

    def __init__(self, buf, pos: int, what: str):
        self.buf, self.pos, self.what = buf, pos, what
        _check(buf, pos, 4, what)
        vtable = pos - _I32.unpack_from(buf, pos)[0]
        _check(buf, vtable, 4, f"{what}'s vtable")
        size = _U16.unpack_from(buf, vtable)[0]
        if size < 4 or size % 2:
            raise ValueError(f"{what}: its vtable claims {size} bytes; not a FlatBuffer table")
        _check(buf, vtable, size, f"{what}'s vtable")
        self._fields = (vtable + 4, (size - 4) // 2)

    def _field(self, index: int) -> int:
        """The absolute position of field ``index``, or 0 when it is absent."""
        start, count = self._fields
        if index >= count:
            return 0
        rel = _U16.unpack_from(self.buf, start + 2 * index)[0]
        return self.pos + rel if rel else 0

    def scalar(self, index: int, fmt: str, default=0):
        """Field ``index`` as a little-endian scalar of struct format ``fmt`` ('B', 'i', 'Q', ...)."""
        at = self._field(index)
        if not at:
            return default
        size = struct.calcsize("<" + fmt)
        _check(self.buf, at, size, f"{self.what} field {index}")
        return struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, index: int) -> int:
        at = self._field(index)
        if not at:
            return 0
        _check(self.buf, at, 4, f"{self.what} field {index}")
        return at + _U32.unpack_from(self.buf, at)[0]

    def table(self, index: int, what: str) -> Table | None:
        target = self._target(index)
        return Table(self.buf, target, what) if target else None

    def _vector(self, index: int, item: int, what: str) -> tuple[int, int]:
        """(position of the first element, length) of vector field ``index``; (0, 0) when absent."""
        target = self._target(index)
        if not target:
            return 0, 0
        _check(self.buf, target, 4, what)
        length = _U32.unpack_from(self.buf, target)[0]
        _check(self.buf, target + 4, length * item, f"{what} ({length:,} elements)")
        return target + 4, length

    def tables(self, index: int, what: str) -> list[Table]:
        start, length = self._vector(index, 4, what)
        return [Table(self.buf, start + 4 * i + _U32.unpack_from(self.buf, start + 4 * i)[0], f"{what}[{i}]") for i in range(length)]

    def numbers(self, index: int, dtype: str, what: str) -> np.ndarray:
        """Vector field ``index`` of numbers as a read-only numpy view (``dtype`` like '<i4')."""
        dt = np.dtype(dtype)
        start, length = self._vector(index, dt.itemsize, what)
        return np.frombuffer(self.buf, dtype=dt, count=length, offset=start) if length else np.zeros(0, dt)

    def string(self, index: int, what: str = "string") -> str:
        start, length = self._vector(index, 1, f"{self.what} {what}")
        return bytes(self.buf[start:start + length]).decode("utf-8", "replace") if length else ""


def root(buf, identifier: bytes | None = None, what: str = "root table") -> Table:
    """The root table of the FlatBuffer ``buf`` (bytes, memoryview or mmap)."""
    _check(buf, 0, 8, "the FlatBuffer header")
    if identifier is not None and bytes(buf[4:8]) != identifier:
        raise ValueError(f"the file identifier is {bytes(buf[4:8])!r}, not {identifier!r}")
    return Table(buf, _U32.unpack_from(buf, 0)[0], what)


def _check(buf, pos: int, size: int, what: str) -> None:
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise ValueError(f"{what}: bytes {pos:,}..{pos + size:,} lie outside the {len(buf):,}-byte file")
