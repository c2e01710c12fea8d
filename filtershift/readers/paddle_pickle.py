"""PaddlePaddle ``.pdparams`` files (``paddle.save`` of a state dict): a pickle of a dict name ->
numpy array, read by a restricted unpickler; no Paddle needed, and nothing in the file can run.

The unpickler admits only what ``paddle.save`` writes: numpy arrays (``numpy._core.multiarray.
_reconstruct`` or ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, numpy
scalars), ``_codecs.encode`` with the latin-1 codec (how protocol 2 stores bytes), and the
containers ``collections.OrderedDict`` and ``builtins.tuple`` (a tensor inside a nested dict is
saved as ``((parameter name, array),)``). Any other global — ``os.system``, ``builtins.eval``
(which Paddle itself writes only for raw static-graph ``DenseTensor`` objects), any class — is
refused by name before anything is called. Arrays are never built by numpy's own ``__setstate__``:
a stand-in checks that the declared shape, dtype and byte count agree (a shape of 2**60 elements is
refused, nothing is allocated from it) and then views the bytes already read from the file, so
memory stays within about twice the file's size.

A ``.pdparams`` holds no graph, so the layer rule is the bare state dict's
(:mod:`filtershift.readers.statedict`): a conv weight is a 4-D floating array whose key ends in
``weight`` (Paddle's ``Conv2D`` weight is OIHW); EMA / shadow copies are skipped; a layer is taken
for a transposed conv, and excluded, only when its name says so — Paddle's ``Conv2DTranspose``
weight is (in, out/groups, kh, kw) and cannot be told from a conv's, so a transposed layer with a
neutral name counts as a regular conv (read the inference model instead, whose program tells);
``groups`` is unknown (-1); order is the dict's order (``state_dict()`` registration order), each
conv one level deeper than the one before. ``arch`` is not used (Paddle layers are not torch
modules). bfloat16 weights (saved by Paddle as uint16 arrays) are not recognised as floating.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from filtershift.readers.statedict import EMA_PATTERN, STATE_DICT_KEYS, TRANSPOSED_PATTERN
from filtershift.types import ConvWeight

MAX_ELEMENTS = 2**40  # no real tensor has more; refuse before any arithmetic on a hostile shape
NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: no object, string or structured dtypes


class Refused(pickle.UnpicklingError):
    """The pickle names something outside the admitted set; nothing of it ran."""


class _ArrayStandIn:
    """What ``_reconstruct(ndarray, (0,), b'b')`` returns here: BUILD hands it numpy's state
    ``(version, shape, dtype, is_fortran, raw bytes)``, which is checked before the bytes are viewed."""

    __slots__ = ("array",)

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise Refused("an array whose pickled state is not numpy's (version, shape, dtype, order, data)")
        shape, dtype, fortran, raw = state[-4:]
        dtype = dtype.dtype if isinstance(dtype, _DtypeStandIn) else dtype
        if not isinstance(dtype, np.dtype):
            raise Refused("an array whose dtype is not a plain numpy dtype")
        if not isinstance(shape, tuple) or not all(type(d) is int and 0 <= d <= MAX_ELEMENTS for d in shape):
            raise Refused(f"an array with an impossible shape {str(shape)[:80]}")
        count = 1
        for d in shape:
            count *= d
        if count > MAX_ELEMENTS:
            raise Refused(f"an array of absurd shape {shape} ({count:,} elements)")
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != count * dtype.itemsize:
            size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
            raise Refused(f"an array of shape {shape} and dtype {dtype} whose data is {size} bytes, not {count * dtype.itemsize:,}")
        self.array = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")


class _DtypeStandIn:
    """``numpy.dtype(code, align, copy)`` then BUILD with ``(3, byteorder, ...)``: numeric codes only."""

    __slots__ = ("dtype",)

    def __init__(self, code, align=False, copy=False):
        try:
            dtype = np.dtype(code) if isinstance(code, str) and len(code) <= 4 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in NUMERIC_KINDS:
            raise Refused(f"a dtype {str(code)[:20]!r} that is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
            raise Refused("a dtype with a pickled state that is not numpy's")
        if any(item is not None for item in state[2:5]):
            raise Refused("a structured dtype (fields); only plain number types are admitted")
        if state[1] == ">":
            self.dtype = self.dtype.newbyteorder(">")


def _new_array(cls, shape, code) -> _ArrayStandIn:
    if cls is not _NDARRAY:
        raise Refused("_reconstruct of something other than numpy.ndarray")
    return _ArrayStandIn()


def _new_dtype(code, align=False, copy=False) -> _DtypeStandIn:
    return _DtypeStandIn(code, align, copy)


def _scalar(dtype, raw) -> np.generic:
    dtype = dtype.dtype if isinstance(dtype, _DtypeStandIn) else dtype
    if not isinstance(dtype, np.dtype) or not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise Refused("a numpy scalar whose bytes do not match its dtype")
    return np.frombuffer(raw, dtype)[0]


def _latin1(text, encoding="latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("_codecs.encode other than str -> bytes in latin-1")
    return text.encode("latin-1")


_NDARRAY = object()  # numpy.ndarray as the pickle names it: only ever an argument of _reconstruct
ADMITTED = {
    ("numpy._core.multiarray", "_reconstruct"): _new_array,
    ("numpy.core.multiarray", "_reconstruct"): _new_array,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _new_dtype,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("_codecs", "encode"): _latin1,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "tuple"): tuple,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        # Python 2 names (protocol 2: __builtin__.tuple) as pickle's own find_class maps them
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = ADMITTED.get((module, name))
        if found is None:
            raise Refused(f"the pickle calls {module}.{name}, which is neither a numpy array nor a plain container")
        return found

    def persistent_load(self, pid):
        raise Refused("the pickle refers to persistent objects (not a paddle.save state dict)")


def load(path: Path) -> object:
    """The object pickled in ``path`` with arrays as read-only numpy views; ``ValueError`` with a
    one-line reason for a refused, cut or garbled pickle."""
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path.name}: the file is empty; re-save it with paddle.save(model.state_dict(), path)")
    try:
        obj = _Unpickler(io.BytesIO(data)).load()
    except Refused as exc:
        raise ValueError(f"refused to unpickle {path.name}: {exc}; only numpy arrays and plain containers are read (re-save it with paddle.save(model.state_dict(), path))") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError, OverflowError, RecursionError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path.name}: truncated or corrupt .pdparams pickle ({type(exc).__name__}: {text[:200]}); re-download or re-save it") from None
    return _arrays(obj, 0)


def _arrays(obj: object, depth: int) -> object:
    """Stand-ins replaced by their arrays, Paddle's ``((name, array),)`` tensors by the array."""
    if depth > 64:
        raise ValueError("a .pdparams nested more than 64 levels deep; not a state dict")
    if isinstance(obj, _ArrayStandIn):
        if obj.array is None:
            raise ValueError("an array in the .pdparams has no data (its pickle is incomplete)")
        return obj.array
    if isinstance(obj, _DtypeStandIn):
        return obj.dtype
    if isinstance(obj, Mapping):
        return {key: _arrays(value, depth + 1) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_arrays(value, depth + 1) for value in obj]
        if len(items) == 1 and isinstance(items[0], tuple) and len(items[0]) == 2 and isinstance(items[0][1], np.ndarray):
            return items[0][1]  # a tensor saved by reduce_varbase: ((parameter name, array),)
        return type(obj)(items) if isinstance(obj, tuple) else items
    return obj


