"""TensorFlow tensor bundles (``<prefix>.index`` + ``<prefix>.data-NNNNN-of-MMMMM``), read without
TensorFlow: the storage of TF2 checkpoints and of a SavedModel's ``variables/``.

The index is a LevelDB-style sorted table: a 48-byte footer (metaindex and index block handles,
padding, the magic ``0xdb4775248b80fb57``), an index block whose values are the handles of the data
blocks, and data blocks of prefix-compressed entries (shared / unshared key length, value length)
followed by their restart offsets and a 5-byte trailer (compression type, masked CRC-32C of the
block and that type byte, checked).
TensorFlow writes bundle tables uncompressed; a snappy-compressed block is refused. Entry ``""`` is
the ``BundleHeaderProto`` (num_shards = 1, endianness = 2); every other key is a tensor's
``BundleEntryProto`` (dtype = 1, shape = 2, shard_id = 3, offset = 4, size = 5, crc32c = 6,
slices = 7). A tensor's bytes are ``size`` bytes at ``offset`` of shard ``shard_id``, in C order,
little-endian. Every handle, offset and size is checked against the file sizes before any read, and
each tensor read is checked against its stored (masked) CRC-32C.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.readers.files import inside, read_range

MAGIC = 0xDB4775248B80FB57
FOOTER = 48
TRAILER = 5
MAX_INDEX_BYTES = 1 << 30
CHECKPOINT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# TensorFlow DataType enum -> numpy dtype, for the dtypes a weight can have
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 14: "bfloat16", 17: "<u2", 19: "<f2"}
DT_STRING = 7


@dataclass(frozen=True)
class Entry:
    """Where one tensor of a bundle is stored."""

    key: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def sniff_index(path: Path) -> bool:
    """An ``.index`` file whose last 8 bytes are the table magic."""
    try:
        size = path.stat().st_size
        if size < FOOTER:
            return False
        with open(path, "rb") as f:
            f.seek(size - 8)
            return int.from_bytes(f.read(8), "little") == MAGIC
    except OSError:
        return False


def table_entries(data: bytes) -> list[tuple[bytes, memoryview]]:
    """Every (key, value) of an sstable held in ``data``, in key order."""
    view = memoryview(data)
    if len(view) < FOOTER or int.from_bytes(view[-8:], "little") != MAGIC:
        raise ValueError("not a tensor-bundle index (no table magic at its end)")
    footer = view[len(view) - FOOTER:]
    _, pos = _handle(footer, 0, len(view))  # the metaindex: empty in bundles, never needed
    index_handle, _ = _handle(footer, pos, len(view))
    entries = []
    for _, value in _block(view, index_handle):
        handle, _ = _handle(value, 0, len(view))
        entries.extend(_block(view, handle))
    return entries


def _handle(buf: memoryview, pos: int, limit: int) -> tuple[tuple[int, int], int]:
    offset, pos = pw.varint(buf, pos)
    size, pos = pw.varint(buf, pos)
    if offset + size + TRAILER > limit - FOOTER:
        raise ValueError(f"corrupt tensor-bundle index (a block at {offset:,}+{size:,} runs past the table's {limit:,} bytes)")
    return (offset, size), pos


def _block(view: memoryview, handle: tuple[int, int]) -> list[tuple[bytes, memoryview]]:
    offset, size = handle
    if view[offset + size] != 0:
        raise ValueError(f"tensor-bundle index block at {offset:,} is compressed (type {view[offset + size]}); TensorFlow writes them uncompressed")
    block = view[offset:offset + size]
    stored = int.from_bytes(view[offset + size + 1:offset + size + TRAILER], "little")
    if crc32c_masked(bytes(view[offset:offset + size + 1])) not in (stored, None):
        raise ValueError(f"tensor-bundle index block at {offset:,} fails its CRC-32C check (a corrupt index)")
    if size < 4:
        raise ValueError("corrupt tensor-bundle index (a block shorter than its restart count)")
    n_restarts = int.from_bytes(block[-4:], "little")
    end = size - 4 - 4 * n_restarts
    if n_restarts < 1 or end < 0:
        raise ValueError(f"corrupt tensor-bundle index (a block of {size:,} bytes claims {n_restarts:,} restarts)")
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = pw.varint(block, pos)
        unshared, pos = pw.varint(block, pos)
        length, pos = pw.varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("corrupt tensor-bundle index (a block entry runs past its block)")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        entries.append((key, block[pos:pos + length]))
        pos += length
    return entries


def _entry(key: str, value: memoryview) -> Entry:
    message = pw.parse(value)
    shape_msg = pw.parse(pw.first(message, 2, b""))
    dims = tuple(pw.signed(pw.first(pw.parse(d), 1, 0)) for d in shape_msg.get(2, []))
    crc = pw.first(message, 6)
    return Entry(key, pw.first(message, 1, 0), dims, pw.first(message, 3, 0), pw.signed(pw.first(message, 4, 0)),
                 pw.signed(pw.first(message, 5, 0)), crc, bool(message.get(7)))


class Bundle:
    """The tensors of one bundle, by key; values read from the shards on demand."""

    def __init__(self, index: Path):
        self.index = Path(index)
        if not self.index.name.endswith(".index"):
            raise ValueError(f"{self.index.name}: a tensor bundle is named by its .index file")
        self.prefix = self.index.name.removesuffix(".index")
        size = self.index.stat().st_size
        if size > MAX_INDEX_BYTES:
            raise ValueError(f"{self.index.name}: a tensor-bundle index of {size:,} bytes; refused")
        entries = table_entries(self.index.read_bytes())
        if not entries or entries[0][0] != b"":
            raise ValueError(f"{self.index.name}: the tensor-bundle index has no header entry")
        header = pw.parse(entries[0][1])
        self.num_shards = pw.first(header, 1, 1)
        if pw.first(header, 2, 0) != 0:
            raise ValueError(f"{self.index.name}: a big-endian tensor bundle; only little-endian bundles are read")
        if not 1 <= self.num_shards <= 100_000:
            raise ValueError(f"{self.index.name}: the header claims {self.num_shards:,} data shards")
        self.entries = {e.key: e for e in (_entry(k.decode("utf-8", "replace"), v) for k, v in entries[1:])}

    def shard_paths(self) -> list[Path]:
        return [inside(self.index.parent, f"{self.prefix}.data-{i:05d}-of-{self.num_shards:05d}", "data shard") for i in range(self.num_shards)]

    def raw(self, key: str, check: bool = True) -> bytes:
        """The stored bytes of tensor ``key``, bounds-checked (and CRC-checked with ``check``)."""
        entry = self.entries[key]
        if entry.sliced:
            raise ValueError(f"tensor {key!r} is stored in slices (a partitioned variable); not read")
        if not 0 <= entry.shard < self.num_shards:
            raise ValueError(f"tensor {key!r} claims data shard {entry.shard} of {self.num_shards}")
        shard = self.shard_paths()[entry.shard]
        if not shard.is_file():
            raise ValueError(f"tensor {key!r}: data shard {shard.name} is missing beside {self.index.name}")
        data = read_range(shard, entry.offset, entry.size, f"tensor {key!r}")
        if check:
            self._check(entry, data)
        return data

    def _check(self, entry: Entry, checked: bytes) -> None:
        if entry.crc32c is not None and crc32c_masked(checked) not in (entry.crc32c, None):
            raise ValueError(f"tensor {entry.key!r}: its stored bytes fail their CRC-32C check (a corrupt data shard)")

    def array(self, key: str) -> np.ndarray:
        """Tensor ``key`` as a numpy array of its stored dtype and shape."""
        entry = self.entries[key]
        if entry.dtype not in DTYPES:
            raise ValueError(f"tensor {key!r} has TensorFlow dtype {entry.dtype}, not a numeric dtype read here")
        dtype = np.dtype(_numpy_dtype(DTYPES[entry.dtype]))
        if any(d < 0 for d in entry.shape) or int(np.prod(entry.shape, dtype=object)) * dtype.itemsize != entry.size:
            raise ValueError(f"tensor {key!r}: shape {entry.shape} of {dtype} does not fit its {entry.size:,} stored bytes")
        return np.frombuffer(self.raw(key), dtype).reshape(entry.shape)

    def string(self, key: str) -> bytes:
        """A scalar string tensor (the checkpoint's object graph): varint length, the masked CRC-32C
        of the length as uint32, the bytes; the entry's CRC-32C covers (uint32 length, that
        checksum, the bytes)."""
        entry = self.entries[key]
        if entry.dtype != DT_STRING or entry.shape != ():
            raise ValueError(f"tensor {key!r} is not a scalar string")
        data = self.raw(key, check=False)
        length, pos = pw.varint(memoryview(data), 0)
        if pos + 4 + length != len(data) or length >= 2**32:
            raise ValueError(f"tensor {key!r}: a string of {length:,} bytes in {len(data):,} stored bytes")
        self._check(entry, length.to_bytes(4, "little") + data[pos:])
        return data[pos + 4:]


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return name


def crc32c_masked(data: bytes) -> int | None:
    """The masked CRC-32C that TensorFlow stores (``rot15(crc) + 0xa282ead8``); ``None`` when no
    CRC-32C implementation is installed (the check is then skipped)."""
    try:
        import google_crc32c
    except ImportError:
        return None
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
