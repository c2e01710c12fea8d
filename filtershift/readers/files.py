"""The files a checkpoint is made of, inside its own folder only.

Many formats keep one model in several files: a graph beside its weights (``.pdmodel`` +
``.pdiparams``, ``.xml`` + ``.bin``), a ``model.json`` beside weight shards, a SavedModel or
``.mlpackage`` folder. Every companion path a file names is resolved here, and refused when it would
leave the model's folder (an absolute path, ``..``, a symlink pointing out). The content hash and
the size/mtime fingerprint of a model cover all of its files, so a changed shard is a changed model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def inside(folder: Path, relative: str, what: str = "file") -> Path:
    """``folder / relative`` resolved, refused unless it stays inside ``folder``."""
    root = Path(folder).resolve()
    if not relative or Path(relative).is_absolute() or "\x00" in relative:
        raise ValueError(f"{what} {relative!r} is not a relative path inside the model's folder; refused")
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"{what} {relative!r} lies outside the model's folder {root}; refused")
    return target


def folder_files(folder: Path) -> list[Path]:
    """Every regular file under a model folder, sorted; a symlink that leads out is refused."""
    root = Path(folder).resolve()
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"{path.relative_to(root)} links outside the model's folder {root}; refused")
            files.append(path)
    return files


def read_range(path: Path, offset: int, size: int, what: str = "data") -> bytes:
    """``size`` bytes at ``offset`` of ``path``, checked against the file's length before reading."""
    length = path.stat().st_size
    if offset < 0 or size < 0 or offset + size > length:
        raise ValueError(f"{what}: bytes {offset:,}..{offset + size:,} lie past the end of {path.name} ({length:,} bytes)")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise ValueError(f"{what}: {path.name} ended early while reading")
    return data


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_model(path: Path, files: list[Path]) -> str:
    """One file: its SHA-256 (as always). Several: the SHA-256 of each file's path relative to the
    model's folder and its own SHA-256, in order."""
    if files == [path]:
        return sha256_file(path)
    root = path if path.is_dir() else path.parent
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def fingerprint(files: list[Path]) -> tuple[int, int]:
    """(total size, newest mtime in ns) of a model's files: cheap evidence that none changed."""
    stats = [f.stat() for f in files]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
