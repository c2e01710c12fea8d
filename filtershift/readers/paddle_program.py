"""PaddlePaddle inference models: a program beside its combined parameters ``<stem>.pdiparams``
(:mod:`filtershift.readers.paddle_tensors`), read without Paddle. Two program files are read:

- ``<stem>.pdmodel``: the ``ProgramDesc`` protobuf (``paddle.jit.save`` / ``save_inference_model``
  of Paddle 2.x, and of Paddle 3 with ``FLAGS_enable_pir_api=0``), decoded by field number from
  framework.proto with :mod:`filtershift.readers.protowire`;
- ``<stem>.json``: Paddle 3's default PIR program (``"magic": "pir"``), whose ``p`` (parameter) ops
  name the parameters and whose ops refer to values by number.

The convolutions are the ``conv2d`` and ``depthwise_conv2d`` ops of the main block (attribute
``groups``; ``conv2d_transpose`` and ``depthwise_conv2d_transpose`` are excluded); the ``Filter``
input (PIR: the second operand) names the parameter, OIHW. The parameters file holds the program's
persistable tensors in the order of their sorted names; their count and each one's declared shape
are checked. Depth is the longest-path level over the op graph (variables as edges), as for ONNX:
parallel convs share a level. Ops inside control-flow sub-blocks are not searched. A conv whose
filter comes through a ``dequantize_linear`` op (Paddle's quantized export: integer values stored
as float32 or int8, a scale per tensor or per channel, ``bit_length``) is dequantized to float32;
a filter stored as integers with no such op is refused with its name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from filtershift.readers import paddle_tensors as pt
from filtershift.readers import protowire as pw
from filtershift.readers.files import inside
from filtershift.types import ConvWeight

CONV_OPS = {"conv2d", "depthwise_conv2d"}
# framework.proto: ProgramDesc.blocks 1; BlockDesc idx 1, vars 3, ops 4; OpDesc inputs 1, outputs 2,
# type 3, attrs 4; OpDesc.Var parameter 1, arguments 2; OpDesc.Attr name 1, i 3; VarDesc name 1,
# type 2, persistable 3; VarType type 1, dense_tensor 3; DenseTensorDesc tensor 1; TensorDesc dims 2
PROGRAM_BLOCKS, BLOCK_IDX, BLOCK_VARS, BLOCK_OPS = 1, 1, 3, 4
OP_INPUTS, OP_OUTPUTS, OP_TYPE, OP_ATTRS = 1, 2, 3, 4
VAR_NAME, VAR_TYPE, VAR_PERSISTABLE = 1, 2, 3
DENSE_TENSOR = 7
INT_ATTRS = {"groups", "bit_length", "quant_axis"}
ATTR_OPS = CONV_OPS | {"dequantize_linear"}
PROTO_SLOTS = {"Filter": "filter", "X": "x", "Scale": "scale", "ZeroPoint": "zero_point"}
PIR_OPERANDS = {"conv2d": ("input", "filter"), "depthwise_conv2d": ("input", "filter"), "dequantize_linear": ("x", "scale", "zero_point")}
PIR_MAGIC = re.compile(rb'^\s*\{\s*"base_code"\s*:\s*\{[^}]*"magic"\s*:\s*"pir"')


@dataclass(frozen=True)
class Op:
    """One op of a program: its type, the variables it reads and writes (PIR: value numbers, or the
    parameter's name), its named operands (``filter``; ``x``, ``scale``, ``zero_point``) and its
    integer attributes (``groups``, ``bit_length``, ``quant_axis``)."""

    type: str
    inputs: tuple = ()
    outputs: tuple = ()
    operands: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    """The persistable tensors (name -> declared dims) and the ops of the main block, in order."""

    params: dict[str, tuple[int, ...] | None]
    ops: list[Op] = field(default_factory=list)


def params_file(path: Path) -> Path:
    return inside(path.parent, path.stem + ".pdiparams", "parameters file")


def companions(path: Path) -> list[Path]:
    target = params_file(path)
    return [target] if target.is_file() else []


def sniff(path: Path, head: bytes) -> bool:
    """A ProgramDesc (field 1, a block starting ``idx = 0``) or a PIR program, beside ``<stem>.pdiparams``."""
    if not (path.parent / (path.stem + ".pdiparams")).exists():
        return False
    if head[:1] == b"\x0a":
        try:
            _, pos = pw.varint(memoryview(head), 1)
        except ValueError:
            return False
        return head[pos:pos + 3] == b"\x08\x00\x10"
    return bool(PIR_MAGIC.match(head))


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    data = path.read_bytes()
    program = pir_program(data, path.name) if data[:64].lstrip()[:1] == b"{" else proto_program(data, path.name)
    target = params_file(path)
    if not target.is_file():
        raise ValueError(f"no {target.name} beside {path.name}: an inference model needs its parameters file of the same stem")
    params = _Params(*pt.named_tensors(target, program.params))
    dequantized = {op.outputs[0]: op for op in program.ops if op.type == "dequantize_linear" and op.outputs}
    convs = []
    for op, level in conv_levels(program.ops):
        name = op.operands.get("filter")
        weight = params.filter(name, dequantized.get(name), op.type)
        groups = op.attrs.get("groups", 1)
        if weight.ndim != 4:
            raise ValueError(f"{op.type} op: its filter {name!r} has shape {weight.shape}, not (out, in/groups, kh, kw)")
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"{op.type} op: groups = {groups} does not divide the {weight.shape[0]} output channels of {name!r}")
        convs.append(ConvWeight(name=str(name), level=level, weight=weight, groups=groups))
    return convs


@dataclass(frozen=True)
class _Params:
    """The parameters file's bytes and its tensors by name."""

    buf: memoryview
    tensors: dict[str, pt.TensorEntry]

    def values(self, name, what: str) -> np.ndarray:
        if name not in self.tensors:
            raise ValueError(f"{what} {name!r} is computed at run time, not a stored parameter; cannot extract it")
        return pt.array(self.buf, self.tensors[name])

    def filter(self, name, dequantize: Op | None, op_type: str) -> np.ndarray:
        """A conv's filter as float32: stored, or behind a ``dequantize_linear`` op (weights stored as
        integers q with a scale s, per tensor or per ``quant_axis``: ``(q - zero_point) * s / (2^(bits-1) - 1)``)."""
        if dequantize is None:
            entry = self.tensors.get(name)
            if entry is not None and entry.dtype not in pt.FLOAT_TYPES:
                raise ValueError(f"{op_type} op: its filter {name!r} is stored as {pt.DTYPES[entry.dtype]} with no dequantize_linear op; cannot dequantize it")
            return self.values(name, f"{op_type} op: its filter")
        what = f"{op_type} op: the dequantize_linear of its filter: operand"
        q = self.values(dequantize.operands.get("x"), what).astype(np.float32)
        scale = self.values(dequantize.operands.get("scale"), what).astype(np.float32)
        zero = dequantize.operands.get("zero_point")
        zero = self.values(zero, what).astype(np.float32) if zero in self.tensors else np.zeros((), np.float32)
        bits, axis = dequantize.attrs.get("bit_length", 8), dequantize.attrs.get("quant_axis", -1)
        if not 2 <= bits <= 16:
            raise ValueError(f"{op_type} op: its filter is dequantized with bit_length = {bits}; corrupt")
        if scale.size > 1:
            if not 0 <= axis < q.ndim or scale.size != q.shape[axis]:
                raise ValueError(f"{op_type} op: {scale.size} filter scales do not fit quant_axis {axis} of a filter of shape {q.shape}")
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = zero.reshape(shape) if zero.size > 1 else zero.reshape(())
        else:
            scale, zero = scale.reshape(()), zero.reshape(()) if zero.size == 1 else zero
        return ((q - zero) * scale / np.float32((1 << (bits - 1)) - 1)).astype(np.float32)


def conv_levels(ops: list[Op]) -> list[tuple[Op, int]]:
    """Each conv op with its longest-path level: one deeper than the deepest conv upstream of it."""
    level_of: dict = {}
    found = []
    for op in ops:
        upstream = max((level_of.get(name, -1) for name in op.inputs), default=-1)
        level = upstream + 1 if op.type in CONV_OPS else upstream
        for name in op.outputs:
            level_of[name] = level
        if op.type in CONV_OPS:
            found.append((op, level))
    return found


def proto_program(data: bytes, source: str) -> Program:
    """The main block of a ``ProgramDesc``: its persistable dense tensors and its ops."""
    blocks = pw.parse(data, {PROGRAM_BLOCKS}).get(PROGRAM_BLOCKS, [])
    main = next((b for b in (pw.parse(raw, {BLOCK_IDX, BLOCK_VARS, BLOCK_OPS}) for raw in blocks) if pw.first(b, BLOCK_IDX, 0) == 0), None)
    if main is None or not main.get(BLOCK_OPS):
        raise ValueError(f"{source} holds no program block with ops; is it a Paddle .pdmodel?")
    params = {}
    for raw in main.get(BLOCK_VARS, []):
        var = pw.parse(raw, {VAR_NAME, VAR_TYPE, VAR_PERSISTABLE})
        if not pw.first(var, VAR_PERSISTABLE, 0):
            continue
        vartype = pw.parse(pw.first(var, VAR_TYPE, b""), {1, 3})
        if pw.first(vartype, 1) == DENSE_TENSOR:
            tensor = pw.parse(pw.first(pw.parse(pw.first(vartype, 3, b""), {1}), 1, b""), {2})
            params[pw.text(pw.first(var, VAR_NAME))] = tuple(pw.repeated_ints(tensor, 2))
    return Program(params, [_proto_op(raw) for raw in main[BLOCK_OPS]])


def _proto_op(raw) -> Op:
    """One OpDesc. Its attributes are decoded only for the ops that need them (convs, dequantize);
    Paddle writes them after the type, so the rest of an other op is not even walked."""
    slots: dict[int, list] = {OP_INPUTS: [], OP_OUTPUTS: []}
    kind, raw_attrs = None, []
    for number, _, value in pw.fields(raw):
        if number == OP_TYPE:
            kind = pw.text(value)
        elif number == OP_ATTRS:
            if kind is not None and kind not in ATTR_OPS:
                break
            raw_attrs.append(value)
        elif number in slots:
            entry = pw.parse(value, {1, 2})
            slots[number].append((pw.text(pw.first(entry, 1)), [pw.text(a) for a in entry.get(2, [])]))
    attrs = {}
    for raw_attr in raw_attrs if kind in ATTR_OPS else ():
        attr = pw.parse(raw_attr, {1, 3})
        name, value = pw.text(pw.first(attr, 1)), pw.first(attr, 3)
        if name in INT_ATTRS and isinstance(value, int):
            attrs[name] = pw.signed(value, 32)
    operands = {PROTO_SLOTS[slot]: args[0] for slot, args in slots[OP_INPUTS] if slot in PROTO_SLOTS and args}
    inputs = [a for _, args in slots[OP_INPUTS] for a in args]
    outputs = [a for _, args in slots[OP_OUTPUTS] for a in args]
    return Op(kind or "", tuple(inputs), tuple(outputs), operands, attrs)


def pir_program(data: bytes, source: str) -> Program:
    """The top block of a PIR JSON program: ``p`` ops are the parameters, values are numbers."""
    try:
        doc = json.loads(data)
        if doc["base_code"]["magic"] != "pir":
            raise KeyError("magic")
        ops = doc["program"]["regions"][0]["blocks"][0]["ops"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
        raise ValueError(f"{source} is not a readable PIR program ({type(exc).__name__}: {str(exc)[:120]}); is it a Paddle 3 inference .json?") from None
    params, value_names, out = {}, {}, []
    for raw in ops if isinstance(ops, list) else []:
        if not isinstance(raw, dict):
            continue
        kind = str(raw.get("#", "")).rsplit(".", 1)[-1]
        outputs = [o.get("%") for o in _listed(raw.get("O")) if isinstance(o, dict)]
        if kind == "p":
            name = next((a for a in reversed(_listed(raw.get("A"))) if isinstance(a, str)), "")
            described = _listed(raw.get("O"))[0] if _listed(raw.get("O")) else {}
            params[name] = _pir_dims(described)
            for value in outputs:
                value_names[value] = name
            continue
        inputs = [value_names.get(i.get("%"), i.get("%")) for i in _listed(raw.get("I")) if isinstance(i, dict)]
        operands = dict(zip(PIR_OPERANDS.get(kind, ()), inputs))
        attrs = {a["N"]: a.get("AT", {}).get("D") for a in _listed(raw.get("A")) if isinstance(a, dict) and a.get("N") in INT_ATTRS}
        out.append(Op(kind, tuple(inputs), tuple(outputs), operands, {k: v for k, v in attrs.items() if type(v) is int}))
    if not out:
        raise ValueError(f"{source}: the PIR program's top block holds no ops")
    return Program(params, out)


def _listed(value) -> list:
    return value if isinstance(value, list) else [value] if value is not None else []


def _pir_dims(described: dict) -> tuple[int, ...] | None:
    """The dims of a PIR value's type ``{"TT": {"D": [dtype, dims, layout, lod, offset]}}``."""
    try:
        dims = described["TT"]["D"][1]
    except (KeyError, IndexError, TypeError):
        return None
    return tuple(dims) if isinstance(dims, list) and all(isinstance(d, int) for d in dims) else None
