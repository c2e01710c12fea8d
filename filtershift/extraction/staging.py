"""One checkpoint -> one staging folder (the per-checkpoint dask task of ``extract``).

``DB/.staging/<sha256>/`` holds ``kernels.npy`` (n, 9) float32, ``layers.json`` (per-layer
metadata, no ids yet), ``moments.npz`` (each layer's PCA moments, computed here while the kernels
are in memory: :mod:`.layermoments`) and ``summary.json``; it appears atomically (filled under a
temporary name, then renamed: :func:`filtershift.store.files.atomic_folder`), so a killed task
leaves nothing that looks finished. Consolidation later copies staged rows into the database; no task ever writes the database itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from filtershift.analysis.moments import layer_moments
from filtershift.runtime.failpoints import failpoint
from filtershift.extraction.kernels import model_kernels
from filtershift.extraction.manifest import Entry
from filtershift.readers import model_files, read_convolutions
from filtershift.readers.files import sha256_model
from filtershift.store import rows_checksum
from filtershift.store.files import atomic_folder

STAGING_DIR = ".staging"
MOMENT_FIELDS = ("n", "raw_mean", "raw_m2", "scaled_mean", "scaled_m2")


@dataclass(frozen=True)
class Staged:
    """What a staging task reports back (small; the kernels stay on disk)."""

    sha256: str
    status: str  # ok | failed | skipped
    error: str = ""
    n_conv: int = 0
    n_layers: int = 0
    n_filters: int = 0
    kernel_counts: dict = field(default_factory=dict)
    rows_sha256: str = ""
    folder: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def stage_checkpoint(entry: Entry, staging_root: str) -> Staged:
    """Read one checkpoint and stage its 3x3 kernels. Never raises for a bad checkpoint: the
    problem becomes the result's ``status`` / ``error``."""
    if entry.problem:
        return Staged(sha256="", status=entry.problem_status, error=entry.problem)
    try:
        sha = sha256_model(entry.path, model_files(entry.path, entry.format))
    except OSError as exc:
        return Staged(sha256="", status="failed", error=f"cannot read the file: {one_line(exc)}")
    except ValueError as exc:  # a companion file missing or outside the model's folder
        return Staged(sha256="", status="failed", error=f"{entry.format} reader: {one_line(exc)}")
    folder = Path(staging_root) / sha
    if (folder / "summary.json").is_file():  # staged by an earlier, interrupted run
        return Staged(**json.loads((folder / "summary.json").read_text()))
    try:
        model = model_kernels(read_convolutions(entry.path, entry.format, entry.arch))
    except Exception as exc:  # a hostile or broken file fails alone, with its reason
        return Staged(sha256=sha, status="failed", error=f"{entry.format} reader: {one_line(exc)}")
    if not model.layers:
        shapes = ", ".join(f"{k}: {v}" for k, v in model.kernel_counts.items()) or "none"
        reason = "no regular 2-D convolution found" if not model.kernel_counts else f"no 3x3 regular convolution (kernels by shape: {shapes})"
        return Staged(sha256=sha, status="skipped", error=reason, n_conv=model.n_conv, kernel_counts=model.kernel_counts)
    kernels = np.concatenate([layer.kernels for layer in model.layers]) if len(model.layers) > 1 else model.layers[0].kernels
    if not np.isfinite(kernels).all():
        bad = [layer.name for layer in model.layers if not np.isfinite(layer.kernels).all()]
        return Staged(sha256=sha, status="failed", error=f"non-finite weights (NaN or Inf) in {len(bad)} layer(s): {', '.join(bad[:3])}", n_conv=model.n_conv)
    staged = Staged(
        sha256=sha,
        status="ok",
        n_conv=model.n_conv,
        n_layers=len(model.layers),
        n_filters=int(kernels.shape[0]),
        kernel_counts=model.kernel_counts,
        rows_sha256=rows_checksum(kernels),
        folder=str(folder),
    )
    sizes = np.array([layer.n_filters for layer in model.layers], np.int64)
    moments = layer_moments(kernels, np.arange(len(sizes)), sizes)
    failpoint("stage:before-write")
    _write_atomically(folder, kernels, _layers_record(model), _moments_record(moments), staged)
    failpoint("stage:after-write")
    return staged


def _layers_record(model) -> dict:
    fields = ("name", "conv_index", "n_conv", "depth", "depth_decile", "in_channels", "out_channels", "groups", "n_filters")
    return {f: [getattr(layer, f) for layer in model.layers] for f in fields}


def _moments_record(moments) -> dict[str, np.ndarray]:
    return {"n": moments.raw.n, "raw_mean": moments.raw.mean, "raw_m2": moments.raw.m2,
            "scaled_mean": moments.scaled.mean, "scaled_m2": moments.scaled.m2}


def _write_atomically(folder: Path, kernels: np.ndarray, layers: dict, moments: dict, staged: Staged) -> None:
    def fill(tmp: Path) -> None:
        np.save(tmp / "kernels.npy", kernels)
        (tmp / "layers.json").write_text(json.dumps(layers))
        np.savez(tmp / "moments.npz", **moments)
        (tmp / "summary.json").write_text(staged.to_json())

    try:
        atomic_folder(folder, fill)
    except OSError:
        if not (folder / "summary.json").is_file():  # not a concurrent twin: a real failure
            raise


def read_staged_layers(folder: str) -> pd.DataFrame:
    return pd.DataFrame(json.loads((Path(folder) / "layers.json").read_text()))


def load_staged_kernels(folder: str, mmap: bool = False) -> np.ndarray:
    return np.load(Path(folder) / "kernels.npy", allow_pickle=False, mmap_mode="r" if mmap else None)


def load_staged_moments(folder: str, n_layers: int) -> dict[str, np.ndarray] | None:
    """The per-layer moments staged beside the kernels (layers in staging order), or None when the
    folder has none of the expected shape (staged by an older version: they are computed then)."""
    try:
        with np.load(Path(folder) / "moments.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in MOMENT_FIELDS}
    except (OSError, ValueError, KeyError):
        return None
    return arrays if all(len(a) == n_layers for a in arrays.values()) else None


__all__ = ["Staged", "stage_checkpoint", "read_staged_layers", "load_staged_kernels", "load_staged_moments", "STAGING_DIR"]
