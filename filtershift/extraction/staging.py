"""One checkpoint, two dask tasks: read it, then write its rows where the ledger placed them.

:func:`read_checkpoint` (``extract-<name>-<row>``) reads the file once and keeps its 3x3 kernels in
the worker's memory with their summary (:class:`Staged`: counts, checksums, per-layer metadata)
and per-layer PCA moments. Once every earlier checkpoint is summarised, the client places its rows
(:mod:`.ledger`), and :func:`write_checkpoint` (``write-<name>-<row>``, on the same worker) writes
the store chunks that lie wholly inside them straight into the store. The few rows of the chunks
it shares with its neighbours (its *edges*, :func:`.chunkplan.split_rows`) go to
``DB/.staging/<sha256>/`` with ``layers.json``, ``moments.npz`` and ``summary.json`` (which
records the placement); consolidation later writes those shared chunks, one task each. So every
filter is written to the store once, and each checkpoint is read once.

The folder appears atomically (:func:`filtershift.store.files.atomic_folder`) after the chunk
writes: a killed run leaves either nothing that looks finished or a folder whose rows are in the
store at the placement it records. A rerun that places the checkpoint at the same rows reuses it
without reading the checkpoint again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from filtershift import store
from filtershift.analysis.moments import layer_moments
from filtershift.extraction.chunkplan import split_rows
from filtershift.extraction.kernels import model_kernels
from filtershift.extraction.manifest import Entry
from filtershift.extraction.rerun import ChangedCheckpointError
from filtershift.readers import model_files, read_convolutions
from filtershift.readers.files import sha256_model
from filtershift.runtime.failpoints import failpoint
from filtershift.store import rows_checksum
from filtershift.store.files import atomic_folder

STAGING_DIR = ".staging"
MOMENT_FIELDS = ("n", "raw_mean", "raw_m2", "scaled_mean", "scaled_m2")
LAYER_FIELDS = ("name", "conv_index", "n_conv", "depth", "depth_decile", "in_channels", "out_channels", "groups", "n_filters")


class WriteTarget(NamedTuple):
    """Where write tasks write: the store, its rows per chunk, the staging folder."""

    store_path: str
    chunk_rows: int
    staging_root: str


@dataclass(frozen=True)
class Placement:
    """Where a checkpoint's rows go: store rows from ``start``, layer ids from ``first_layer``."""

    start: int
    first_layer: int


