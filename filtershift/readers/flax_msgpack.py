"""Flax / JAX checkpoints in flax.serialization's msgpack format (``flax.serialization.to_bytes``,
``msgpack_serialize``; Hugging Face's ``flax_model.msgpack``), read with the ``msgpack`` package,
never with JAX or Flax.

The format: the state dict is one msgpack map of maps (lists and tuples become maps keyed ``"0"``,
``"1"``, ...). An array is the msgpack extension type 1 whose payload is itself msgpack: the list
``[shape, dtype name, C-ordered bytes]`` (little-endian on every machine JAX runs on); type 3 is a
numpy scalar in the same form, type 2 a complex number. An array over ``MAX_CHUNK_SIZE`` (1 GiB) is
written as a map ``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0":
flat array, ...}}``. ``bfloat16`` arrays are read through ``ml_dtypes``.

A checkpoint holds no module types, so the rule is by name and shape, and has limits (as the
state-dict rule of :mod:`filtershift.readers.statedict` has):
- the tree read is the ``params`` map when the top map has one (Linen variables, a ``TrainState``),
  else ``target`` (the old ``flax.optim`` optimizer), else the top map (a bare params tree, as
  Hugging Face saves); below it, subtrees named like optimizer state, EMA copies or statistics
  (``opt_state``, ``optimizer``, ``param_states``, ``batch_stats``, ``ema_params``, ...) are never
  read;
- a conv is a 4-D floating leaf named ``kernel`` (H, W, I, O) whose module's own name looks like a
  convolution: it contains ``conv`` (``Conv_0``, ``conv1``, ``convolution``) or says depthwise
  (``depthwise``, ``dw``), or it is one of the conv names of known model code (``downsample``,
  ``shortcut``, ``projection``, ``patch_embed*``, ``stem``, ``embedding``); a 4-D kernel of a
  module named otherwise is not counted (a ``DenseGeneral`` over two axes has one too), so convs
  in neutrally named modules are missed (Hugging Face RegNet's squeeze-excitation 1x1 convs,
  ``layer/2/attention/0``);
- a module whose name says transposed (``ConvTranspose_0``, ``deconv``, ``up_conv``, ...) is
  excluded; Flax's ``ConvTranspose`` kernel has the same layout, so a neutrally named one counts;
- kernel (o, i) = K[:, :, i, o]: Flax's grouped kernel (H, W, I/groups, O) is PyTorch's
  (O, I/groups, H, W) transposed. ``feature_group_count`` is not stored: a kernel with I = 1 whose
  module name says depthwise (``depthwise``, ``dw``) has groups = O (depth multiplier 1 assumed:
  a depthwise conv with multiplier M has groups O / M, which the file does not tell); every other
  conv has groups unknown (-1);
- order: a map whose keys are in plain sorted order (as JAX's tree functions leave them, e.g. after
  ``jax.jit(model.init)`` or an optax update) is read in natural order (``Conv_2`` before
  ``Conv_10``); any other map in its stored order, which is Flax's module creation order. In a
  sorted tree, named modules follow the alphabet, not execution (``head`` before ``stem``). Each
  conv is one level deeper than the one before.

Safety: the file is mapped, never executed; msgpack's lengths are bounded by the file's size (maps
and lists by at most 2**20 entries), maps nest at most ``MAX_DEPTH`` deep, and an array's bytes
must be exactly its shape times its item size before they are viewed; numpy never sees a dtype
name from the file (float names are looked up in a table). msgpack decodes the whole tree, every
array kept as its raw extension bytes (a copy about the file's size, optimizer state included);
only the conv kernels' payloads are then decoded.
"""

from __future__ import annotations

import io
import math
import mmap
import re
from pathlib import Path

import msgpack
import numpy as np

from filtershift.readers.safetensors_file import natural_key
from filtershift.readers.statedict import EMA_PATTERN, TRANSPOSED_PATTERN
from filtershift.types import ConvWeight

NDARRAY = 1  # flax.serialization._MsgpackExtType.ndarray (2: complex, 3: numpy scalar)
CHUNKED = "__msgpack_chunked_array__"
MAX_DEPTH = 64
MAX_ENTRIES = 2**20  # entries of one map or list
FLOAT_DTYPES = {"float32": "<f4", "float16": "<f2", "float64": "<f8", "bfloat16": "bfloat16"}
ROOT_KEYS = ("params", "target")
SKIPPED = re.compile(r"^(opt_state|optimizer|optimizer_state|opt|param_states|batch_stats|ema_params|params_ema|ema|swa_params)$", re.IGNORECASE)
CONV_NAME = re.compile(r"conv|^(downsample|shortcut|projection|patch_embed\w*|stem|embedding)(_\d+)?$", re.IGNORECASE)
DEPTHWISE_NAME = re.compile(r"depthwise|(^|[_\d])dw([_\d]|conv|$)", re.IGNORECASE)
BIN_HEADERS = {0xC4: 1, 0xC5: 2, 0xC6: 4}  # msgpack bin 8 / 16 / 32: bytes of the length that follows
EXT_TYPE_OFFSET = {0xD4: 1, 0xD5: 1, 0xD6: 1, 0xD7: 1, 0xD8: 1, 0xC7: 2, 0xC8: 3, 0xC9: 5}  # msgpack ext headers


