"""Keras 3 ``.keras`` archives: a zip of ``config.json`` (the model config) and
``model.weights.h5``, read with zipfile and h5py, never with Keras.

In ``model.weights.h5`` variables are named by position: a layer's group is
``layers/<generic name>/vars/<i>`` (nested models: ``layers/<model>/layers/<layer>/vars/<i>``),
where the generic name is the layer's class in snake case numbered per class (``conv2d``,
``conv2d_1``). The ``vars`` group's ``name`` attribute, when written (Keras >= 3.?), names the
layer and is preferred; otherwise the generic names are rebuilt from the config's layer order.
Variable 0 is the kernel (for SeparableConv2D: 0 depthwise, 1 pointwise). Optimizer variables
(``optimizer/vars``) are never read. Layer classes and depth: see :mod:`keras_layers`.

The archive is hostile until checked: each member must lie inside the archive, a stored member
must be as long as it claims, a compressed one may expand at most :data:`MAX_RATIO` times and to
at most :data:`MAX_IN_MEMORY` bytes, and each member's CRC-32 must match. A stored weights member
(what Keras writes) is read in place through a window on the archive, never extracted to disk.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

from filtershift.readers.keras_layers import conv_layers, conv_weights, h5_child, parse_config, read_dataset
from filtershift.types import ConvWeight

ZIP_MAGIC = b"PK\x03\x04"
CONFIG, WEIGHTS = "config.json", "model.weights.h5"
MAX_CONFIG = 64 * 2**20
MAX_IN_MEMORY = 2 * 2**30  # a compressed weights member is inflated in memory, up to this size
MAX_RATIO = 50  # float weights barely compress; JSON may (the config is bounded by MAX_CONFIG)
VAR_COUNTS = {"conv": 1, "depthwise": 1, "separable": 2}


def sniff(path: Path, head: bytes) -> bool:
    """A zip archive with ``config.json`` and ``model.weights.h5`` members."""
    if not head.startswith(ZIP_MAGIC):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except Exception:  # garbage is simply not ours
        return False
    return CONFIG in names and WEIGHTS in names


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    """Every regular 2-D convolution of a ``.keras`` archive (``arch`` is not used)."""
    import h5py

    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            config_info, weights_info = (_checked_member(archive, name, size) for name in (CONFIG, WEIGHTS))
            if config_info.file_size > MAX_CONFIG:
                raise ValueError(f"{path.name}: {CONFIG} claims {config_info.file_size:,} bytes (more than {MAX_CONFIG:,}); refused")
            config = parse_config(_member_bytes(archive, config_info), f"{path.name}: {CONFIG}")
            with _weights_file(path, archive, weights_info) as raw, h5py.File(raw, "r") as f:
                return _convolutions(config, f, weights_info.file_size)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path.name}: not a readable .keras archive (the zip is damaged: {exc})") from None
    except (OSError, KeyError, RuntimeError, TypeError, IndexError, AttributeError, EOFError, zlib.error) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name}: not a readable .keras archive ({type(exc).__name__}: {text})") from None


def _checked_member(archive: zipfile.ZipFile, name: str, archive_size: int) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ValueError(f"the archive has no {name} member; not a Keras 3 .keras file") from None
    if info.header_offset + info.compress_size > archive_size:
        raise ValueError(f"member {name} claims {info.compress_size:,} bytes past the end of the {archive_size:,}-byte archive; it is cut off or lies")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise ValueError(f"member {name} is stored but claims {info.file_size:,} bytes in {info.compress_size:,}; refused")
    if info.file_size > max(info.compress_size, 1) * MAX_RATIO and name == WEIGHTS:
        raise ValueError(f"member {name} claims {info.file_size:,} bytes from {info.compress_size:,} compressed (more than {MAX_RATIO}x); refused")
    return info


def _member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member inflated in memory, never past the size it claims (zipfile checks its CRC-32)."""
    if info.file_size > MAX_IN_MEMORY:
        raise ValueError(f"member {info.filename} claims {info.file_size:,} bytes; too large to inflate in memory (more than {MAX_IN_MEMORY:,})")
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ValueError(f"member {info.filename} holds {len(data):,} bytes, not the {info.file_size:,} it claims")
    return data


def _weights_file(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The weights member as a seekable file: a window on the archive for a stored member (after
    its CRC-32 is checked), else its bytes inflated in memory."""
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(_member_bytes(archive, info))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) != 30 or not header.startswith(ZIP_MAGIC):
        raise ValueError(f"member {info.filename}: no local header at offset {info.header_offset:,}; the zip is damaged")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    window = _Window(path, info.header_offset + 30 + name_len + extra_len, info.file_size)
    if window.crc32() != info.CRC:
        window.close()
        raise ValueError(f"member {info.filename} fails its CRC-32 check; the archive is damaged")
    return window


class _Window(io.RawIOBase):
    """Read-only, seekable view of ``size`` bytes at ``start`` of a file."""

    def __init__(self, path: Path, start: int, size: int):
        super().__init__()
        if start + size > path.stat().st_size:
            raise ValueError(f"member data {start:,}..{start + size:,} lies past the end of {path.name}")
        self._file = open(path, "rb")
        self._start, self._size, self._pos = start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got

    def crc32(self, block: int = 4 * 2**20) -> int:
        crc, self._pos = 0, 0
        buffer = bytearray(block)
        while n := self.readinto(buffer):
            crc = zlib.crc32(memoryview(buffer)[:n], crc)
        self._pos = 0
        return crc

    def close(self) -> None:
        self._file.close()
        super().close()


def _convolutions(config: dict, f, size: int) -> list[ConvWeight]:
    index = _LayerIndex()
    convs = []
    for layer in conv_layers(config):
        group = f
        for name, generic in layer.path:
            group = index.group(h5_child(group, "layers"), name, generic)
        variables = h5_child(group, "vars")
        kernels = [read_dataset(h5_child(variables, str(i)), size, f"layer {layer.name} (variable {i})") for i in range(VAR_COUNTS[layer.kind])]
        convs.extend(conv_weights(layer, kernels))
    return convs


class _LayerIndex:
    """Finds a layer's weight group in a ``layers`` group: the child whose ``vars`` group carries
    the layer's name (indexed once per ``layers`` group), else the child with its generic name."""

    def __init__(self):
        self._by_name: dict[str, dict[str, str]] = {}

    def group(self, layers, name: str, generic: str):
        if layers.name not in self._by_name:
            self._by_name[layers.name] = {_vars_name(layers, key): key for key in layers.keys()}
        key = self._by_name[layers.name].get(name) or generic
        if not key or key not in layers:
            raise ValueError(f"{layers.name}: no weight group for layer {name!r} (no vars group named so, no {generic!r})")
        return h5_child(layers, key)


def _vars_name(layers, key: str) -> str:
    try:
        value = h5_child(layers, f"{key}/vars").attrs.get("name", "")
    except ValueError:  # no vars group, or a link: not a layer found by name
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
