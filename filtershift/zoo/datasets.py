"""Procedural image data sets, one per data type, generated on the fly from a seed (no downloads).

Every generator is pure numpy and returns a :class:`Sample`: images ``(n, C, H, W)`` float32
(standardised over the whole set), a class label per image, a segmentation mask and a heat map of
object centres per image. Which targets are meaningful depends on the data type (see
:data:`TASKS_BY_DATA_TYPE`); the others are zeros.

- ``natural``   1/f-spectrum colour fields with a random edge; the label is the shape of one
                pasted object (disk, square, ring, cross), the mask is that object.
- ``texture``   coloured sine/square gratings with noise; the label is the orientation.
- ``formula``   FractalDB-style iterated-function-system fractals; the label is the system.
- ``medical``   CT-like slices (body, bone ring, organs, noise); the label says whether a small
                bright lesion is present, the mask is the lesion.
- ``seismic``   layered, dipping, folded reflectivity sections; the label is the fault dip (none,
                left, right), the mask is the fault zone.
- ``astronomy`` point sources on a dark sky with a faint extended object; the label is the kind of
                extended object (none, round, elongated), the mask marks the sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DATA_TYPES = ("natural", "texture", "formula", "medical", "seismic", "astronomy")
CHANNELS = {"natural": 3, "texture": 3, "formula": 3, "medical": 1, "seismic": 1, "astronomy": 1}
N_CLASSES = {"natural": 4, "texture": 4, "formula": 6, "medical": 2, "seismic": 3, "astronomy": 3}
TASKS_BY_DATA_TYPE = {
    "natural": ("classification", "segmentation", "detection", "generation", "super-resolution"),
    "texture": ("classification", "generation", "super-resolution"),
    "formula": ("classification", "generation"),
    "medical": ("classification", "segmentation", "detection", "generation", "super-resolution"),
    "seismic": ("classification", "segmentation", "super-resolution"),
    "astronomy": ("classification", "segmentation", "detection", "generation"),
}


@dataclass(frozen=True)
class Sample:
    images: np.ndarray  # (n, C, H, W) float32, standardised
    labels: np.ndarray  # (n,) int64
    masks: np.ndarray  # (n, H, W) float32 in {0, 1}
    centers: np.ndarray  # (n, H, W) float32 heat map of object centres, peak 1


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _pink_noise(rng, shape, size: int, alpha) -> np.ndarray:
    """Fields with a 1/f**alpha amplitude spectrum, each scaled to unit std."""
    f = np.fft.fftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    radius[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal(shape + (size, size)))
    alpha = np.asarray(alpha).reshape(alpha.shape + (1,) * (len(shape) + 2 - np.ndim(alpha)))
    field = np.fft.ifft2(spectrum / radius**alpha).real
    field -= field.mean(axis=(-2, -1), keepdims=True)
    return field / (field.std(axis=(-2, -1), keepdims=True) + 1e-8)


def _gauss(yy, xx, cy, cx, sigma) -> np.ndarray:
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    size = images.shape[-1]
    f = np.fft.fftfreq(size)
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(images) * kernel).real


def natural(n: int, size: int, rng) -> tuple:
    yy, xx = _grid(size)
    alpha = rng.uniform(1.0, 2.0, size=(n, 1))
    base = _pink_noise(rng, (n, 3), size, alpha)
    mix = rng.normal(0, 0.4, size=(n, 3, 3)) + np.eye(3)
    images = np.einsum("nij,njhw->nihw", mix, base) * 0.5
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    offset = rng.uniform(-0.3, 0.3, size=(n, 1, 1)) * size
    edge = ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle) > offset).astype(np.float32)
    images += edge[:, None] * rng.normal(0, 0.8, size=(n, 3, 1, 1))
    labels = rng.integers(0, 4, size=n)
    cy, cx = (rng.uniform(0.3, 0.7, size=(2, n, 1, 1)) * size)
    r = rng.uniform(0.15, 0.28, size=(n, 1, 1)) * size
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    dist = np.sqrt(dy**2 + dx**2)
    shapes = np.stack([
        dist < r,
        np.maximum(dy, dx) < 0.85 * r,
        (dist < r) & (dist > 0.55 * r),
        ((dx < 0.3 * r) & (dy < r)) | ((dy < 0.3 * r) & (dx < r)),
    ])
    masks = shapes[labels, np.arange(n)].astype(np.float32)
    colour = rng.normal(0, 1, size=(n, 3, 1, 1))
    colour += np.sign(colour) * 1.0
    images = images * (1 - masks[:, None]) + masks[:, None] * colour
    return images, labels, masks, _gauss(yy, xx, cy, cx, 1.5)


def texture(n: int, size: int, rng) -> tuple:
    yy, xx = _grid(size)
    labels = rng.integers(0, 4, size=n)
    theta = (labels * np.pi / 4 + rng.uniform(-0.15, 0.15, size=n)).reshape(n, 1, 1)
    freq = rng.uniform(2.0, 6.0, size=(n, 1, 1)) / size
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    square = rng.random(size=(n, 1, 1)) < 0.5
    wave = np.where(square, np.sign(wave), wave)
    c0, c1 = rng.normal(0, 1, size=(2, n, 3, 1, 1))
    images = c0 + (c1 - c0) * (wave[:, None] + 1) / 2
    images += 0.3 * rng.standard_normal(images.shape) + 0.3 * _pink_noise(rng, (n, 3), size, np.full((n, 1), 1.5))
    zeros = np.zeros((n, size, size), np.float32)
    return images, labels, zeros, zeros


def _ifs_systems(n_classes: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random contractive affine maps per category, as in FractalDB (fixed per seed)."""
    rng = np.random.default_rng(seed)
    systems = []
    for _ in range(n_classes):
        k = int(rng.integers(2, 5))
        a = rng.uniform(-1, 1, size=(k, 2, 2))
        # scale each map to a contraction (spectral norm 0.35..0.8)
        norms = np.linalg.norm(a, ord=2, axis=(1, 2))
        a *= (rng.uniform(0.35, 0.8, size=k) / norms)[:, None, None]
        b = rng.uniform(-1, 1, size=(k, 2))
        p = np.abs(np.linalg.det(a)) + 0.02
        systems.append((a, b, p / p.sum()))
    return systems


