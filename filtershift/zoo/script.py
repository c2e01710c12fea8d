"""Write a TorchScript archive of a zoo model, byte-for-byte reproducibly.

``torch.jit.script`` output depends on the process: type names get a per-process mangle counter and
some constants are written in ``set`` order (string hashing). :func:`save_torchscript` therefore runs
``python -m filtershift.zoo.script ARCH STATE OUT`` in a fresh interpreter with ``PYTHONHASHSEED=0``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path


def save_torchscript(arch: str, state_path: Path, out_path: Path) -> None:
    """Script ``zoo:`` architecture ``arch`` with the state dict saved at ``state_path`` into ``out_path``."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "filtershift.zoo.script", arch, str(state_path), str(out_path)],
        env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"TorchScript export of {arch} to {out_path} failed:\n{proc.stderr[-2000:]}")


def _main(arch: str, state_path: str, out_path: str) -> None:
    import torch

    from filtershift.readers.arch import build_arch

    torch.set_num_threads(1)
    module = build_arch(arch)
    module.load_state_dict(torch.load(state_path, weights_only=True))
    module.eval()
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript files are still common
        # in the wild and the readers must handle them.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, out_path)


if __name__ == "__main__":
    _main(*sys.argv[1:4])
