"""TensorFlow SavedModel folders (``saved_model.pb`` + ``variables/variables.{index,data-*}``), read
without TensorFlow.

``saved_model.pb`` is decoded by field number (SavedModel meta_graphs = 2; MetaGraphDef graph_def =
2, object_graph_def = 7; SavedObjectGraph nodes = 1, concrete_functions = 2 (map name ->
SavedConcreteFunction, bound_inputs = 2); SavedObject children = 1 (ObjectReference node_id = 1,
local_name = 2), variable = 7 (SavedVariable name = 6, the conv's name when set)). The weights come from the variables bundle
(:mod:`filtershift.readers.tf_bundle`).

The rule, for TF2 SavedModels (``tf.saved_model.save``, Keras 3 ``model.export``, tf_keras
``model.save``; the Keras-made ones are read by the same rule, their graph holds the wiring that
the layer metadata lacks):
- each concrete function of the object graph is walked (:mod:`filtershift.readers.tf_graph`), its
  captured inputs (the last ``len(bound_inputs)`` arguments) bound to the variables they name;
  a ``Conv2D`` or ``DepthwiseConv2dNative`` whose filter reads a variable (through
  ``ReadVariableOp`` / ``Identity`` / ``Cast``) is a conv; ``Conv2DBackpropInput`` (transposed) never is;
- the function reaching the most conv variables gives the levels (ties: the first by name);
  convs that only other functions reach follow, one function after the other, below its deepest
  level; a variable used by several convs counts once;
- a variable's checkpoint key is found by walking the SavedModel's object graph and the
  checkpoint's own object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``) side by side from the root, by
  child name (TrackableObject attributes = 2, SerializedTensor name = 1, checkpoint_key = 3).
TF1 SavedModels (no object graph) are walked over the top-level graph, a ``VarHandleOp`` /
``VariableV2``'s name being its checkpoint key. Conv2D filters are HWIO: kernel (o, i) =
K[:, :, i, o]; depthwise filters (H, W, C, M) give C·M kernels (out channel c·M + m), groups = C.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from filtershift.readers import protowire as pw
from filtershift.readers import tf_graph
from filtershift.readers.files import inside
from filtershift.readers.tf_bundle import CHECKPOINT_GRAPH_KEY, Bundle
from filtershift.types import ConvWeight

MAX_GRAPH_BYTES = 2**31  # protobuf's own limit for one message


def sniff(path: Path, head: bytes) -> bool:
    return (path / "saved_model.pb").is_file() and (path / "variables" / "variables.index").is_file()


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    graph_file = inside(path, "saved_model.pb", "graph file")
    if graph_file.stat().st_size > MAX_GRAPH_BYTES:
        raise ValueError(f"saved_model.pb is {graph_file.stat().st_size:,} bytes, past protobuf's 2 GB limit; refused")
    bundle = Bundle(inside(path, "variables/variables.index", "variables index"))
    saved = pw.parse(graph_file.read_bytes(), {2})
    if not saved.get(2):
        raise ValueError("saved_model.pb holds no MetaGraphDef; is it a SavedModel?")
    meta = pw.parse(saved[2][0], {2, 7})
    nodes, functions = tf_graph.parse_graph(pw.first(meta, 2, b""))
    if meta.get(7):
        uses, names = _object_graph_uses(pw.parse(meta[7][0], {1, 2}), functions, bundle)
    else:
        walk = tf_graph.Walk(functions)
        walk.nodes(nodes, {})
        uses, names = [walk.uses], {}
    return _convolutions(uses, bundle, names)


def _object_graph_uses(graph: dict, functions: dict, bundle: Bundle) -> tuple[list[list[tf_graph.ConvUse]], dict[str, str]]:
    """The conv uses of each concrete function, the variables given as checkpoint keys (the
    function reaching the most conv variables first), and each key's variable name."""
    objects = [pw.parse(n, {1, 7}) for n in graph.get(1, [])]
    keys = _checkpoint_keys(objects, bundle)
    names = {key: pw.text(pw.first(pw.parse(objects[i][7][0], {6}), 6)).removesuffix(":0") for i, key in keys.items()}
    walks = []
    for entry in graph.get(2, []):
        item = pw.parse(entry)
        name = pw.text(pw.first(item, 1))
        bound = pw.repeated_ints(pw.parse(pw.first(item, 2, b"")), 2)
        function = functions.get(name)
        if function is None or len(bound) > len(function.args):
            continue
        args = [tf_graph.Value()] * (len(function.args) - len(bound)) + [tf_graph.Value(-1, keys.get(b)) for b in bound]
        walk = tf_graph.Walk(functions)
        walk.function(name, args)
        walks.append((name, walk.uses))
    walks.sort(key=lambda w: (-len({u.variable for u in w[1] if u.variable}), w[0]))
    return [uses for _, uses in walks], {k: v for k, v in names.items() if v}


