"""TFLite constant tensors as float32 arrays: the stored bytes of a tensor's buffer (inside the
flatbuffer or, for models written with buffer offsets, in the file's tail), dequantized
(``(q - zero_point) * scale``, per tensor or per channel along ``quantized_dimension``) and, for
sparse tensors, densified from their sparsity parameters (traversal order, block map, DENSE /
SPARSE_CSR dimension metadata). Every size read from the file is checked against the bytes present
before anything is allocated.
"""

from __future__ import annotations

import math

import numpy as np

from filtershift.readers.flatbuf import Table

# TensorType -> numpy dtype of the stored values (the schema's enum; only these can hold weights)
DTYPES = {0: "<f4", 1: "<f2", 3: "u1", 7: "<i2", 9: "i1", 10: "<f8"}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 10: "float64", 17: "int4", 18: "bfloat16", 20: "uint4"}
DENSE, SPARSE_CSR = 0, 1
INDEX_VECTORS = {1: "<i4", 2: "<u2", 3: "u1"}  # SparseIndexVector union: Int32Vector, Uint16Vector, Uint8Vector
DENSIFY_LIMIT = 16  # a densified tensor may hold at most this many elements per byte of the file


def tensor_shape(tensor: Table, name: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.numbers(0, "<i4", f"tensor {name}'s shape"))
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor {name}: shape {shape} has a negative (dynamic) dimension; a stored weight cannot")
    return shape


def stored_values(tensor: Table, data, name: str, file_size: int) -> np.ndarray:
    """The tensor's values in their stored dtype and shape, densified when sparse."""
    kind = tensor.scalar(1, "b")
    if kind not in DTYPES:
        raise ValueError(f"tensor {name}: weights of type {TYPE_NAMES.get(kind, kind)} are not read (float32, float16, int8, uint8, int16 are)")
    dtype = np.dtype(DTYPES[kind])
    shape = tensor_shape(tensor, name)
    count = math.prod(shape)
    if len(data) % dtype.itemsize:
        raise ValueError(f"tensor {name}: its buffer holds {len(data):,} bytes, not a whole number of {dtype.name} values")
    values = np.frombuffer(data, dtype=dtype)
    sparsity = tensor.table(6, f"tensor {name}'s sparsity")
    if sparsity is not None:
        if count > DENSIFY_LIMIT * file_size:
            raise ValueError(f"tensor {name}: dense shape {shape} ({count:,} values) is implausibly large for a {file_size:,}-byte file")
        return densify(values, shape, sparsity, name)
    if values.size != count:
        raise ValueError(f"tensor {name}: shape {shape} needs {count:,} values but its buffer holds {values.size:,}")
    return values.reshape(shape)


def dequantized(tensor: Table, values: np.ndarray, name: str) -> np.ndarray:
    """Float values as float32 (exact for float16); integers as ``(q - zero_point) * scale``."""
    if values.dtype.kind == "f":
        return values.astype(np.float32)
    quant = tensor.table(4, f"tensor {name}'s quantization")
    scale = np.zeros(0, np.float32) if quant is None else quant.numbers(2, "<f4", f"tensor {name}'s scales")
    if scale.size == 0:
        raise ValueError(f"tensor {name}: {values.dtype} weights without a quantization scale; cannot dequantize")
    zero = quant.numbers(3, "<i8", f"tensor {name}'s zero points")
    axis = quant.scalar(6, "i")
    shape = [1] * values.ndim
    if scale.size > 1:
        if not 0 <= axis < values.ndim or values.shape[axis] != scale.size:
            raise ValueError(f"tensor {name}: {scale.size} scales do not match dimension {axis} of shape {values.shape}")
        shape[axis] = scale.size
    if zero.size not in (0, 1, scale.size):
        raise ValueError(f"tensor {name}: {zero.size} zero points for {scale.size} scales")
    zero = zero.astype(np.float32).reshape(shape if zero.size > 1 else ())
    return (values.astype(np.float32) - zero) * scale.astype(np.float32).reshape(shape if scale.size > 1 else ())


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Table, name: str) -> np.ndarray:
    """The dense tensor of ``shape`` whose non-zero ``values`` the sparsity parameters locate.

    The traversal runs level by level over the expanded dimensions (the tensor's dimensions, then
    one per block dimension) in traversal order: a DENSE level visits every index, a SPARSE_CSR
    level the indices ``array_indices[segments[p]:segments[p + 1]]`` of its parent position ``p``;
    the leaf positions index ``values``."""
    order = [int(v) for v in sparsity.numbers(0, "<i4", f"tensor {name}'s traversal order")]
    block_map = [int(v) for v in sparsity.numbers(1, "<i4", f"tensor {name}'s block map")]
    levels = sparsity.tables(2, f"tensor {name}'s dimension metadata")
    n = len(shape)
    if sorted(order) != list(range(n + len(block_map))) or len(levels) != len(order) or any(not 0 <= b < n for b in block_map):
        raise ValueError(f"tensor {name}: inconsistent sparsity parameters (traversal order {order}, block map {block_map}, {len(levels)} dimension levels)")
    sizes = _expanded_sizes(shape, order, block_map, levels, name)
    position = np.zeros(1, np.int64)
    coords = np.zeros((len(sizes), 1), np.int64)
    limit = max(math.prod(shape), 1)
    for level, dim in zip(levels, order):
        position, index, parents = _level(level, position, sizes[dim], limit, name)
        coords = coords[:, parents]
        coords[dim] = index
    if position.size and position.max() >= values.size:
        raise ValueError(f"tensor {name}: its sparsity parameters address value {int(position.max()):,} of {values.size:,}")
    original = coords[:n].copy()
    for k, dim in enumerate(block_map):
        original[dim] = coords[dim] * sizes[n + k] + coords[n + k]
    dense = np.zeros(math.prod(shape), values.dtype)
    dense[np.ravel_multi_index(tuple(original), shape)] = values[position]
    return dense.reshape(shape)


