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
filter is stored as integers (a quantized program) is refused with its name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

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
PIR_MAGIC = re.compile(rb'^\s*\{\s*"base_code"\s*:\s*\{[^}]*"magic"\s*:\s*"pir"')


@dataclass(frozen=True)
class Op:
    """One op of a program: its type, the variables it reads and writes, the conv's filter and groups."""

    type: str
    inputs: tuple = ()
    outputs: tuple = ()
    filter: str = ""
    groups: int = 1


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
    program = pir_program(data, path.name) if data.lstrip()[:1] == b"{" else proto_program(data, path.name)
    target = params_file(path)
    if not target.is_file():
        raise ValueError(f"no {target.name} beside {path.name}: an inference model needs its parameters file of the same stem")
    buf, tensors = pt.named_tensors(target, program.params)
    convs = []
    for op, level in conv_levels(program.ops):
        entry = tensors.get(op.filter)
        if entry is None:
            raise ValueError(f"{op.type} op: its filter {op.filter!r} is not a persistable tensor of the program; cannot extract it")
        if entry.dtype not in pt.FLOAT_TYPES:
            raise ValueError(f"{op.type} op: its filter {op.filter!r} is stored as {pt.DTYPES[entry.dtype]} (a quantized program); not read yet")
        weight = pt.array(buf, entry)
        if weight.ndim != 4:
            raise ValueError(f"{op.type} op: its filter {op.filter!r} has shape {weight.shape}, not (out, in/groups, kh, kw)")
        if op.groups < 1 or weight.shape[0] % op.groups:
            raise ValueError(f"{op.type} op: groups = {op.groups} does not divide the {weight.shape[0]} output channels of {op.filter!r}")
        convs.append(ConvWeight(name=op.filter, level=level, weight=weight, groups=op.groups))
    return convs


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
        vartype = pw.parse(pw.first(var, VAR_TYPE, b""), {1, 3})
        if pw.first(var, VAR_PERSISTABLE, 0) and pw.first(vartype, 1) == DENSE_TENSOR:
            tensor = pw.parse(pw.first(pw.parse(pw.first(vartype, 3, b""), {1}), 1, b""), {2})
            params[pw.text(pw.first(var, VAR_NAME))] = tuple(pw.repeated_ints(tensor, 2))
    return Program(params, [_proto_op(raw) for raw in main[BLOCK_OPS]])


def _proto_op(raw) -> Op:
    op = pw.parse(raw, {OP_INPUTS, OP_OUTPUTS, OP_TYPE, OP_ATTRS})
    slots = {}
    for number in (OP_INPUTS, OP_OUTPUTS):
        for var in op.get(number, []):
            entry = pw.parse(var, {1, 2})
            slots.setdefault(number, []).append((pw.text(pw.first(entry, 1)), [pw.text(a) for a in entry.get(2, [])]))
    groups = 1
    for raw_attr in op.get(OP_ATTRS, []):
        attr = pw.parse(raw_attr, {1, 3})
        if pw.text(pw.first(attr, 1)) == "groups":
            groups = pw.signed(pw.first(attr, 3, 1), 32)
    inputs = [a for _, args in slots.get(OP_INPUTS, []) for a in args]
    filters = [args[0] for slot, args in slots.get(OP_INPUTS, []) if slot == "Filter" and args]
    outputs = [a for _, args in slots.get(OP_OUTPUTS, []) for a in args]
    return Op(pw.text(pw.first(op, OP_TYPE)), tuple(inputs), tuple(outputs), filters[0] if filters else "", groups)


def pir_program(data: bytes, source: str) -> Program:
    """The top block of a PIR JSON program: ``p`` ops are the parameters, values are numbers."""
    try:
        doc = json.loads(data)
        if doc["base_code"]["magic"] != "pir":
            raise KeyError("magic")
        ops = doc["program"]["regions"][0]["blocks"][0]["ops"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
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
        inputs = [i.get("%") for i in _listed(raw.get("I")) if isinstance(i, dict)]
        groups = next((a.get("AT", {}).get("D") for a in _listed(raw.get("A")) if isinstance(a, dict) and a.get("N") == "groups"), 1)
        filter_name = value_names.get(inputs[1], "") if kind in CONV_OPS and len(inputs) > 1 else ""
        out.append(Op(kind, tuple(inputs), tuple(outputs), filter_name, groups if isinstance(groups, int) else 1))
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
