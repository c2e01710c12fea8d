"""What a zoo build will train and write: a frozen, printable plan, built before any training.

:func:`plan_zoo` turns ``(size, seed)`` into a tuple of :class:`ModelSpec`; the same arguments
give the same plan. Pure Python: no torch, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from filtershift.zoo.datasets import TASKS_BY_DATA_TYPE

SIZES = ("tiny", "small", "large")
FORMATS = ("torch", "checkpoint", "safetensors", "torchscript", "onnx")
TASK_OF_FAMILY = {
    "vgg": "classification",
    "resnet": "classification",
    "mobilenet": "classification",
    "unet": "segmentation",
    "detnet": "detection",
    "srnet": "super-resolution",
    "dcgan": "generation",
}


@dataclass(frozen=True)
class ModelSpec:
    """One training task: a model (or a DCGAN generator/discriminator pair) and how to save it."""

    name: str
    family: str
    task: str
    data_type: str
    width: int
    seed: int
    steps: int
    blocks: int = 2
    size: int = 32  # image side, pixels
    n_train: int = 512
    data_seed: int = 0
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    format: str = "torch"
    fp16_copy: bool = False
    control: bool = False  # also save the random initialisation as an untrained control
    note: str = ""


@dataclass(frozen=True)
class Profile:
    """Sizes of one zoo: image side, training set size, steps, and the model grid."""

    image: int
    n_train: int
    steps: int
    widths: tuple[int, ...]  # classifier widths; one seed per width, plus extra seeds at the first
    extra_seeds: int
    dense_width: int  # U-Net, detection, super-resolution, DCGAN
    dense_seeds: int
    wide: tuple[tuple[str, int, int], ...] = ()  # (family, width, steps): wide models, fewer steps
    oversized: tuple[int, int, int] = (64, 32, 150)  # (width, n_train, steps)
    data_types: tuple[str, ...] = tuple(TASKS_BY_DATA_TYPE)


PROFILES = {
    "tiny": Profile(image=16, n_train=128, steps=30, widths=(4,), extra_seeds=0, dense_width=4, dense_seeds=1,
                    oversized=(24, 16, 30), data_types=("natural", "medical", "formula")),
    "small": Profile(image=16, n_train=512, steps=200, widths=(8, 16), extra_seeds=1, dense_width=8, dense_seeds=1),
    "large": Profile(image=32, n_train=1024, steps=300, widths=(8, 16, 24, 32), extra_seeds=3, dense_width=12,
                     dense_seeds=3, wide=(("vgg", 128, 40), ("resnet", 128, 40), ("vgg", 192, 25), ("resnet", 192, 25),
                                          ("vgg", 256, 20), ("resnet", 256, 20)), oversized=(128, 32, 200)),
}


def plan_zoo(size: str = "small", seed: int = 0) -> tuple[ModelSpec, ...]:
    """Every training task of a zoo of ``size`` (``tiny``, ``small`` or ``large``) from ``seed``.

    Classifiers (VGG, ResNet, MobileNet) on every data type at each width, with extra seeds at the
    first width; U-Net, detection, super-resolution and DCGAN on the data types that have those
    targets; wide models trained for fewer steps (``large``); one over-sized VGG on a tiny data set.
    The first model of each (family, data type) also saves its initialisation as a control. Output
    formats rotate over :data:`FORMATS`; every fifth model also gets an fp16 copy.
    """
    if size not in PROFILES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    p = PROFILES[size]
    base = dict(size=p.image, n_train=p.n_train, data_seed=seed, steps=p.steps)
    specs: list[ModelSpec] = []

    def add(family: str, data_type: str, width: int, k: int, **kwargs) -> None:
        model_seed = seed * 1000 + len(specs)
        name = f"{family}-{data_type}-w{width}-s{k}"
        first = not any(s.family == family and s.data_type == data_type for s in specs)
        specs.append(ModelSpec(name=name, family=family, task=TASK_OF_FAMILY[family], data_type=data_type,
                               width=width, seed=model_seed, control=first, **{**base, **kwargs}))

    for data_type in p.data_types:
        for family in ("vgg", "resnet", "mobilenet"):
            blocks = 1 if family == "resnet" else 2
            for i, width in enumerate(p.widths):
                for k in range(1 + (p.extra_seeds if i == 0 else 0)):
                    if family == "resnet" and width > 16 and size == "small":
                        continue
                    add(family, data_type, width, k, blocks=blocks,
                        optimizer="sgd" if family == "resnet" else "adamw", lr=0.05 if family == "resnet" else 2e-3)
        tasks = TASKS_BY_DATA_TYPE[data_type]
        for family in ("unet", "detnet", "srnet", "dcgan"):
            if TASK_OF_FAMILY[family] not in tasks:
                continue
            for k in range(p.dense_seeds):
                add(family, data_type, p.dense_width, k, lr=5e-4 if family == "dcgan" else 2e-3)
    for i, (family, width, steps) in enumerate(p.wide):
        data_type = p.data_types[i % len(p.data_types)]
        add(family, data_type, width, 0, steps=steps, blocks=1 if family == "resnet" else 2, batch=16,
            optimizer="sgd" if family == "resnet" else "adamw", lr=0.05 if family == "resnet" else 1e-3,
            note=f"wide: trained {steps} steps only")
    width, n_train, steps = p.oversized
    add("vgg", p.data_types[0], width, 9, blocks=3, n_train=n_train, steps=steps, batch=16, weight_decay=5e-2,
        note=f"over-sized: width {width}, 9 conv layers, on {n_train} images")
    return tuple(
        replace(s, format=FORMATS[i % len(FORMATS)], fp16_copy=(i % 5 == 2)) for i, s in enumerate(specs)
    )
