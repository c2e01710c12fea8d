"""Atomic file writes that follow the process umask: the one way filtershift writes a file.

A file (or, with :func:`atomic_folder`, a whole folder) is written under a temporary name in its target folder and renamed over the target, so a
reader (or a run killed half way) never sees a partial file. ``tempfile.mkstemp`` creates files
with mode 0600; here the finished file gets the mode an ordinary ``open(..., "w")`` would give it
(``0666 & ~umask``), so colleagues sharing a database can read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filtershift.errors import FiltershiftError


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it, which races threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: the classic set-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created regular file gets under the current umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a newly created folder gets under the current umask."""
    return 0o777 & ~current_umask()


def atomic_write(target: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Write ``target`` atomically: ``write(tmp)`` fills a temporary file beside it, then it is
    given the umask's mode and renamed over ``target``. On any failure the temporary is removed
    and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_folder(target: str | os.PathLike, fill: Callable[[Path], None]) -> None:
    """Create the folder ``target`` atomically: ``fill(tmp)`` writes its files into a temporary
    folder beside it (given the umask's mode, not mkdtemp's 0700), which is then renamed to
    ``target``. On any failure the temporary folder is removed; the rename fails with ``OSError``
    when a non-empty ``target`` already exists."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, folder_mode())
        fill(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON; numpy scalars and arrays and paths are converted."""
    atomic_write_text(target, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def exclusive_lock(lock_file: str | os.PathLike, busy_message: str, error: type[Exception] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` for the ``with`` block; if another process holds
    it, raise ``error`` (default :class:`LockedError`) with ``busy_message`` at once. The
    operating system releases the lock when its holder dies, so a killed run never blocks."""
    import fcntl

    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise (error or LockedError)(busy_message) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LockedError(FiltershiftError, RuntimeError):
    """Another filtershift process holds the lock; the message says what it is doing."""