def sniff(path: Path, head: bytes) -> bool:
    """A pickle (protocol 2-5) of a dict whose first value is a numpy array: ``paddle.save``."""
    if len(head) < 3 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    rest = head[2:]
    if rest[:1] == b"\x95":  # FRAME and its 8-byte length
        rest = rest[9:]
    if rest[:1] != b"}":  # EMPTY_DICT
        return False
    return any(marker in head for marker in (b"numpy._core.multiarray", b"numpy.core.multiarray")) and b"_reconstruct" in head


def state_dict(obj: object, source: str) -> dict[str, np.ndarray]:
    """The arrays of a loaded ``.pdparams``: the top-level dict, or one under a known key."""
    if isinstance(obj, Mapping):
        arrays = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
        if arrays:
            return arrays
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return state_dict(obj[key], f"{source}[{key!r}]")
    raise ValueError(f"{source}: no state dict found (expected a dict of arrays, or one under one of the keys {', '.join(STATE_DICT_KEYS)}); save the model with paddle.save(model.state_dict(), path)")


def convolutions(state: Mapping[str, np.ndarray]) -> list[ConvWeight]:
    """The state-dict rule of the module docstring over numpy arrays."""
    convs = []
    for key, array in state.items():
        if not key.endswith("weight") or array.ndim != 4 or array.dtype.kind != "f":
            continue
        if EMA_PATTERN.search(key) or TRANSPOSED_PATTERN.search(key):
            continue
        convs.append(ConvWeight(name=key.removesuffix(".weight"), level=len(convs), weight=array.astype(np.float32), groups=-1))
    return convs


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    return convolutions(state_dict(load(path), path.name))