@dataclass(frozen=True)
class Staged:
    """What the client learns of a checkpoint (small; the kernels stay on the worker)."""

    sha256: str
    status: str  # ok | failed | skipped
    error: str = ""
    n_conv: int = 0
    n_layers: int = 0
    n_filters: int = 0
    kernel_counts: dict = field(default_factory=dict)
    rows_sha256: str = ""
    layers: dict = field(default_factory=dict)  # LAYER_FIELDS -> one value per layer
    folder: str = ""
    reader: str = ""  # format and arch it was read with
    placement: Placement | None = None  # set once the rows are written

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Staged":
        fields = json.loads(text)
        placement = fields.pop("placement", None)
        return cls(**fields, placement=Placement(**placement) if placement else None)


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A read checkpoint: its summary, and its kernels with their moments (None when an earlier,
    interrupted run already wrote it: ``staged.placement`` says where)."""

    staged: Staged
    kernels: np.ndarray | None = None
    moments: dict | None = None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def summary_of(checkpoint: Checkpoint) -> Staged:
    """The small part of a read checkpoint (a task of its own, so only this travels to the client)."""
    return checkpoint.staged


def read_checkpoint(entry: Entry, staging_root: str, reuse: bool = True) -> Checkpoint:
    """Read one checkpoint: its 3x3 kernels, their checksum and per-layer moments. Never raises
    for a bad checkpoint: the problem becomes the summary's ``status`` / ``error``. With ``reuse``,
    a checkpoint an interrupted run wrote (a finished folder of its content) is not read again."""
    if entry.problem:
        return Checkpoint(Staged(sha256="", status=entry.problem_status, error=entry.problem))
    try:
        sha = sha256_model(entry.path, model_files(entry.path, entry.format))
    except OSError as exc:
        return Checkpoint(Staged(sha256="", status="failed", error=f"cannot read the file: {one_line(exc)}"))
    except ValueError as exc:  # a companion file missing or outside the model's folder
        return Checkpoint(Staged(sha256="", status="failed", error=f"{entry.format} reader: {one_line(exc)}"))
    folder, reader = Path(staging_root) / sha, f"{entry.format}:{entry.arch}"
    if reuse and (earlier := written_before(folder, reader)) is not None:
        return Checkpoint(replace(earlier, folder=str(folder)))
    try:
        model = model_kernels(read_convolutions(entry.path, entry.format, entry.arch))
    except Exception as exc:  # a hostile or broken file fails alone, with its reason
        return Checkpoint(Staged(sha256=sha, status="failed", error=f"{entry.format} reader: {one_line(exc)}"))
    if not model.layers:
        shapes = ", ".join(f"{k}: {v}" for k, v in model.kernel_counts.items()) or "none"
        reason = "no regular 2-D convolution found" if not model.kernel_counts else f"no 3x3 regular convolution (kernels by shape: {shapes})"
        return Checkpoint(Staged(sha256=sha, status="skipped", error=reason, n_conv=model.n_conv, kernel_counts=model.kernel_counts))
    kernels = np.concatenate([layer.kernels for layer in model.layers]) if len(model.layers) > 1 else model.layers[0].kernels
    if not np.isfinite(kernels).all():
        bad = [layer.name for layer in model.layers if not np.isfinite(layer.kernels).all()]
        return Checkpoint(Staged(sha256=sha, status="failed", n_conv=model.n_conv,
                                 error=f"non-finite weights (NaN or Inf) in {len(bad)} layer(s): {', '.join(bad[:3])}"))
    layers = {f: [getattr(layer, f) for layer in model.layers] for f in LAYER_FIELDS}
    staged = Staged(sha256=sha, status="ok", n_conv=model.n_conv, n_layers=len(model.layers), n_filters=int(kernels.shape[0]),
                    kernel_counts=model.kernel_counts, rows_sha256=rows_checksum(kernels), layers=layers, folder=str(folder), reader=reader)
    sizes = np.asarray(layers["n_filters"], np.int64)
    moments = layer_moments(kernels, np.arange(len(sizes)), sizes)
    record = {"n": moments.raw.n, "raw_mean": moments.raw.mean, "raw_m2": moments.raw.m2,
              "scaled_mean": moments.scaled.mean, "scaled_m2": moments.scaled.m2}
    return Checkpoint(staged, kernels, record)


def written_before(folder: Path, reader: str = "") -> Staged | None:
    """The summary of a checkpoint of this content already written to the store, read the same
    way (``reader``, when given): None if there is none."""
    try:
        staged = Staged.from_json((folder / "summary.json").read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if staged.placement is None or staged.status != "ok" or (reader and staged.reader != reader):
        return None
    return staged


def write_checkpoint(checkpoint: Checkpoint, entry: Entry, placement: Placement, store_path: str, chunk_rows: int,
                     staging_root: str) -> Staged:
    """Write a read checkpoint's rows at ``placement`` in the store of ``chunk_rows``-row chunks:
    the chunks wholly inside its rows directly, its edge rows to its staging folder (see the
    module). Returns the final summary."""
    staged = checkpoint.staged
    if checkpoint.kernels is None:
        if staged.placement == placement:
            return staged  # written by an interrupted run, at these very rows
        checkpoint = read_checkpoint(entry, staging_root, reuse=False)  # placed elsewhere this time
        if checkpoint.kernels is None or checkpoint.staged.sha256 != staged.sha256:
            raise ChangedCheckpointError(f"{entry.path} changed while it was being extracted (its content hash differs from the "
                                         "first read); rerun `filtershift extract`: the finished work is kept")
        staged = checkpoint.staged
    kernels = checkpoint.kernels
    start, stop = placement.start, placement.start + len(kernels)
    head, tail = split_rows(start, stop, chunk_rows)
    layer = np.repeat(np.arange(placement.first_layer, placement.first_layer + staged.n_layers, dtype=np.int32),
                      np.asarray(staged.layers["n_filters"], np.int64))
    failpoint("stage:before-write")
    if tail > head:
        store.write_rows(store_path, head, kernels[head - start:tail - start], layer[head - start:tail - start])
    staged = replace(staged, placement=placement)
    edges = {"head_filters": kernels[:head - start], "head_layer": layer[:head - start],
             "tail_filters": kernels[tail - start:], "tail_layer": layer[tail - start:]}
    folder = Path(staged.folder)
    shutil.rmtree(folder, ignore_errors=True)  # an older or differently placed version
    _write_atomically(folder, edges, checkpoint.moments, staged)
    failpoint("stage:after-write")
    return staged


def _write_atomically(folder: Path, edges: dict, moments: dict, staged: Staged) -> None:
    def fill(tmp: Path) -> None:
        np.savez(tmp / "edges.npz", **edges)
        (tmp / "layers.json").write_text(json.dumps(staged.layers))
        np.savez(tmp / "moments.npz", **moments)
        (tmp / "summary.json").write_text(staged.to_json())  # last: the folder is finished

    try:
        atomic_folder(folder, fill)
    except OSError:
        if written_before(folder) is None:  # not a concurrent twin: a real failure
            raise


def load_edges(folder: str) -> dict[str, np.ndarray]:
    """A written checkpoint's edge rows: ``head_filters`` / ``head_layer`` (rows from its
    placement's start) and ``tail_filters`` / ``tail_layer`` (its last rows)."""
    with np.load(Path(folder) / "edges.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_staged_moments(folder: str, n_layers: int) -> dict[str, np.ndarray] | None:
    """The per-layer moments staged with a written checkpoint (layers in its order), or None when
    the folder has none of the expected shape."""
    try:
        with np.load(Path(folder) / "moments.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in MOMENT_FIELDS}
    except (OSError, ValueError, KeyError):
        return None
    return arrays if all(len(a) == n_layers for a in arrays.values()) else None


__all__ = ["Checkpoint", "Placement", "Staged", "WriteTarget", "read_checkpoint", "write_checkpoint", "summary_of", "load_edges",
           "load_staged_moments", "STAGING_DIR"]
