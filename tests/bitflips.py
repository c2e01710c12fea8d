"""Corrupted copies of a good file, for the hostile-input tests of every reader: each copy is
written over ``target`` and read; the reader must return 4-D float32 weights or raise
``ValueError`` with a one-line reason, nothing else (no other exception, no hang, no crash)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def flipped(data: bytes, count: int | None = None, step: int | None = None, seed: int = 0) -> Iterator[bytes]:
    """``count`` copies with one random bit flipped (seeded), or, with ``step``, a copy for every
    ``step``-th byte with that byte inverted."""
    if step is not None:
        for at in range(0, len(data), step):
            copy = bytearray(data)
            copy[at] ^= 0xFF
            yield bytes(copy)
        return
    rng = np.random.default_rng(seed)
    for _ in range(count or 40):
        copy = bytearray(data)
        copy[rng.integers(len(copy))] ^= 1 << int(rng.integers(8))
        yield bytes(copy)


def failures_of_flipped(data: bytes, target: Path, read: Callable[[], list], **how) -> int:
    """Write each :func:`flipped` copy of ``data`` to ``target`` and ``read()``; check the outcome
    (see the module) and return how many copies were refused."""
    failures = 0
    for copy in flipped(data, **how):
        Path(target).write_bytes(copy)
        try:
            convs = read()
        except ValueError as exc:
            assert "\n" not in str(exc), str(exc)
            failures += 1
        else:
            assert all(c.weight.ndim == 4 and c.weight.dtype == np.float32 for c in convs)
    return failures
