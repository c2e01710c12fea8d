"""TF2 checkpoints (``tf.train.Checkpoint``, ``model.save_weights`` in the TF format): a tensor
bundle ``<prefix>.index`` beside its data shards ``<prefix>.data-NNNNN-of-MMMMM``. The manifest row
names the ``.index`` file (the prefix itself is no file); the shards are its companions and must lie
beside it.

A checkpoint holds no graph, so the rule is by shape and name, and has limits (as the state-dict
rule of :mod:`filtershift.readers.statedict` has):
- a conv is a 4-D floating variable value (keys ending ``/.ATTRIBUTES/VARIABLE_VALUE``, or any key
  of a TF1 checkpoint); optimizer slots (``.OPTIMIZER_SLOT``, ``optimizer/``) and EMA copies never;
- its layout is HWIO (kernel (o, i) = K[:, :, i, o]); a variable whose own name says ``depthwise``
  is a depthwise kernel (H, W, C, M), groups = C; other groups cannot be told from a kernel and are
  stored as -1 (unknown);
- a layer is taken for a transposed conv, and excluded, only when its key says so (``transpose``,
  ``deconv``): Keras checkpoints name layers by position (``layer_with_weights-3``), so a
  ``Conv2DTranspose`` there counts as a regular conv with in and out swapped; give such models as
  a SavedModel, whose graph tells;
- order is the depth-first order of the checkpoint's object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``;
  registration order for Keras models and ``tf.Module`` attributes), then the remaining keys sorted;
  each conv is one level deeper than the one before (no graph, no parallel branches);
- a tensor whose dtype, shape and CRC-32C repeat an earlier one's is a copy of it and counts once
  (Keras 3 ``model.export`` stores every variable under ``variables/N`` and ``_all_variables/M``);
  two convs with bit-identical weights would count once too.
"""

from __future__ import annotations

import re
from pathlib import Path

from filtershift.readers import protowire as pw
from filtershift.readers.files import inside
from filtershift.readers.statedict import EMA_PATTERN
from filtershift.readers.tf_bundle import CHECKPOINT_GRAPH_KEY, Bundle, sniff_index
from filtershift.readers.tf_savedmodel import conv_weight
from filtershift.types import ConvWeight

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
SKIP_PATTERN = re.compile(r"\.OPTIMIZER_SLOT|(^|/)optimizer/|transpose|deconv", re.IGNORECASE)
FLOAT_DTYPES = {1, 2, 14, 19}
SHARD_NAME = r"\.data-\d{5}-of-\d{5}"


def sniff(path: Path, head: bytes) -> bool:
    return path.name.endswith(".index") and sniff_index(path)


def companions(path: Path) -> list[Path]:
    """The data shards beside the index (``<prefix>.data-NNNNN-of-MMMMM``)."""
    prefix = path.name.removesuffix(".index")
    pattern = re.compile(re.escape(prefix) + SHARD_NAME + "$")
    return sorted(inside(path.parent, p.name, "data shard") for p in path.parent.iterdir() if pattern.match(p.name))


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    bundle = Bundle(path)
    convs, copies = [], set()
    for key in ordered_keys(bundle):
        entry = bundle.entries[key]
        if len(entry.shape) != 4 or entry.dtype not in FLOAT_DTYPES or SKIP_PATTERN.search(key) or EMA_PATTERN.search(key):
            continue
        if CHECKPOINT_GRAPH_KEY in bundle.entries and not key.endswith(VALUE_SUFFIX):
            continue
        content = (entry.dtype, entry.shape, entry.size, entry.crc32c)
        if entry.crc32c is not None and content in copies:
            continue  # a second copy of one variable (Keras 3 exports store each twice)
        copies.add(content)
        name = key.removesuffix(VALUE_SUFFIX)
        conv = conv_weight(name, len(convs), bundle.array(key), "depthwise" in name.rsplit("/", 1)[-1].lower())
        convs.append(conv if conv.groups != 1 else ConvWeight(conv.name, conv.level, conv.weight, groups=-1))
    return convs


def ordered_keys(bundle: Bundle) -> list[str]:
    """The bundle's keys in the object graph's depth-first order, then the rest sorted."""
    order: list[str] = []
    if CHECKPOINT_GRAPH_KEY in bundle.entries:
        nodes = [pw.parse(n, {1, 2}) for n in pw.parse(bundle.string(CHECKPOINT_GRAPH_KEY), {1}).get(1, [])]
        seen, stack = {0}, [0] if nodes else []
        while stack:
            node = nodes[stack.pop()]
            for attribute in node.get(2, []):
                key = pw.text(pw.first(pw.parse(attribute), 3))
                if key in bundle.entries and key not in order:
                    order.append(key)
            children = [pw.first(pw.parse(c), 1, 0) for c in node.get(1, [])]
            for child in reversed(children):
                if 0 <= child < len(nodes) and child not in seen:
                    seen.add(child)
                    stack.append(child)
    known = set(order)
    return order + sorted(k for k in bundle.entries if k not in known and k)

