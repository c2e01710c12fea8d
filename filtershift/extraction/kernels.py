"""From convolution weights to stored 3x3 kernels (docs/design.md §2). Pure numpy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from filtershift.extraction.depth import dense_rank, depth_decile, relative_depth
from filtershift.types import ConvWeight, Layer, ModelKernels


def as_float32(weight: np.ndarray) -> np.ndarray:
    """Cast fp16 / bf16 / fp64 weights to float32 (bfloat16 arrives as ``ml_dtypes.bfloat16`` or
    as a float32 view already)."""
    if weight.dtype == np.float32:
        return weight
    if weight.dtype.kind not in "fV" and weight.dtype.name != "bfloat16":
        raise TypeError(f"convolution weights must be floating point, got {weight.dtype}")
    return weight.astype(np.float32)


def kernel_rows(weight: np.ndarray) -> np.ndarray:
    """``(out, in/groups, 3, 3)`` -> C-ordered ``(out * in/groups, 9)`` float32 rows."""
    w = as_float32(np.asarray(weight))
    return np.ascontiguousarray(w.reshape(-1, w.shape[2] * w.shape[3]))


def model_kernels(convs: Sequence[ConvWeight]) -> ModelKernels:
    """Assign conv indices over ALL regular convolutions, keep the 3x3 ones, count every shape."""
    indices, n_conv = dense_rank([c.level for c in convs])
    counts: Counter[str] = Counter()
    layers = []
    for conv, conv_index in zip(convs, indices):
        out_c, in_per_group, kh, kw = conv.weight.shape
        counts[f"{kh}x{kw}"] += out_c * in_per_group
        if (kh, kw) != (3, 3):
            continue
        layers.append(
            Layer(
                name=conv.name,
                conv_index=conv_index,
                n_conv=n_conv,
                depth=relative_depth(conv_index, n_conv),
                depth_decile=depth_decile(conv_index, n_conv),
                in_channels=in_per_group,
                out_channels=out_c,
                groups=conv.groups,
                kernels=kernel_rows(conv.weight),
            )
        )
    return ModelKernels(layers=tuple(layers), n_conv=n_conv, kernel_counts=dict(sorted(counts.items())))
