"""What a zoo build will train and write: a frozen, printable plan, built before any training.

:func:`plan_zoo` turns ``(size, seed)`` into a tuple of :class:`ModelSpec`; the same arguments
give the same plan. Pure Python: no torch, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from filtershift.zoo.datasets import TASKS_BY_DATA_TYPE

SIZES = ("tiny", "small", "large")
FORMATS = ("torch", "checkpoint", "safetensors", "torchscript", "onnx")
# the order formats are assigned in; TorchScript is rarer (each export starts a fresh interpreter)
ROTATION = ("torch", "checkpoint", "safetensors", "onnx", "torch", "torchscript", "safetensors", "checkpoint")
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
    """Sizes of one zoo: image side, training set size, steps, and the model grid.

    ``classifiers`` and ``dense`` list ``(family, width, n_seeds)``; each classifier entry is trained
    on every data type, each dense entry (U-Net, detection, super-resolution, DCGAN) on the data types
    that have its target. ``wide`` lists ``(family, width, steps)``: wide models trained for fewer steps.
    """

    image: int
    n_train: int
    steps: int
    classifiers: tuple[tuple[str, int, int], ...]
    dense: tuple[tuple[str, int, int], ...]
    wide: tuple[tuple[str, int, int], ...] = ()
    oversized: tuple[int, int, int] = (32, 32, 100)  # (width, n_train, steps) of a 9-layer VGG
    data_types: tuple[str, ...] = tuple(TASKS_BY_DATA_TYPE)


_DENSE = ("unet", "detnet", "srnet", "dcgan")
PROFILES = {
    "tiny": Profile(
        image=16, n_train=128, steps=80,
        classifiers=(("vgg", 8, 2), ("resnet", 8, 1), ("mobilenet", 8, 1)),
        dense=tuple((f, 8, 1) for f in _DENSE),
        oversized=(16, 16, 80), data_types=("natural", "medical"),
    ),
    "small": Profile(
        image=16, n_train=512, steps=200,
        classifiers=(("vgg", 8, 2), ("vgg", 16, 1), ("resnet", 8, 1), ("mobilenet", 8, 1)),
        dense=tuple((f, 8, 1) for f in _DENSE),
    ),
    "large": Profile(
        image=32, n_train=1024, steps=300,
        classifiers=(("vgg", 8, 4), ("vgg", 16, 2), ("vgg", 32, 2), ("resnet", 8, 4), ("resnet", 16, 2),
                     ("resnet", 32, 2), ("mobilenet", 16, 3), ("mobilenet", 32, 2)),
        dense=(("unet", 8, 2), ("unet", 16, 2), ("detnet", 12, 3), ("srnet", 16, 3), ("srnet", 32, 1),
               ("dcgan", 8, 2), ("dcgan", 16, 1)),
        wide=(("vgg", 128, 40), ("resnet", 128, 40), ("vgg", 192, 25), ("resnet", 192, 25), ("vgg", 256, 20),
              ("resnet", 256, 20)),
        oversized=(64, 32, 100),
    ),
}


def plan_zoo(size: str = "small", seed: int = 0) -> tuple[ModelSpec, ...]:
    """Every training task of a zoo of ``size`` (``tiny``, ``small`` or ``large``) from ``seed``.

    Classifiers (VGG, ResNet, MobileNet) on every data type, U-Net, detection, super-resolution and
    DCGAN on the data types that have those targets, wide models trained for fewer steps (``large``)
    and one over-sized VGG on a tiny data set. Untrained controls: the initialisation of the first
    VGG of every data type and of the first model of every other family. Output formats rotate over
    :data:`ROTATION`; every fifth model also gets an fp16 copy.
    """
    if size not in PROFILES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    p = PROFILES[size]
    base = dict(size=p.image, n_train=p.n_train, data_seed=seed, steps=p.steps)
    specs: list[ModelSpec] = []

    def add(family: str, data_type: str, width: int, k: int, **kwargs) -> None:
        name = f"{family}-{data_type}-w{width}-s{k}"
        # controls: the first VGG of each data type, the first model of each other family
        same = [s for s in specs if s.family == family and (family != "vgg" or s.data_type == data_type)]
        hp = dict(optimizer="sgd", lr=0.05) if family == "resnet" else dict(lr=5e-4 if family == "dcgan" else 2e-3)
        hp["blocks"] = 1 if family == "resnet" else 2
        specs.append(ModelSpec(name=name, family=family, task=TASK_OF_FAMILY[family], data_type=data_type,
                               width=width, seed=seed * 1000 + len(specs), control=not same,
                               **{**base, **hp, **kwargs}))

    for data_type in p.data_types:
        for family, width, n_seeds in p.classifiers:
            for k in range(n_seeds):
                add(family, data_type, width, k)
        for family, width, n_seeds in p.dense:
            if TASK_OF_FAMILY[family] in TASKS_BY_DATA_TYPE[data_type]:
                for k in range(n_seeds):
                    add(family, data_type, width, k)
    for i, (family, width, steps) in enumerate(p.wide):
        data_type = p.data_types[i % len(p.data_types)]
        add(family, data_type, width, 0, steps=steps, batch=16, note=f"wide: trained {steps} steps only")
    width, n_train, steps = p.oversized
    # SGD with strong weight decay on a handful of images: most layers collapse to a few sparse,
    # low-entropy filters (the "degenerated layers" of over-parameterised models)
    add("vgg", p.data_types[0], width, 9, blocks=3, n_train=n_train, steps=steps, batch=16, optimizer="sgd", lr=0.1,
        weight_decay=0.1,
        note=f"over-sized: width {width}, 9 conv layers, on {n_train} images")
    return tuple(
        replace(s, format=ROTATION[i % len(ROTATION)], fp16_copy=(i % 5 == 2)) for i, s in enumerate(specs)
    )
