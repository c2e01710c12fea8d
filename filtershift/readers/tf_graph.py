"""TensorFlow graphs (``GraphDef`` and its ``FunctionDefLibrary``) decoded by field number, and the
convolutions found by walking them: which variable each conv's filter reads, and its depth level.

Fields used: GraphDef node = 1, library = 2; NodeDef name = 1, op = 2, input = 3, attr = 5 (map:
key = 1, AttrValue = 2; AttrValue s = 2, func = 10 with name = 1); FunctionDefLibrary function = 1;
FunctionDef signature = 1 (OpDef name = 1, input_arg = 2, output_arg = 3, ArgDef name = 1),
node_def = 3, ret = 4 (map output arg -> tensor).

The walk (:func:`walk`) gives every tensor a :class:`Value`: its level (the conv level upstream,
-1 before any conv) and, for a variable handle or a read of one, which variable it is. A conv is one
level deeper than its deepest input, so parallel convs share a level, as for ONNX. Calls
(``StatefulPartitionedCall``, ``PartitionedCall``) are walked into, their inputs bound to the
callee's arguments, so a TF2 model whose real graph lives in nested functions is walked as one
graph. Other function-valued ops (``While``, ``If``) are not walked into.
"""

from __future__ import annotations

from dataclasses import dataclass

from filtershift.readers import protowire as pw

CONV_OPS = ("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative")
DEPTHWISE_OPS = ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
PASS_OPS = ("Identity", "ReadVariableOp", "Cast", "Snapshot", "StopGradient", "Enter")
CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")
MAX_CALL_DEPTH = 64
MAX_STEPS = 5_000_000


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    callee: str = ""  # the function a call node calls
    variable: str = ""  # a variable node's shared_name (or its own name)


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[str, ...]
    returns: tuple[str, ...]  # the tensor of each output arg, in order
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Value:
    level: int = -1
    variable: object = None


@dataclass(frozen=True)
class ConvUse:
    """A conv op met on the walk: its op, the variable its filter reads (``None`` if computed),
    and its level."""

    node: str
    op: str
    variable: object
    level: int


def _attrs(node: dict) -> dict[str, dict]:
    out = {}
    for entry in node.get(5, []):
        item = pw.parse(entry)
        out[pw.text(pw.first(item, 1))] = pw.parse(pw.first(item, 2, b""))
    return out


def node_of(data: memoryview) -> Node:
    message = pw.parse(data, {1, 2, 3, 5})
    name, op = pw.text(pw.first(message, 1)), pw.text(pw.first(message, 2))
    callee = variable = ""
    if op in CALL_OPS or op in ("VarHandleOp", "VariableV2", "Variable"):
        attrs = _attrs(message)
        if "f" in attrs and 10 in attrs["f"]:
            callee = pw.text(pw.first(pw.parse(pw.first(attrs["f"], 10)), 1))
        if op != "StatefulPartitionedCall" and op != "PartitionedCall":
            variable = pw.text(pw.first(attrs.get("shared_name", {}), 2)) or name
    return Node(name, op, tuple(pw.text(i) for i in message.get(3, [])), callee, variable)


def function_of(data: memoryview) -> Function:
    message = pw.parse(data, {1, 3, 4})
    signature = pw.parse(pw.first(message, 1, b""))
    args = tuple(pw.text(pw.first(pw.parse(a), 1)) for a in signature.get(2, []))
    outputs = [pw.text(pw.first(pw.parse(a), 1)) for a in signature.get(3, [])]
    ret = {}
    for entry in message.get(4, []):
        item = pw.parse(entry)
        ret[pw.text(pw.first(item, 1))] = pw.text(pw.first(item, 2))
    nodes = tuple(node_of(n) for n in message.get(3, []))
    return Function(pw.text(pw.first(signature, 1)), args, tuple(ret.get(o, "") for o in outputs), nodes)


def parse_graph(data: memoryview) -> tuple[tuple[Node, ...], dict[str, Function]]:
    """A GraphDef's top-level nodes and its functions by name."""
    message = pw.parse(data, {1, 2})
    nodes = tuple(node_of(n) for n in message.get(1, []))
    library = pw.parse(pw.first(message, 2, b""), {1})
    functions = {f.name: f for f in (function_of(d) for d in library.get(1, []))}
    return nodes, functions


class Walk:
    """One walk over a graph and the functions it calls; ``uses`` collects the convs met."""

    def __init__(self, functions: dict[str, Function]):
        self.functions = functions
        self.uses: list[ConvUse] = []
        self.steps = 0

    def function(self, name: str, args: list[Value], depth: int = 0) -> list[Value]:
        """The output values of function ``name`` called with ``args``."""
        if depth > MAX_CALL_DEPTH:
            raise ValueError(f"function calls nest deeper than {MAX_CALL_DEPTH} levels (a recursive graph?)")
        function = self.functions.get(name)
        if function is None:
            raise ValueError(f"the graph calls function {name!r}, which its library does not hold")
        bound = dict(zip(function.args, args))
        outputs = self.nodes(function.nodes, bound, depth)
        return [self._lookup(ref, outputs, bound) for ref in function.returns]

    def nodes(self, nodes: tuple[Node, ...], bound: dict[str, Value], depth: int = 0) -> dict[str, list[Value]]:
        """Each node's output values (one shared value for all outputs but a call's)."""
        by_name = {n.name: n for n in nodes}
        outputs: dict[str, list[Value]] = {}
        for node in _topological(nodes, by_name):
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise ValueError(f"the graph needs more than {MAX_STEPS:,} node visits to walk; refused")
            ins = [self._lookup(ref, outputs, bound) for ref in node.inputs if not ref.startswith("^")]
            outputs[node.name] = self._step(node, ins, depth)
        return outputs

    def _step(self, node: Node, ins: list[Value], depth: int) -> list[Value]:
        upstream = max((v.level for v in ins), default=-1)
        if node.variable:
            return [Value(-1, node.variable)]
        if node.op in CALL_OPS and node.callee:
            return self.function(node.callee, ins, depth + 1)
        if node.op in PASS_OPS and ins:
            return [Value(upstream, ins[0].variable)]
        if node.op in CONV_OPS and len(ins) >= 2:
            self.uses.append(ConvUse(node.name, node.op, ins[1].variable, upstream + 1))
            return [Value(upstream + 1)]
        return [Value(upstream)]

    @staticmethod
    def _lookup(ref: str, outputs: dict[str, list[Value]], bound: dict[str, Value]) -> Value:
        if ref in bound:
            return bound[ref]
        parts = ref.split(":")
        values = outputs.get(parts[0])
        if not values:
            return bound.get(parts[0], Value())  # an unknown input (a loop back edge): no conv upstream
        index = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
        return values[index] if index < len(values) else values[-1]


def _topological(nodes: tuple[Node, ...], by_name: dict[str, Node]) -> list[Node]:
    """The nodes with each after its inputs (iteratively; a cycle's back edge is ignored)."""
    order, state = [], {}
    for start in nodes:
        if start.name in state:
            continue
        stack = [(start, iter(start.inputs))]
        state[start.name] = 1
        while stack:
            node, pending = stack[-1]
            for ref in pending:
                dep = by_name.get(ref.lstrip("^").split(":")[0])
                if dep is not None and dep.name not in state:
                    state[dep.name] = 1
                    stack.append((dep, iter(dep.inputs)))
                    break
            else:
                stack.pop()
                state[node.name] = 2
                order.append(node)
    return order
