"""Execute a zoo plan: one dask task per model trains it, writes its checkpoint(s) and returns their
manifest rows and training-effect measurements; :func:`build_zoo` gathers them into
``DIR/manifest.csv`` and ``DIR/training_effect.csv``.

Each task writes only its own files, named after its model, so tasks never collide and a rerun
rewrites the same bytes.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as safetensors_bytes

from filtershift.runtime.malloc import relax_malloc
from filtershift.store.files import atomic_write, atomic_write_bytes
from filtershift.zoo.datasets import dataset_name
from filtershift.zoo.effect import model_effect, shift_from_init
from filtershift.zoo.models import build, conv_kernel_counts
from filtershift.zoo.plan import ModelSpec, plan_zoo
from filtershift.zoo.script import save_torchscript
from filtershift.zoo.train import Trained, arch_kwargs, deterministic_torch, example_input, kernel_layers, train

EXTENSIONS = {"torch": ".pt", "checkpoint": ".pth", "safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}
READER_FORMAT = {"torch": "torch", "checkpoint": "torch", "safetensors": "safetensors", "torchscript": "torchscript", "onnx": "onnx"}
ROLE_TASK = {"generator": "gan-generator", "discriminator": "gan-discriminator"}


@dataclass(frozen=True)
class ZooResult:
    manifest: pd.DataFrame
    effects: pd.DataFrame
    seconds: dict[str, float]  # training task -> wall seconds (not written: it is not reproducible)


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _half(state: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _save(fmt: str, net: Trained, spec: ModelSpec, path: Path, index: int) -> None:
    """Write ``net`` to ``path`` in zoo format ``fmt`` (see :data:`EXTENSIONS`)."""
    state = {k: v.detach().contiguous() for k, v in net.module.state_dict().items()}
    if fmt == "torch":
        atomic_write_bytes(path, _torch_bytes(state))
    elif fmt == "checkpoint":
        key = "state_dict" if index % 2 == 0 else "model_state_dict"
        atomic_write_bytes(path, _torch_bytes({key: state, "optimizer": net.optimizer.state_dict(), "step": spec.steps, "arch": net.arch}))
    elif fmt == "safetensors":
        atomic_write_bytes(path, safetensors_bytes(state, metadata={"arch": net.arch}))
    elif fmt == "torchscript":
        tmp = path.with_name(path.name + ".state.tmp")
        atomic_write_bytes(tmp, _torch_bytes(state))
        try:
            atomic_write(path, lambda out: save_torchscript(net.arch, tmp, Path(out)))
        finally:
            tmp.unlink(missing_ok=True)
    elif fmt == "onnx":
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # the dynamo exporter needs onnxscript, which we do not depend on; the TorchScript-based
            # exporter still works and warns that it is deprecated.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(net.module, (example_input(spec, net.role),), buffer, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
        atomic_write_bytes(path, buffer.getvalue())
    else:
        raise ValueError(f"unknown zoo format {fmt!r}")


def _row(spec: ModelSpec, net: Trained, name: str, path: Path, fmt: str, *, trained: bool, precision: str,
         counts: tuple[int, int, int], loss: float | None) -> dict:
    return {
        "path": path.as_posix(),
        "name": name,
        "format": READER_FORMAT[fmt],
        "task": ROLE_TASK.get(net.role, spec.task),
        "data_type": spec.data_type,
        "dataset": dataset_name(spec.data_type, spec.n_train, spec.size, spec.data_seed) if trained else "none",
        "family": spec.family,
        "arch": net.arch,
        "container": {"torch": "state_dict", "safetensors": "state_dict"}.get(fmt, fmt),
        "trained": trained,
        "seed": spec.seed,
        "width": spec.width,
        "steps": spec.steps if trained else 0,
        "precision": precision,
        "n_train": spec.n_train,
        "image_size": spec.size,
        "n_conv": counts[0],
        "n_layers_3x3": counts[1],
        "n_kernels_3x3": counts[2],
        "final_loss": round(loss, 6) if loss is not None else None,
        "note": spec.note,
    }


def _relax_malloc() -> None:
    """Training allocates the same tensors step after step: keep them on the heap (see
    :mod:`filtershift.runtime.malloc`)."""
    relax_malloc(64 * 2**20, 256 * 2**20)


def build_model(spec: ModelSpec, directory: str) -> tuple[list[dict], list[dict], float]:
    """Train ``spec``, write its checkpoint(s) under ``directory``; return manifest rows, training
    effects and the task's wall seconds. This is what one dask task runs."""
    start = time.perf_counter()
    _relax_malloc()
    root = Path(directory)
    nets, losses = train(spec)
    final_loss = sum(losses[-20:]) / len(losses[-20:])
    rows, effects = [], []
    for i, net in enumerate(nets):
        name = spec.name if net.role == "model" else f"{spec.name}-{net.role}"
        counts = conv_kernel_counts(net.module)
        rel = Path(spec.family) / f"{name}{EXTENSIONS[spec.format]}"
        _save(spec.format, net, spec, root / rel, spec.seed + i)
        rows.append(_row(spec, net, name, rel, spec.format, trained=True, precision="float32", counts=counts, loss=final_loss))
        if spec.fp16_copy:
            fmt = "safetensors" if spec.format in ("safetensors", "onnx") else "torch"
            half_rel = Path(spec.family) / f"{name}-fp16{EXTENSIONS[fmt]}"
            half = Trained(net.role, net.module, net.optimizer, net.initial_state, net.arch)
            half_state = _half(net.module.state_dict())
            data = _torch_bytes(half_state) if fmt == "torch" else safetensors_bytes(
                {k: v.contiguous() for k, v in half_state.items()}, metadata={"arch": net.arch})
            atomic_write_bytes(root / half_rel, data)
            rows.append(_row(spec, half, f"{name}-fp16", half_rel, fmt, trained=True, precision="float16", counts=counts, loss=final_loss))
        if spec.control:
            init_rel = Path(spec.family) / f"{name}-init.pt"
            atomic_write_bytes(root / init_rel, _torch_bytes(net.initial_state))
            rows.append(_row(spec, net, f"{name}-init", init_rel, "torch", trained=False, precision="float32", counts=counts, loss=None))
        trained_k = kernel_layers(net.module.state_dict(), net.module)
        initial_k = kernel_layers(net.initial_state, net.module)
        with deterministic_torch(spec.seed + 7919):
            arch_name, kwargs = arch_kwargs(spec, net.role)
            other = build(arch_name, **kwargs)
        other_k = kernel_layers(other.state_dict(), other)
        effects.append({
            "name": name, "family": spec.family, "task": ROLE_TASK.get(net.role, spec.task), "data_type": spec.data_type,
            "width": spec.width, "steps": spec.steps, "note": spec.note, "loss_first": losses[0], "loss_final": final_loss,
            **model_effect(trained_k, initial_k),
            "shift_init_vs_other_init": shift_from_init(np.concatenate(initial_k), np.concatenate(other_k)),
        })
    return rows, effects, time.perf_counter() - start


