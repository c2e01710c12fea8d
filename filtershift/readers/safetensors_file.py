"""safetensors files: a flat mapping of tensors, never code.

safetensors sorts its keys, so the registration order of the layers is lost. With an ``arch`` the
module gives the order back; without one, layers are ordered by their names in natural order
(``features.2`` before ``features.10``), which matches registration order for the usual
sequential naming but not in general: give such files an ``arch`` for exact depths.
"""

from __future__ import annotations

import re
from pathlib import Path

from filtershift.readers.statedict import convolutions
from filtershift.types import ConvWeight


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sniff(path: Path, head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header."""
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= path.stat().st_size


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as exc:
        raise ValueError(f"not a readable safetensors file ({exc})") from None
    return convolutions({k: state[k] for k in sorted(state, key=natural_key)}, arch)