def _checkpoint_keys(objects: list[dict], bundle: Bundle) -> dict[int, str]:
    """SavedModel object id -> checkpoint key of every variable, matching the two object graphs by
    child name from the root."""
    if CHECKPOINT_GRAPH_KEY not in bundle.entries:
        raise ValueError(f"the variables bundle has no {CHECKPOINT_GRAPH_KEY} entry; cannot match variables to the graph")
    trackables = [pw.parse(n, {1, 2}) for n in pw.parse(bundle.string(CHECKPOINT_GRAPH_KEY), {1}).get(1, [])]
    keys, seen, queue = {}, {0}, [(0, 0)] if objects and trackables else []
    while queue:
        saved_id, ckpt_id = queue.pop()
        if 7 in objects[saved_id]:
            for attribute in trackables[ckpt_id].get(2, []):
                tensor = pw.parse(attribute)
                if pw.text(pw.first(tensor, 1)) == "VARIABLE_VALUE":
                    keys[saved_id] = pw.text(pw.first(tensor, 3))
        ckpt_children = {pw.text(pw.first(c, 2)): pw.first(c, 1, 0) for c in map(pw.parse, trackables[ckpt_id].get(1, []))}
        for child in map(pw.parse, objects[saved_id].get(1, [])):
            saved_child, name = pw.first(child, 1, 0), pw.text(pw.first(child, 2))
            ckpt_child = ckpt_children.get(name)
            if ckpt_child is None or saved_child in seen or not (0 <= saved_child < len(objects) and 0 <= ckpt_child < len(trackables)):
                continue
            seen.add(saved_child)
            queue.append((saved_child, ckpt_child))
    return keys


def _convolutions(walks: list[list[tf_graph.ConvUse]], bundle: Bundle, names: dict[str, str]) -> list[ConvWeight]:
    convs: list[ConvWeight] = []
    done: set[str] = set()
    for uses in walks:
        base = max((c.level for c in convs), default=-1) + 1
        for use in sorted(uses, key=lambda u: u.level):
            if use.variable is None:
                raise ValueError(f"{use.op} node {use.node}: its filter is computed at run time, not read from a variable; cannot extract it")
            if use.variable in done:
                continue
            if use.variable not in bundle.entries:
                raise ValueError(f"{use.op} node {use.node} reads variable {use.variable!r}, which the variables bundle does not hold")
            done.add(use.variable)
            name = names.get(use.variable) or use.variable.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")
            convs.append(conv_weight(name, base + use.level, bundle.array(use.variable), use.op in tf_graph.DEPTHWISE_OPS))
    return sorted(convs, key=lambda c: c.level)


def conv_weight(name: str, level: int, kernel: np.ndarray, depthwise: bool) -> ConvWeight:
    """An HWIO kernel (or an (H, W, C, M) depthwise one) as (out, in/groups, kh, kw) float32."""
    if kernel.ndim != 4 or kernel.dtype.kind not in "fV" and kernel.dtype.name != "bfloat16":
        raise ValueError(f"conv {name}: a filter of shape {kernel.shape} and dtype {kernel.dtype}, not a 4-D floating kernel")
    kernel = kernel.astype(np.float32)
    if depthwise:
        h, w, c, m = kernel.shape
        return ConvWeight(name, level, np.ascontiguousarray(kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)), groups=c)
    return ConvWeight(name, level, np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), groups=1)