def build_zoo(directory: str | os.PathLike, size: str = "small", seed: int = 0, specs: tuple[ModelSpec, ...] | None = None) -> ZooResult:
    """Train the zoo ``plan_zoo(size, seed)`` (or ``specs``) with one dask task per model on the
    current dask scheduler, and write ``manifest.csv`` and ``training_effect.csv`` into ``directory``."""
    specs = plan_zoo(size, seed) if specs is None else specs
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tasks = [dask.delayed(build_model, pure=True)(spec, str(root), dask_key_name=f"train-{spec.name}") for spec in specs]
    results = dask.compute(*tasks)
    rows = [row for r, _, _ in results for row in r]
    effects = [e for _, es, _ in results for e in es]
    manifest = pd.DataFrame(rows).sort_values("name", kind="stable").reset_index(drop=True)
    if manifest["name"].duplicated().any():
        raise RuntimeError(f"duplicate model names in the zoo plan: {sorted(manifest['name'][manifest['name'].duplicated()])}")
    effects_df = pd.DataFrame(effects).sort_values("name", kind="stable").reset_index(drop=True)
    atomic_write(root / "manifest.csv", lambda tmp: manifest.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(root / "training_effect.csv", lambda tmp: effects_df.to_csv(tmp, index=False, float_format="%.6g"))
    return ZooResult(manifest, effects_df, {spec.name: r[2] for spec, r in zip(specs, results)})


def summarize(result: ZooResult) -> str:
    """A few lines on what was built and how far training moved the filters."""
    m, e = result.manifest, result.effects
    trained = m[m["trained"]]
    lines = [
        f"{len(m)} checkpoints ({len(trained)} trained, {len(m) - len(trained)} random-init controls), "
        f"{int(m['n_layers_3x3'].sum())} 3x3 layers, {int(m['n_kernels_3x3'].sum()):,} 3x3 kernels",
        "formats: " + ", ".join(f"{k} {v}" for k, v in m.groupby(["format", "container"]).size().items()).replace("'", ""),
        f"fp16 copies: {int((m['precision'] == 'float16').sum())}",
    ]
    regular = e[e["note"] == ""]
    lines.append(
        "training effect (median over trained models): relative weight change "
        f"{regular['rel_change'].median():.2f}; D(trained, own init) {regular['shift_vs_init'].median():.3f} vs "
        f"D(init, other init) {regular['shift_init_vs_other_init'].median():.3f}; median layer variance entropy "
        f"{regular['median_entropy'].median():.3f} trained vs {regular['median_entropy_init'].median():.3f} at init; "
        f"degenerate layers {regular['degenerate_share'].mean():.0%} trained vs {regular['degenerate_share_init'].mean():.0%} at init"
    )
    for _, row in e[e["note"].str.startswith("over-sized")].iterrows():
        lines.append(f"{row['name']} ({row['note']}): degenerate layers {row['degenerate_share']:.0%}, "
                     f"median entropy {row['median_entropy']:.3f}")
    return "\n".join(lines)
