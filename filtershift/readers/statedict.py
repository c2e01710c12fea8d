"""Convolutions of a PyTorch state dict (shared by the pickle and safetensors readers).

With an ``arch`` the state dict is loaded (strictly) into that module, and exactly its
``nn.Conv2d`` modules count, in registration order, with their true ``groups``.

Without an ``arch`` the rule is by name and shape, and has limits:
- a conv weight is a 4-D floating tensor whose key ends in ``weight``;
- keys of EMA / shadow copies (``ema``, ``shadow``, ``averaged``) are never used;
- a layer is taken for a transposed convolution, and excluded, only when its name says so
  (``ConvTranspose``, ``transpose``, ``deconv``, ``convt``, ``upconv``/``up_conv``): a
  ``ConvTranspose2d`` with a neutral name is counted as a regular conv (its weight layout cannot
  be told apart), so give such checkpoints an ``arch``;
- ``groups`` cannot be read from a weight alone and is stored as -1 (unknown);
- order is the order of the keys, which is the module registration order of ``state_dict()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from filtershift.readers.arch import build_arch
from filtershift.types import ConvWeight

# Containers of the model's weights inside a checkpoint dict, in order of preference.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "module", "weights", "params")
EMA_PATTERN = re.compile(r"(^|[._])(ema|model_ema|shadow|averaged_model|swa)([._]|$)", re.IGNORECASE)
TRANSPOSED_PATTERN = re.compile(r"conv_?transpose|transpose_?conv|deconv|(^|[._])convt([._\d]|$)|up_?conv", re.IGNORECASE)


def find_state_dict(obj: object, source: str) -> Mapping:
    """The model's state dict inside a loaded checkpoint (bare, or under a known key)."""
    import torch

    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                return find_state_dict(inner, f"{source}[{key!r}]")
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ValueError(
        f"{source}: no state dict found (expected a mapping of tensors, or one under one of the keys "
        f"{', '.join(STATE_DICT_KEYS)}); save the model with torch.save(model.state_dict(), path)"
    )


def strip_wrappers(state: Mapping) -> dict:
    """Drop ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def to_numpy_float32(tensor) -> np.ndarray:
    """A floating tensor of any precision as a float32 numpy array (exact for fp16/bf16)."""
    import torch

    return tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def convolutions(state: Mapping, arch: str = "") -> list[ConvWeight]:
    """Regular 2-D convolutions of a state dict, with ``arch`` exactly, else by the rule above."""
    state = strip_wrappers(state)
    if arch:
        return _with_arch(state, arch)
    convs = []
    for key, tensor in state.items():
        if not key.endswith("weight") or tensor.ndim != 4 or not tensor.is_floating_point():
            continue
        if EMA_PATTERN.search(key) or TRANSPOSED_PATTERN.search(key):
            continue
        convs.append(ConvWeight(name=key.removesuffix(".weight"), level=len(convs), weight=to_numpy_float32(tensor), groups=-1))
    return convs


def _with_arch(state: Mapping, arch: str) -> list[ConvWeight]:
    import torch

    module = build_arch(arch)
    state = {k: v for k, v in state.items() if not EMA_PATTERN.search(k)}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        detail = "; ".join(
            part for part in (
                f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}" if unexpected else "",
            ) if part
        )
        raise ValueError(f"the state dict does not fit arch {arch!r} ({detail}); fix the 'arch' column or leave it empty")
    convs = []
    for name, sub in module.named_modules():
        if type(sub) is torch.nn.Conv2d or (isinstance(sub, torch.nn.Conv2d) and not isinstance(sub, torch.nn.modules.conv._ConvTransposeNd)):
            convs.append(ConvWeight(name=name, level=len(convs), weight=to_numpy_float32(state[f"{name}.weight"]), groups=int(sub.groups)))
    return convs
