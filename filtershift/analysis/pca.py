"""PCA of filters (docs/design.md §2): full rank, mean-centred, deterministic signs. Pure numpy.

The exact method accumulates, per block, the count, the mean and the centred scatter matrix in
float64 and merges blocks with the pairwise update of Chan, Golub & LeVeque (a numerically stable
form of "XᵀX and column sums"); the covariance's eigendecomposition (``numpy.linalg.eigh``) gives
the components. :func:`fit_incremental` wraps dask-ml's IncrementalPCA for comparison.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from filtershift.analysis.types import PCAResult

N_FEATURES = 9


def row_absmax(x: np.ndarray) -> np.ndarray:
    """max |w| of every row, as a loop over the 9 columns (numpy reductions over a 9-long last
    axis are several times slower than 9 vectorised column operations)."""
    out = np.abs(x[:, 0])
    for k in range(1, x.shape[1]):
        np.maximum(out, np.abs(x[:, k]), out=out)
    return out


def scale_filters(x: np.ndarray, absmax: np.ndarray | None = None) -> np.ndarray:
    """Each row divided by its own max |w| (float64); all-zero rows stay zero (divided by 1)."""
    x = np.asarray(x, dtype=np.float64)
    m = (row_absmax(x) if absmax is None else np.asarray(absmax, dtype=np.float64)).copy()
    m[m == 0] = 1.0
    return x / m[:, None]


def prepare(x: np.ndarray, scaling: str, absmax: np.ndarray | None = None) -> np.ndarray:
    """The analysed form of raw float32 filters: float64, scaled per filter unless ``raw``."""
    return scale_filters(x, absmax) if scaling == "scaled" else np.asarray(x, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Moments:
    """Count, mean and centred scatter ``Σ (x - mean)(x - mean)ᵀ`` of a set of rows, float64."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, d: int = N_FEATURES) -> "Moments":
        return cls(0, np.zeros(d), np.zeros((d, d)))

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return cls.empty(x.shape[1])
        # The column sums as one BLAS product: numpy's mean over axis 0 of a 9-wide array is a slow
        # strided reduction (1.4x for the whole moments of a sub-block, equal to 1e-15).
        mean = (np.ones(len(x)) @ x) / len(x)
        xc = x - mean
        return cls(len(x), mean, xc.T @ xc)

    def merge(self, other: "Moments") -> "Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)


def flip_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its entry of largest magnitude is positive (first such entry on ties)."""
    components = np.array(components, dtype=np.float64)
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def pca_from_moments(m: Moments, scaling: str, fit_on: str | None = None, n_analysed: int | None = None) -> PCAResult:
    """Full-rank PCA from merged moments: covariance ``m2 / (n - 1)``, eigenvectors by decreasing
    eigenvalue (negative round-off clipped to 0)."""
    if m.n < 2:
        raise ValueError(f"a PCA needs at least 2 filters, got {m.n}")
    cov = m.m2 / (m.n - 1)
    cov = (cov + cov.T) / 2
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    components = flip_signs(evecs[:, order].T)
    total = evals.sum()
    ratio = evals / total if total > 0 else np.zeros_like(evals)
    return PCAResult(
        mean=m.mean.copy(), components=components, explained_variance=evals, explained_variance_ratio=ratio,
        n_filters=int(m.n), scaling=scaling, method="covariance", fit_on=fit_on, n_analysed=n_analysed,
    )


def fit_incremental(x, scaling: str, batch_size: int, fit_on: str | None = None, n_analysed: int | None = None) -> PCAResult:
    """dask-ml ``IncrementalPCA`` (9 components) on the analysed form ``x`` (a float64 dask array),
    with our sign convention applied."""
    from dask_ml.decomposition import IncrementalPCA

    ipca = IncrementalPCA(n_components=N_FEATURES, batch_size=batch_size)
    with warnings.catch_warnings():
        # dask-ml's first partial_fit computes the running variance as 0/0 for the empty "previous"
        # batch and then overwrites it (sklearn's _incremental_mean_and_var "zeros" fix-up); the
        # NaN never reaches the components. Only this exact warning is silenced, only here.
        warnings.filterwarnings("ignore", message="invalid value encountered in divide", category=RuntimeWarning)
        ipca.fit(x)
    components = np.asarray(ipca.components_, dtype=np.float64)
    flipped = flip_signs(components)
    return PCAResult(
        mean=np.asarray(ipca.mean_, dtype=np.float64),
        components=flipped,
        explained_variance=np.asarray(ipca.explained_variance_, dtype=np.float64),
        explained_variance_ratio=np.asarray(ipca.explained_variance_ratio_, dtype=np.float64),
        n_filters=int(np.asarray(ipca.n_samples_seen_).ravel()[0]),
        scaling=scaling, method="incremental", fit_on=fit_on, n_analysed=n_analysed,
    )