class Leaf:
    """An extension-typed leaf, kept as its raw payload until a conv needs it."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes):
        self.code, self.data = code, data


def sniff(path: Path, head: bytes) -> bool:
    """A msgpack map of maps with string keys whose first leaves, within ``head``, include a Flax
    array (extension type 1 holding ``[shape, dtype, bytes]``)."""
    if not head or not (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return False
    unpacker = msgpack.Unpacker(max_buffer_size=len(head), max_str_len=256, max_bin_len=0, max_array_len=16, max_map_len=2**16, max_ext_len=len(head))
    unpacker.feed(head)
    try:
        return _sniff_maps(unpacker, head, depth=0)
    except Exception:  # out of data, or not msgpack: no evidence
        return False


def _sniff_maps(unpacker, head: bytes, depth: int) -> bool:
    if depth > 8:
        return False
    for _ in range(unpacker.read_map_header()):
        if not isinstance(unpacker.unpack(), str):
            return False
        pos = unpacker.tell()
        kind = head[pos]
        if 0x80 <= kind <= 0x8F or kind in (0xDE, 0xDF):
            if _sniff_maps(unpacker, head, depth + 1):
                return True
            continue
        if kind in EXT_TYPE_OFFSET:
            start = pos + EXT_TYPE_OFFSET[kind]
            payload = head[start + 1: start + 3]
            if head[start] == NDARRAY and len(payload) == 2 and payload[0] == 0x93 and (0x90 <= payload[1] <= 0x9F or payload[1] == 0xDC):
                return True
        unpacker.skip()  # a plain leaf (a step count, a scalar): look further
    return False


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    """Every regular 2-D convolution of a Flax msgpack checkpoint (``arch`` is not used: no
    module of another framework describes a Flax tree)."""
    tree = load_tree(path)
    root = next((tree[k] for k in ROOT_KEYS if isinstance(tree.get(k), dict)), tree)
    convs: list[ConvWeight] = []
    _walk(root, (), convs)
    return convs


def load_tree(path: Path) -> dict:
    """The file's top map, its extension leaves kept as :class:`Leaf` (raw bytes, not decoded)."""
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path.name} is empty; not a Flax msgpack checkpoint")
    limit = min(MAX_ENTRIES, size)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            tree = msgpack.unpackb(
                data, ext_hook=Leaf, raw=False, strict_map_key=True, use_list=True,
                max_str_len=min(size, 2**20), max_bin_len=size, max_ext_len=size, max_array_len=limit, max_map_len=min(limit, size // 2),
            )
        except msgpack.exceptions.StackError:
            raise ValueError(f"{path.name}: maps or lists nest deeper than msgpack's limit; not a Flax checkpoint") from None
        except (ValueError, TypeError) as exc:  # ExtraData, FormatError, OutOfData are ValueErrors too
            raise ValueError(f"{path.name}: not a readable msgpack file ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path.name}: its msgpack content is a {type(tree).__name__}, not a map of parameters; not a Flax checkpoint")
    return tree


def _walk(tree: dict, path: tuple[str, ...], convs: list[ConvWeight]) -> None:
    if len(path) >= MAX_DEPTH:
        raise ValueError(f"the parameter tree nests deeper than {MAX_DEPTH} maps at {'/'.join(path[:4])}/...; refused")
    keys = list(tree)
    if not all(isinstance(k, str) for k in keys):
        raise ValueError(f"a map at {'/'.join(path) or 'the top'} has keys that are not text; not a Flax parameter tree")
    if keys == sorted(keys):  # sorted by JAX: numbered names back in number order
        keys.sort(key=natural_key)
    for key in keys:
        value, where = tree[key], (*path, key)
        if key == "kernel" and path and _is_conv_module(path[-1]):
            conv = _conv(value, where, len(convs))
            if conv is not None:
                convs.append(conv)
        elif isinstance(value, dict) and CHUNKED not in value and not SKIPPED.match(key) and not EMA_PATTERN.search(key):
            _walk(value, where, convs)


def _is_conv_module(name: str) -> bool:
    return bool(CONV_NAME.search(name) or DEPTHWISE_NAME.search(name)) and not TRANSPOSED_PATTERN.search(name)


def _conv(value, where: tuple[str, ...], level: int) -> ConvWeight | None:
    """The conv of a ``kernel`` leaf; None when it is no 4-D array (a 1-D or 3-D conv, a number)."""
    name = "/".join(where[:-1])
    kernel = _array(value, name)
    if kernel is None or kernel.ndim != 4:
        return None
    kh, kw, i, o = kernel.shape
    if 0 in kernel.shape:
        raise ValueError(f"layer {name}: kernel of shape {kernel.shape} is empty")
    groups = o if i == 1 and DEPTHWISE_NAME.search(where[-2]) else -1
    return ConvWeight(name=name, level=level, weight=np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), groups=groups)


