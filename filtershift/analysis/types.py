"""Small frozen data types of an analysis: the fitted PCA, the shared bins, grouped histograms and
the whole output of one analysis.

Pure values (numpy and pandas): the analysis computes them, :mod:`filtershift.analysis.results`
writes and reads them, figures draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ALL_GROUP = "all"  # the one group of every analysed filter (its 2-D histograms: hist2d_all.npz)


def project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """PCA coefficients ``c = (x - mean) @ components.T`` of filters ``x`` (n, 9): the one projection."""
    return (x - mean) @ components.T


@dataclass(frozen=True)
class PCAResult:
    """A fitted PCA: ``f = mean + sum_i c_i components[i]``."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    n_filters: int
    scaling: str
    method: str = "covariance"
    fit_on: str | None = None
    n_analysed: int | None = None

    def project(self, x: np.ndarray) -> np.ndarray:
        """The coefficients of filters ``x`` (n, 9), already scaled as this PCA's ``scaling`` says."""
        return project(x, self.mean, self.components)

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance": self.explained_variance.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "n_filters": int(self.n_filters),
            "scaling": self.scaling,
            "method": self.method,
            "fit_on": self.fit_on,
            "n_analysed": None if self.n_analysed is None else int(self.n_analysed),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PCAResult":
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float64),
            components=np.asarray(d["components"], dtype=np.float64),
            explained_variance=np.asarray(d["explained_variance"], dtype=np.float64),
            explained_variance_ratio=np.asarray(d["explained_variance_ratio"], dtype=np.float64),
            n_filters=int(d["n_filters"]),
            scaling=d["scaling"],
            method=d.get("method", "covariance"),
            fit_on=d.get("fit_on"),
            n_analysed=d.get("n_analysed"),
        )


@dataclass(frozen=True)
class Bins:
    """The shared bins: 1-D ``edges`` (n_bins + 1) and the per-component 2-D ``edges_2d``
    (9, n_bins_2d + 1) with the component ``pairs``."""

    edges: np.ndarray
    edges_2d: np.ndarray
    pairs: tuple[tuple[int, int], ...]

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "min": float(self.edges[0]),
            "max": float(self.edges[-1]),
            "n_bins": self.n_bins,
            "edges_2d": self.edges_2d.tolist(),
            "n_bins_2d": len(self.edges_2d) - 1,
            "pairs": [list(p) for p in self.pairs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Bins":
        return cls(
            edges=np.asarray(d["edges"], dtype=np.float64),
            edges_2d=np.asarray(d["edges_2d"], dtype=np.float64),
            pairs=tuple(tuple(int(i) for i in p) for p in d["pairs"]),
        )


@dataclass(frozen=True)
class GroupHistograms:
    """Coefficient histograms of one grouping: ``counts`` and ``probabilities`` are (G, 9, n_bins)."""

    by: str
    labels: tuple[str, ...]
    counts: np.ndarray
    probabilities: np.ndarray
    edges: np.ndarray
    n_filters: np.ndarray
    n_models: np.ndarray


@dataclass(frozen=True)
class GroupHistograms2D:
    """Joint histograms of component pairs: ``counts`` is (G, P, B2, B2); for pair ``(i, j)`` axis 2
    bins c_i over ``edges[i]`` and axis 3 bins c_j over ``edges[j]`` (``edges`` is (9, B2 + 1))."""

    by: str
    labels: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]
    counts: np.ndarray
    edges: np.ndarray


@dataclass(frozen=True, eq=False)
class GroupingOutput:
    """What one grouping yields: its histograms, the D matrix (square, labelled), the group counts
    and, with a bootstrap, the confidence intervals of D (long table)."""

    histograms: GroupHistograms
    shift: pd.DataFrame
    counts: pd.DataFrame
    shift_ci: pd.DataFrame | None = None


@dataclass(frozen=True, eq=False)
class AnalysisOutput:
    """Everything one analysis writes to ``DB/results/NAME/`` (see the layout in
    :mod:`filtershift.analysis.results`); ``provenance`` is written last."""

    pca: PCAResult
    bins: Bins
    layer_ids: np.ndarray  # (L,)
    layer_counts: np.ndarray  # (L, 9, n_bins)
    model_ids: np.ndarray  # (M,)
    model_counts: np.ndarray  # (M, 9, n_bins)
    decile_counts: np.ndarray  # (M, 10, 9, n_bins)
    groupings: tuple[GroupingOutput, ...]
    histograms_2d: tuple[GroupHistograms2D, ...]
    layer_stats: pd.DataFrame
    model_depth_range: pd.DataFrame
    model_pairs: pd.DataFrame
    models: pd.DataFrame
    provenance: dict[str, Any]