def _expanded_sizes(shape, order, block_map, levels, name) -> list[int]:
    n = len(shape)
    sizes = list(shape) + [0] * len(block_map)
    for level, dim in zip(levels, order):
        if dim >= n:
            sizes[dim] = level.scalar(1, "i")
    for k, dim in enumerate(block_map):
        block = sizes[n + k]
        if block <= 0 or shape[dim] % block:
            raise ValueError(f"tensor {name}: block size {block} does not divide dimension {dim} of shape {shape}")
        sizes[dim] = shape[dim] // block
    return sizes


def _level(level: Table, parent_pos: np.ndarray, size: int, limit: int, name: str):
    """One traversal level: (child positions, child indices in this dimension, parent of each child)."""
    fmt = level.scalar(0, "b")
    if fmt == DENSE:
        if level.scalar(1, "i") != size:
            raise ValueError(f"tensor {name}: a dense level of {level.scalar(1, 'i')} for a dimension of {size}")
        if parent_pos.size * size > limit:
            raise ValueError(f"tensor {name}: its sparsity traversal visits more than the tensor's {limit:,} values")
        index = np.tile(np.arange(size, dtype=np.int64), parent_pos.size)
        parents = np.repeat(np.arange(parent_pos.size), size)
        return parent_pos[parents] * size + index, index, parents
    if fmt != SPARSE_CSR:
        raise ValueError(f"tensor {name}: unknown dimension format {fmt}")
    segments = _index_vector(level, 2, name, "array segments")
    indices = _index_vector(level, 4, name, "array indices")
    if parent_pos.size and (parent_pos.max() + 1 >= segments.size):
        raise ValueError(f"tensor {name}: {segments.size} array segments for parent position {int(parent_pos.max()):,}")
    if np.any(np.diff(segments) < 0) or (segments.size and (segments[0] < 0 or segments[-1] > indices.size)):
        raise ValueError(f"tensor {name}: array segments are not a non-decreasing range inside the {indices.size:,} indices")
    starts, stops = segments[parent_pos], segments[parent_pos + 1]
    counts = stops - starts
    if counts.sum() > limit:
        raise ValueError(f"tensor {name}: its sparsity traversal visits more than the tensor's {limit:,} values")
    parents = np.repeat(np.arange(parent_pos.size), counts)
    child = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(starts, counts)
    index = indices[child]
    if index.size and (index.min() < 0 or index.max() >= size):
        raise ValueError(f"tensor {name}: a sparse index lies outside its dimension of {size}")
    return child, index, parents


def _index_vector(level: Table, type_field: int, name: str, what: str) -> np.ndarray:
    kind = level.scalar(type_field, "B")
    if kind not in INDEX_VECTORS:
        raise ValueError(f"tensor {name}: {what} of unknown vector type {kind}")
    vector = level.table(type_field + 1, f"tensor {name}'s {what}")
    if vector is None:
        raise ValueError(f"tensor {name}: its {what} are missing")
    return vector.numbers(0, INDEX_VECTORS[kind], f"tensor {name}'s {what}").astype(np.int64)
