"""PyTorch pickles (``torch.save``): bare state dicts and checkpoint dicts, always loaded with
``weights_only=True`` so that no code in the file can run."""

from __future__ import annotations

import pickle
from pathlib import Path

from filtershift.readers.statedict import convolutions, find_state_dict
from filtershift.types import ConvWeight


def read_torch(path: Path, arch: str = "") -> list[ConvWeight]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"refused to unpickle: the file holds objects other than tensors and plain containers "
            f"({first}); re-save it with torch.save(model.state_dict(), path)"
        ) from None
    return convolutions(find_state_dict(obj, path.name), arch)


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)
