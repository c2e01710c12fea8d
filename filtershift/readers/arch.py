"""Architecture builders named in a manifest's ``arch`` column, e.g. ``torchvision:resnet18`` or
``zoo:vgg?width=16&n_classes=10``.

A manifest is untrusted input, so ``arch`` never imports an arbitrary module: only the prefixes
registered here resolve, each to a builder inside a known package. ``?key=value&...`` arguments
are parsed as Python literals (``ast.literal_eval``), never evaluated as code.
"""

from __future__ import annotations

import ast
import importlib
from urllib.parse import parse_qsl

from filtershift.errors import FiltershiftError

# prefix -> "module:function"; the function is called as ``function(name, **kwargs)``.
ARCH_BUILDERS: dict[str, str] = {
    "zoo": "filtershift.zoo.models:build",
    "torchvision": "filtershift.readers.arch:build_torchvision",
}


class ArchError(FiltershiftError, ValueError):
    """An ``arch`` value that names no known builder or has malformed arguments."""


def parse_arch(spec: str) -> tuple[str, str, dict]:
    """``'zoo:vgg?width=16'`` -> ``('zoo', 'vgg', {'width': 16})``."""
    prefix, sep, rest = spec.strip().partition(":")
    if not sep or not rest:
        raise ArchError(f"arch {spec!r} must look like PREFIX:NAME[?key=value&...], e.g. torchvision:resnet18")
    if prefix not in ARCH_BUILDERS:
        raise ArchError(f"arch prefix {prefix!r} is unknown; known prefixes: {', '.join(sorted(ARCH_BUILDERS))}")
    name, _, query = rest.partition("?")
    kwargs = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return prefix, name, kwargs


def build_arch(spec: str):
    """Instantiate the ``torch.nn.Module`` an ``arch`` spec names (random weights)."""
    prefix, name, kwargs = parse_arch(spec)
    module_name, _, function = ARCH_BUILDERS[prefix].partition(":")
    builder = getattr(importlib.import_module(module_name), function)
    try:
        return builder(name, **kwargs)
    except (KeyError, TypeError) as exc:
        raise ArchError(f"arch {spec!r}: {exc}") from exc


def build_torchvision(name: str, **kwargs):
    try:
        import torchvision.models
    except Exception as exc:  # torchvision missing or built for another torch
        raise ArchError(f"arch torchvision:{name} needs a working torchvision ({exc})") from exc
    return torchvision.models.get_model(name, weights=None, **kwargs)