def formula(n: int, size: int, rng, seed: int = 0) -> tuple:
    n_classes = N_CLASSES["formula"]
    systems = _ifs_systems(n_classes, seed=10_000 + seed)
    labels = rng.integers(0, n_classes, size=n)
    n_points, n_steps, burn_in = 96, 24, 6
    images = np.zeros((n, size, size), np.float32)
    for c, (a, b, p) in enumerate(systems):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        jitter = 1 + rng.normal(0, 0.05, size=(idx.size, 1, 1, 1))
        pts = rng.uniform(-1, 1, size=(idx.size, n_points, 2))
        trail = []
        for step in range(n_steps):
            choice = rng.choice(len(p), size=(idx.size, n_points), p=p)
            pts = np.einsum("mpij,mpj->mpi", a[choice] * jitter, pts) + b[choice]
            if step >= burn_in:
                trail.append(pts)
        pts = np.concatenate(trail, axis=1)
        lo, hi = np.percentile(pts, [1, 99], axis=1, keepdims=True)
        pix = np.clip(((pts - lo) / (hi - lo + 1e-6) * (size - 1)).round().astype(np.int64), 0, size - 1)
        flat = images.reshape(n, -1)
        np.add.at(flat, (np.repeat(idx, pix.shape[1]), (pix[..., 1] * size + pix[..., 0]).ravel()), 1.0)
    flip = rng.random(size=n) < 0.5
    images[flip] = images[flip, :, ::-1]
    images = np.log1p(images)
    colour = rng.uniform(0.3, 1.0, size=(n, 3, 1, 1))
    images = images[:, None] * colour + 0.1 * rng.standard_normal((n, 3, size, size))
    zeros = np.zeros((n, size, size), np.float32)
    return images, labels, zeros, zeros


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


def medical(n: int, size: int, rng) -> tuple:
    yy, xx = _grid(size)
    c = size / 2 + rng.normal(0, 0.03 * size, size=(2, n, 1, 1))
    ry, rx = rng.uniform(0.33, 0.46, size=(2, n, 1, 1)) * size
    body = _ellipse(yy, xx, c[0], c[1], ry, rx)
    images = 0.3 * (body < 1) + 0.7 * ((body < 1) & (body > 0.8))
    for _ in range(3):
        oy, ox = c + rng.uniform(-0.4, 0.4, size=(2, n, 1, 1)) * np.stack([ry, rx])
        organ = _ellipse(yy, xx, oy, ox, *(rng.uniform(0.1, 0.25, size=(2, n, 1, 1)) * size))
        images += rng.uniform(-0.15, 0.25, size=(n, 1, 1)) * ((organ < 1) & (body < 0.8))
    labels = rng.integers(0, 2, size=n)
    ly, lx = c + rng.uniform(-0.45, 0.45, size=(2, n, 1, 1)) * np.stack([ry, rx])
    lr = rng.uniform(0.05, 0.1, size=(n, 1, 1)) * size
    masks = ((_ellipse(yy, xx, ly, lx, lr, lr) < 1) & (labels[:, None, None] == 1)).astype(np.float32)
    images = images + 0.35 * masks
    images = _blur(images, 0.6) + 0.05 * rng.standard_normal(images.shape)
    centers = _gauss(yy, xx, ly, lx, 1.5) * (labels[:, None, None] == 1)
    return images[:, None], labels, masks, centers


def _ricker(length: int, width: float) -> np.ndarray:
    t = np.arange(length) - length // 2
    a = (t / width) ** 2
    return (1 - 2 * a) * np.exp(-a)


