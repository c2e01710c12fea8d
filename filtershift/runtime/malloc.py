"""glibc allocator settings for worker processes.

A distributed worker starts with ``MALLOC_TRIM_THRESHOLD_`` set (dask's nanny does it), which also
pins glibc's mmap threshold at 128 KiB: every array or tensor above it is mmap'ed and unmapped again,
so each temporary is page-faulted afresh. Measured here: the histogram arithmetic of a (262144, 9)
block ran 2-3x slower, and zoo training took 1.5-2x the CPU time. Stages whose tasks allocate the same
large buffers over and over call :func:`relax_malloc` at the start of each task; it acts once per
process, and also on workers of clusters filtershift did not start (``--scheduler``, SLURM).
"""

from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@functools.cache
def relax_malloc(mmap_threshold: int, trim_threshold: int) -> None:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and keep up to
    ``trim_threshold`` bytes of freed memory in the process (a bound, flat in the data size)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
