"""TorchScript archives (``torch.jit.save``): module types are known, so exactly the
``Conv2d`` modules count, in registration order, with their ``groups``.

Loading a TorchScript archive compiles its TorchScript code (a restricted language, no Python
pickles of arbitrary objects); the module is inspected, never run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from filtershift.readers.statedict import EMA_PATTERN, to_numpy_float32
from filtershift.readers.torch_pickle import ZIP_MAGIC, check_zip_archive, zip_members
from filtershift.types import ConvWeight


def sniff(path: Path, head: bytes) -> bool:
    """A zip archive with TorchScript's ``code/`` or ``constants.pkl`` members."""
    return head.startswith(ZIP_MAGIC) and any("/code/" in n or n.endswith("/constants.pkl") for n in zip_members(path))


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    import torch

    check_zip_archive(path)  # a truncated or corrupt archive is named as such
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in torch >= 2.10, but users' archives still need reading.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ValueError(f"not a loadable TorchScript archive ({first})") from None
    convs = []
    for name, sub in module.named_modules():
        if getattr(sub, "original_name", "") != "Conv2d" or EMA_PATTERN.search(name):
            continue
        weight = sub.weight
        if weight.ndim != 4:
            continue
        convs.append(ConvWeight(name=name, level=len(convs), weight=to_numpy_float32(weight), groups=int(sub.groups)))
    return convs