def seismic(n: int, size: int, rng) -> tuple:
    yy, xx = _grid(size)
    depth = 4 * size
    refl = rng.standard_normal((n, depth)) * (rng.random((n, depth)) < 0.25)
    wavelet = _ricker(15, rng.uniform(1.2, 2.2))
    traces = np.stack([np.convolve(r, wavelet, mode="same") for r in refl])
    dip = rng.uniform(-0.4, 0.4, size=(n, 1, 1))
    fold = rng.uniform(0, 3, size=(n, 1, 1)) * np.sin(2 * np.pi * xx / size * rng.uniform(0.5, 1.5, size=(n, 1, 1)))
    z = yy + dip * xx + fold + 1.5 * size
    labels = rng.integers(0, 3, size=n)
    x0 = rng.uniform(0.3, 0.7, size=(n, 1, 1)) * size
    slope = np.where(labels == 1, -1.0, 1.0).reshape(n, 1, 1) * rng.uniform(0.3, 0.7, size=(n, 1, 1))
    signed = xx - (x0 + slope * (yy - size / 2))
    throw = rng.uniform(3, 8, size=(n, 1, 1)) * (labels[:, None, None] > 0)
    z = z + throw * (signed > 0)
    lo = np.clip(np.floor(z).astype(np.int64), 0, depth - 2)
    w = z - np.floor(z)
    flat = traces[:, None, :]
    images = (1 - w) * np.take_along_axis(traces, lo.reshape(n, -1), 1).reshape(n, size, size) + w * np.take_along_axis(
        traces, (lo + 1).reshape(n, -1), 1
    ).reshape(n, size, size)
    del flat
    images += 0.1 * rng.standard_normal(images.shape)
    masks = ((np.abs(signed) < 1.5) & (labels[:, None, None] > 0)).astype(np.float32)
    return images[:, None], labels, masks, np.zeros_like(masks)


def astronomy(n: int, size: int, rng) -> tuple:
    yy, xx = _grid(size)
    k = 8
    present = rng.random((n, k, 1, 1)) < 0.6
    sy, sx = rng.uniform(2, size - 2, size=(2, n, k, 1, 1))
    flux = np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=(n, k, 1, 1))) * present
    psf = rng.uniform(0.7, 1.1, size=(n, 1, 1, 1))
    stars = (flux * _gauss(yy, xx, sy, sx, psf)).sum(axis=1)
    labels = rng.integers(0, 3, size=n)
    gy, gx = rng.uniform(0.3, 0.7, size=(2, n, 1, 1)) * size
    angle = rng.uniform(0, np.pi, size=(n, 1, 1))
    u = (xx - gx) * np.cos(angle) + (yy - gy) * np.sin(angle)
    v = -(xx - gx) * np.sin(angle) + (yy - gy) * np.cos(angle)
    scale = rng.uniform(0.08, 0.14, size=(n, 1, 1)) * size
    ratio = np.where(labels == 2, 3.0, 1.0).reshape(n, 1, 1)
    galaxy = 0.4 * np.exp(-np.sqrt((u / scale) ** 2 + (v * ratio / scale) ** 2)) * (labels[:, None, None] > 0)
    images = stars + galaxy + 0.03 * rng.standard_normal((n, size, size))
    masks = ((stars + galaxy) > 0.15).astype(np.float32)
    centers = (present * _gauss(yy, xx, sy, sx, 1.0)).max(axis=1)
    return np.arcsinh(images / 0.1)[:, None], labels, masks, centers


GENERATORS = {
    "natural": natural,
    "texture": texture,
    "formula": formula,
    "medical": medical,
    "seismic": seismic,
    "astronomy": astronomy,
}


@lru_cache(maxsize=16)
def make_dataset(data_type: str, n: int, size: int, seed: int) -> Sample:
    """``n`` images of ``size`` x ``size`` pixels of ``data_type``, the same for the same arguments.

    Images are standardised over the whole set (zero mean, unit standard deviation).
    """
    if data_type not in GENERATORS:
        raise ValueError(f"unknown data type {data_type!r}; known: {', '.join(DATA_TYPES)}")
    rng = np.random.default_rng([seed, DATA_TYPES.index(data_type)])
    kwargs = {"seed": seed} if data_type == "formula" else {}
    images, labels, masks, centers = GENERATORS[data_type](n, size, rng, **kwargs)
    images = np.asarray(images, np.float64)
    images = (images - images.mean()) / (images.std() + 1e-8)
    return Sample(
        images=np.ascontiguousarray(images, np.float32),
        labels=np.asarray(labels, np.int64),
        masks=np.ascontiguousarray(masks, np.float32),
        centers=np.ascontiguousarray(centers, np.float32),
    )


def dataset_name(data_type: str, n: int, size: int, seed: int) -> str:
    """The ``dataset`` column of a model trained on :func:`make_dataset` of these arguments."""
    return f"procedural-{data_type}-{size}px-n{n}-s{seed}"
