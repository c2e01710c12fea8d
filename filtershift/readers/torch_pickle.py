"""PyTorch pickles (``torch.save``): bare state dicts and checkpoint dicts, always loaded with
``weights_only=True`` so that no code in the file can run.

A damaged file is named as such: a zip archive (torch >= 1.6) is checked before loading — its
central directory must be there and every member must match its CRC-32 — and a legacy pickle
that cannot be read is told apart from one that holds objects other than tensors. (A flipped bit
in the raw tensor bytes of a legacy pickle has no checksum to catch it.)
"""

from __future__ import annotations

import pickle
import struct
import zipfile
import zlib
from pathlib import Path

from filtershift.readers.statedict import convolutions, find_state_dict
from filtershift.types import ConvWeight

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy (non-zip) torch.save file
_LOAD_ERRORS = (struct.error, EOFError, OSError, RuntimeError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError)


LEGACY_HEAD = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")


def sniff(path: Path, head: bytes) -> bool:
    """A torch.save zip archive (a ``data.pkl`` member) or a legacy torch.save pickle."""
    if head.startswith(LEGACY_HEAD):
        return True
    return head.startswith(ZIP_MAGIC) and any(n.endswith("/data.pkl") or n == "data.pkl" for n in zip_members(path))


def zip_members(path: Path) -> list[str]:
    """The member names of a zip archive; none for a damaged one (its reader names the damage)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def read(path: Path, arch: str = "") -> list[ConvWeight]:
    import torch

    check_zip_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if not _is_refusal(path, exc):
            raise ValueError(damaged(path, "the pickle stream is garbled or cut short")) from None
        raise ValueError(
            f"refused to unpickle: the file holds objects other than tensors and plain containers "
            f"({_first_line(exc)}); re-save it with torch.save(model.state_dict(), path)"
        ) from None
    except _LOAD_ERRORS as exc:
        raise ValueError(damaged(path, _what_is_wrong(path, exc))) from None
    return convolutions(find_state_dict(obj, path.name), arch)


def damaged(path: Path, what: str) -> str:
    """The one-line message for a checkpoint that cannot be read as written."""
    return f"{path.name}: truncated or corrupt PyTorch checkpoint ({what}); re-download or re-save it"


def check_zip_archive(path: Path) -> None:
    """Raise ``ValueError`` (:func:`damaged`) when ``path`` starts as a zip archive but is not a
    whole, intact one: no central directory (cut short), a member beyond the end of the file, or
    a member whose bytes fail its CRC-32. Files that are not zip archives pass."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for info in members:
                if info.header_offset + info.compress_size > size:
                    raise ValueError(damaged(path, f"the zip archive ends early: member {info.filename} is cut off"))
            bad = next((info.filename for info in members if info.CRC and not _crc_ok(archive, info)), None)
    except zipfile.BadZipFile as exc:
        if "central directory" in str(exc) or "not a zip file" in str(exc).lower():
            raise ValueError(damaged(path, f"the zip archive ends early: no central directory in its {size:,} bytes")) from None
        raise ValueError(damaged(path, f"the zip archive is damaged: {_first_line(exc)}")) from None
    except (EOFError, OSError, zlib.error, NotImplementedError) as exc:  # zipfile: NotImplementedError for a compression it cannot read
        raise ValueError(damaged(path, f"the zip archive is damaged: {_first_line(exc)}")) from None
    if bad is not None:
        raise ValueError(damaged(path, f"member {bad} fails its CRC-32 check"))


def _crc_ok(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Read one member through zipfile, which checks its CRC-32 at the end."""
    try:
        with archive.open(info) as member:
            while member.read(4 * 2**20):
                pass
    except zipfile.BadZipFile:
        return False
    return True


def _is_refusal(path: Path, exc: pickle.UnpicklingError) -> bool:
    """torch's weights-only unpickler refusing a whole pickle (objects that would run code), as
    opposed to bytes cut short or garbled (a global's name cut in half is refused too). A zip
    archive passed its CRC check, so its pickle is as written; otherwise the pickles must parse to
    their end: a plain pickle, or the first four of a legacy checkpoint (magic number, protocol,
    system info, the object). ``pickletools`` reads opcodes; it never builds objects."""
    import pickletools

    if zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as f:
            first = [arg for _, arg, _ in pickletools.genops(f)]
            if LEGACY_MAGIC in first:
                for _ in range(3):
                    for _ in pickletools.genops(f):
                        pass
    except Exception:  # any parse failure: not a pickle as written
        return False
    return True


def _what_is_wrong(path: Path, exc: BaseException) -> str:
    if path.stat().st_size == 0:
        return "the file is empty"
    text = _first_line(exc)
    if isinstance(exc, EOFError) or "EOF" in text:
        return "the pickle ends early" + (f": {text}" if text != "EOFError" else "")
    return f"{type(exc).__name__}: {text}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
