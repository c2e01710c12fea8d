"""ONNX ``TensorProto`` values decoded from their wire bytes (onnx.proto field numbers), without copies.

A tensor held as ``raw_data`` or as external data, of a plain dtype, becomes a read-only
``np.frombuffer`` view of the memory-mapped file. A mapping is never closed: the views keep it
alive and it is unmapped when the last of them is dropped. Anything else (typed ``float_data`` /
``int32_data`` fields, packed 4-bit types, ``segment``) is rare and small, and goes through
``onnx.numpy_helper`` on that one tensor's bytes, so its values are onnx's own. External data must
lie inside the model's folder, and its offset and length inside its file.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from filtershift.readers import protowire as pw

DIMS, DATA_TYPE, SEGMENT, NAME, RAW_DATA, EXTERNAL_DATA, DATA_LOCATION = 1, 2, 3, 8, 9, 13, 14
FIELDS = {DIMS, DATA_TYPE, SEGMENT, NAME, RAW_DATA, EXTERNAL_DATA, DATA_LOCATION}
EXTERNAL = 1  # TensorProto.DataLocation
# TensorProto.DataType -> the dtype of its raw bytes (those of onnx.helper.tensor_dtype_to_np_dtype, little-endian)
PLAIN = {
    1: np.dtype("<f4"), 2: np.dtype("u1"), 3: np.dtype("i1"), 4: np.dtype("<u2"), 5: np.dtype("<i2"), 6: np.dtype("<i4"),
    7: np.dtype("<i8"), 9: np.dtype("?"), 10: np.dtype("<f2"), 11: np.dtype("<f8"), 12: np.dtype("<u4"), 13: np.dtype("<u8"),
    16: np.dtype(ml_dtypes.bfloat16),
}


def mapped(path: Path) -> memoryview:
    """The file's bytes, memory-mapped read-only (an empty file: empty bytes)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


class Tensor:
    """One ``TensorProto``: its wire bytes and its top-level fields (values not decoded yet)."""

    __slots__ = ("fields", "name", "wire")

    def __init__(self, wire: memoryview):
        self.wire = wire
        self.fields = pw.parse(wire, FIELDS)
        self.name = pw.text(_last(self.fields, NAME))

    def value(self, folder: Path, files: dict[Path, memoryview]) -> np.ndarray:
        """The tensor as an array; external data is read from ``folder`` (``files`` caches the
        mapped data files)."""
        data_type = _last(self.fields, DATA_TYPE, 0)
        external = _last(self.fields, DATA_LOCATION, 0) == EXTERNAL
        raw = self._external(folder, files) if external else _last(self.fields, RAW_DATA)
        dtype = PLAIN.get(data_type)
        if raw is None or dtype is None or SEGMENT in self.fields:
            return self._through_onnx(raw if external else None)
        if isinstance(raw, int):
            raise ValueError(f"tensor {self.name!r}: corrupt raw_data (a number where bytes belong)")
        dims = pw.repeated_ints(self.fields, DIMS)
        count = 1
        for d in dims:
            count *= d
        if min(dims, default=0) < 0 or count * dtype.itemsize != len(raw):
            raise ValueError(f"tensor {self.name!r}: {len(raw):,} bytes of data do not hold shape {tuple(dims)} of {dtype.name}")
        return np.frombuffer(raw, dtype).reshape(dims)

    def _external(self, folder: Path, files: dict[Path, memoryview]) -> memoryview:
        info: dict[str, str] = {}
        for entry in self.fields.get(EXTERNAL_DATA, []):
            pair = pw.parse(entry, {1, 2})
            info[pw.text(_last(pair, 1))] = pw.text(_last(pair, 2))  # the last of a repeated key wins, as in onnx
        location = info.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ValueError(f"tensor {self.name!r}: external data {location!r} lies outside the model's folder; refused")
        if not target.is_file():
            raise ValueError(f"tensor {self.name!r}: external data file {location!r} is missing next to the model")
        if target not in files:
            files[target] = mapped(target)
        data = files[target]
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else len(data) - offset
        except ValueError:
            raise ValueError(f"tensor {self.name!r}: external data offset {info.get('offset')!r} or length {info.get('length')!r} is not a number") from None
        if offset < 0 or length < 0 or offset > len(data) or length > len(data) - offset:
            raise ValueError(f"tensor {self.name!r}: external data of {length:,} bytes at offset {offset:,} lies outside {location!r} ({len(data):,} bytes)")
        return data[offset:offset + length]

    def _through_onnx(self, external_raw: memoryview | None) -> np.ndarray:
        from google.protobuf.message import DecodeError
        from onnx import TensorProto, numpy_helper

        try:
            proto = TensorProto.FromString(bytes(self.wire))
        except DecodeError as exc:
            raise ValueError(f"tensor {self.name!r}: not a readable TensorProto ({exc})") from None
        if external_raw is not None:
            proto.ClearField("external_data")
            proto.ClearField("data_location")
            proto.raw_data = bytes(external_raw)
        try:
            return numpy_helper.to_array(proto)
        except (TypeError, ValueError, OverflowError, IndexError) as exc:
            raise ValueError(f"tensor {self.name!r}: {' '.join(str(exc).split())}") from None


def _last(message: dict[int, list], number: int, default=None):
    """A scalar field: protobuf keeps the last of repeated occurrences."""
    values = message.get(number)
    return values[-1] if values else default