def _array(value, name: str) -> np.ndarray | None:
    """A leaf as an array: an extension array, or a chunked array's chunks joined; None for
    anything else (a number, a string)."""
    if isinstance(value, Leaf):
        return decode_array(value, name) if value.code == NDARRAY else None
    if isinstance(value, dict) and CHUNKED in value:
        return _unchunk(value, name)
    return None


def decode_array(leaf: Leaf, name: str) -> np.ndarray:
    """An extension payload ``[shape, dtype, bytes]`` as an array of a floating dtype (any other
    dtype is refused: numpy never sees a dtype name from the file), viewed in place once its byte
    count is exactly its shape times its item size."""
    data = leaf.data
    header = msgpack.Unpacker(
        io.BytesIO(data), raw=True, read_size=1024, max_buffer_size=1024,
        max_array_len=64, max_str_len=32, max_bin_len=0, max_map_len=0, max_ext_len=0,
    )
    try:
        if header.read_array_header() != 3:
            raise ValueError("not 3 items")
        shape, dtype_name = header.unpack(), header.unpack()
        start = header.tell()
    except (ValueError, TypeError, msgpack.OutOfData) as exc:
        raise ValueError(f"layer {name}: its array is not [shape, dtype, bytes] ({_first_line(exc)}); not a Flax array") from None
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)) or not isinstance(dtype_name, bytes):
        raise ValueError(f"layer {name}: array shape {str(shape)[:80]} is not a list of sizes, or its dtype no name")
    dtype = _float_dtype(dtype_name.decode("ascii", "backslashreplace"), name)
    width = BIN_HEADERS.get(data[start] if start < len(data) else -1)
    if width is None:
        raise ValueError(f"layer {name}: its array bytes are not a msgpack bin; not a Flax array")
    offset = start + 1 + width
    stored = int.from_bytes(data[start + 1: offset], "big")
    claimed = math.prod(shape) * dtype.itemsize
    if offset + stored != len(data):
        raise ValueError(f"layer {name}: its array's bin claims {stored:,} bytes but its extension holds {max(len(data) - offset, 0):,}; refused")
    if claimed != stored:
        raise ValueError(f"layer {name}: shape {tuple(shape)} of {dtype.name} claims {claimed:,} bytes but {stored:,} are stored; refused")
    return np.frombuffer(data, dtype, count=math.prod(shape), offset=offset).reshape(shape)


def _float_dtype(name: str, layer: str) -> np.dtype:
    if name not in FLOAT_DTYPES:
        raise ValueError(f"layer {layer}: weights of dtype {name[:32]!r} are not read (float32, float16, bfloat16, float64 are)")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(FLOAT_DTYPES[name])


def _unchunk(value: dict, name: str) -> np.ndarray | None:
    """Flax's chunked form of a large array: its flat chunks in order, joined and reshaped."""
    shape, chunks = value.get("shape"), value.get("chunks")
    numbered = all(isinstance(m, dict) and list(m) == [str(k) for k in range(len(m))] for m in (shape, chunks))
    if not numbered or len(shape) > 64:
        raise ValueError(f"layer {name}: a chunked array without numbered 'shape' (at most 64) and 'chunks' maps; not a Flax chunked array")
    dims = list(shape.values())
    if not all(isinstance(d, int) and d >= 0 for d in dims):
        raise ValueError(f"layer {name}: chunked array shape {str(dims)[:80]} is not a list of sizes")
    parts = [decode_array(chunk, name) if isinstance(chunk, Leaf) and chunk.code == NDARRAY else None for chunk in chunks.values()]
    if not parts or any(p is None or p.ndim != 1 or p.dtype != parts[0].dtype for p in parts):
        raise ValueError(f"layer {name}: the chunks of a chunked array are not flat arrays of one floating dtype")
    held = sum(p.size for p in parts)
    if held != math.prod(dims):
        raise ValueError(f"layer {name}: chunked array shape {tuple(dims)} claims {math.prod(dims):,} values but its chunks hold {held:,}; refused")
    return np.concatenate(parts).reshape(dims)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
