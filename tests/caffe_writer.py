"""A tiny ``.caffemodel`` writer for the tests (no Caffe installs here): protobuf wire encoding of
the few caffe.proto fields the reader looks at, by their published field numbers."""

from __future__ import annotations

import numpy as np

from tests.protobuf_writer import field
from tests.protobuf_writer import varint as _varint


def field_varint(number: int, value: int) -> bytes:
    return field(number, int(value))


def field_bytes(number: int, payload: bytes) -> bytes:
    return field(number, bytes(payload))


def blob(array: np.ndarray, legacy: bool = False) -> bytes:
    """BlobProto: shape 7 (BlobShape.dim 1, packed) or legacy num/channels/height/width 1-4; data 5."""
    if legacy:
        head = b"".join(field_varint(n, d) for n, d in zip((1, 2, 3, 4), array.shape))
    else:
        head = field_bytes(7, field_bytes(1, b"".join(_varint(d) for d in array.shape)))
    return head + field_bytes(5, np.ascontiguousarray(array, "<f4").tobytes())


def layer(name: str, kind: str, bottoms: list[str], tops: list[str], blobs: list[np.ndarray] = (),
          group: int | None = None, v1_type: int | None = None) -> bytes:
    """A LayerParameter (field 100 of NetParameter) or, with ``v1_type``, a V1LayerParameter
    (field 2): the type enum, name 4, bottom 2, top 3, blobs 6, convolution_param 10."""
    if v1_type is None:
        numbers = dict(name=1, bottom=3, top=4, blobs=7, conv=106)
        body = field_bytes(1, name.encode()) + field_bytes(2, kind.encode())
    else:
        numbers = dict(name=4, bottom=2, top=3, blobs=6, conv=10)
        body = field_bytes(4, name.encode()) + field_varint(5, v1_type)
    body += b"".join(field_bytes(numbers["bottom"], b.encode()) for b in bottoms)
    body += b"".join(field_bytes(numbers["top"], t.encode()) for t in tops)
    body += b"".join(field_bytes(numbers["blobs"], blob(b, legacy=v1_type is not None)) for b in blobs)
    if group is not None:  # ConvolutionParameter: num_output 1, group 5
        body += field_bytes(numbers["conv"], field_varint(1, blobs[0].shape[0]) + field_varint(5, group))
    return field_bytes(100 if v1_type is None else 2, body)


def net(*layers: bytes, name: str = "net") -> bytes:
    return field_bytes(1, name.encode()) + b"".join(layers)
