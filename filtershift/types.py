"""Small frozen data types shared by readers, extraction and storage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ConvWeight:
    """One regular 2-D convolution as a reader found it.

    ``weight`` has shape ``(out, in / groups, kh, kw)`` in the source dtype; ``level`` orders the
    layer in execution (registration position for PyTorch, longest-path level for ONNX graphs;
    equal levels are parallel layers and share a ``conv_index``).
    """

    name: str
    level: int
    weight: np.ndarray
    groups: int = 1


@dataclass(frozen=True)
class Layer:
    """One stored 3x3 convolution layer: its metadata and its float32 ``(n, 9)`` kernels."""

    name: str
    conv_index: int
    n_conv: int
    depth: float
    depth_decile: int
    in_channels: int
    out_channels: int
    groups: int
    kernels: np.ndarray

    @property
    def n_filters(self) -> int:
        return int(self.kernels.shape[0])


@dataclass(frozen=True)
class ModelKernels:
    """What one checkpoint contributes: its 3x3 layers, and counts of every kernel shape seen."""

    layers: tuple[Layer, ...]
    n_conv: int
    kernel_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_filters(self) -> int:
        return sum(layer.n_filters for layer in self.layers)
