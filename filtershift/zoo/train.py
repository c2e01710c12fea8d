"""Seeded, deterministic CPU training of one zoo model (or one GAN pair) on its procedural data set.

:func:`train` is what one dask task runs. It pins torch to one thread and deterministic algorithms
for its duration, so the same :class:`~filtershift.zoo.plan.ModelSpec` gives bit-identical weights
on any worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from filtershift.zoo.datasets import CHANNELS, N_CLASSES, make_dataset
from filtershift.zoo.models import build
from filtershift.zoo.plan import ModelSpec


@dataclass
class Trained:
    """A trained network with its optimizer and the state it started from."""

    role: str  # "model", or "generator" / "discriminator" of a GAN pair
    module: nn.Module
    optimizer: torch.optim.Optimizer
    initial_state: dict
    arch: str


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """One thread, deterministic kernels, seeded RNG; restores the previous settings afterwards."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def arch_kwargs(spec: ModelSpec, role: str = "model") -> tuple[str, dict]:
    """The ``build`` name and keyword arguments of ``spec`` (and of ``role`` in a GAN pair)."""
    c = CHANNELS[spec.data_type]
    if spec.family in ("vgg", "resnet", "mobilenet"):
        return spec.family, dict(in_channels=c, n_classes=N_CLASSES[spec.data_type], width=spec.width, blocks=spec.blocks)
    if spec.family == "unet":
        return "unet", dict(in_channels=c, n_classes=1, width=spec.width)
    if spec.family == "srnet":
        return "srnet", dict(in_channels=c, width=spec.width, blocks=spec.blocks)
    if spec.family == "detnet":
        return "detnet", dict(in_channels=c, width=spec.width)
    if spec.family == "dcgan":
        if role == "generator":
            return "dcgan_g", dict(out_channels=c, width=spec.width, size=spec.size)
        return "dcgan_d", dict(in_channels=c, width=spec.width, size=spec.size)
    raise ValueError(f"unknown family {spec.family!r}")


def arch_string(name: str, kwargs: dict) -> str:
    """``zoo:NAME?key=value&...`` for the manifest's ``arch`` column."""
    return f"zoo:{name}?" + "&".join(f"{k}={v}" for k, v in kwargs.items())


def _make(spec: ModelSpec, role: str) -> Trained:
    name, kwargs = arch_kwargs(spec, role)
    module = build(name, **kwargs)
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    elif role in ("generator", "discriminator"):
        opt = torch.optim.Adam(module.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    else:
        opt = torch.optim.AdamW(module.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return Trained(role, module, opt, initial, arch_string(name, kwargs))


def _batches(spec: ModelSpec, n: int) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(spec.seed)
    for _ in range(spec.steps):
        yield torch.randint(0, n, (spec.batch,), generator=g)


def _flip(x: torch.Tensor, *targets: torch.Tensor, g: torch.Generator):
    """Random horizontal flips of images and their dense targets, the same per sample."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    out = [torch.where(flip.view(-1, *[1] * (t.dim() - 1)), t.flip(-1), t) for t in (x, *targets)]
    return out if targets else out[0]


def train(spec: ModelSpec) -> tuple[list[Trained], list[float]]:
    """Train ``spec`` from its seed; return the trained network(s) and the loss of every step."""
    with deterministic_torch(spec.seed):
        data = make_dataset(spec.data_type, spec.n_train, spec.size, spec.data_seed)
        x_all = torch.from_numpy(data.images)
        if spec.family == "dcgan":
            return _train_gan(spec, x_all)
        net = _make(spec, "model")
        g = torch.Generator().manual_seed(spec.seed + 1)
        losses = []
        net.module.train()
        for idx in _batches(spec, len(x_all)):
            x = x_all[idx]
            if spec.task == "classification":
                loss = F.cross_entropy(net.module(_flip(x, g=g)), torch.from_numpy(data.labels)[idx])
            elif spec.task == "segmentation":
                x, m = _flip(x, torch.from_numpy(data.masks)[idx][:, None], g=g)
                loss = F.binary_cross_entropy_with_logits(net.module(x), m)
            elif spec.task == "detection":
                x, m, c = _flip(x, torch.from_numpy(data.masks)[idx][:, None], torch.from_numpy(data.centers)[idx][:, None], g=g)
                out = net.module(x)
                objectness = (F.max_pool2d(c, 4) > 0.5).float()
                loss = F.binary_cross_entropy_with_logits(out[:, :1], objectness, pos_weight=torch.tensor(8.0)) + F.mse_loss(
                    torch.sigmoid(out[:, 1:]), F.avg_pool2d(m, 4)
                )
            elif spec.task == "super-resolution":
                x = _flip(x, g=g)
                loss = F.l1_loss(net.module(F.avg_pool2d(x, 2)), x)
            else:
                raise ValueError(f"unknown task {spec.task!r} for family {spec.family!r}")
            net.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            net.optimizer.step()
            losses.append(loss.item())
        net.module.eval()
        return [net], losses


def _train_gan(spec: ModelSpec, x_all: torch.Tensor) -> tuple[list[Trained], list[float]]:
    gen, disc = _make(spec, "generator"), _make(spec, "discriminator")
    x_all = torch.clamp(x_all / 2.5, -1, 1)
    g = torch.Generator().manual_seed(spec.seed + 1)
    nz = gen.module.nz
    losses = []
    gen.module.train()
    disc.module.train()
    ones, zeros = torch.ones(spec.batch, 1), torch.zeros(spec.batch, 1)
    for idx in _batches(spec, len(x_all)):
        real = _flip(x_all[idx], g=g)
        fake = gen.module(torch.randn(spec.batch, nz, generator=g))
        d_loss = F.binary_cross_entropy_with_logits(disc.module(real), ones) + F.binary_cross_entropy_with_logits(
            disc.module(fake.detach()), zeros
        )
        disc.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        disc.optimizer.step()
        g_loss = F.binary_cross_entropy_with_logits(disc.module(fake), ones)
        gen.optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        gen.optimizer.step()
        losses.append((d_loss + g_loss).item())
    gen.module.eval()
    disc.module.eval()
    return [gen, disc], losses


def example_input(spec: ModelSpec, role: str) -> torch.Tensor:
    """A zero input of the shape ``role`` of ``spec`` takes (for ONNX export)."""
    if role == "generator":
        return torch.zeros(1, arch_kwargs(spec, role)[1].get("nz", 32))
    size = spec.size // 2 if spec.family == "srnet" else spec.size
    return torch.zeros(1, CHANNELS[spec.data_type], size, size)


def kernel_layers(state: dict, module: nn.Module) -> list[np.ndarray]:
    """The ``(n, 9)`` kernels of every 3x3 ``nn.Conv2d`` of ``module``, taken from ``state``."""
    names = [n for n, m in module.named_modules() if type(m) is nn.Conv2d and tuple(m.kernel_size) == (3, 3)]
    return [state[f"{n}.weight"].detach().float().reshape(-1, 9).numpy() for n in names]
