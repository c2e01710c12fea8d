"""A small synthetic filter database with known phenotypes, for tests, the notebook and benchmarks.

Models differ in task, data type, family and data set, and each layer is drawn from one of three
generators whose bivariate coefficient plots look like the paper's phenotypes (Fig. 5):

- ``sun``: i.i.d. Gaussian weights (a round, centred blob);
- ``spikes``: copies of three prototype filters with a random sign and a 1 % jitter (a few
  discrete points);
- ``symbols``: four sparse prototypes with 20 % noise and no sign flip (several broad,
  off-centre modes).

:func:`synthetic_layers` is pure and seeded; :func:`write_synthetic_database` writes it with
:func:`filtershift.store.write_database` and :func:`analyze_synthetic` runs the analysis on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

PHENOTYPES = ("sun", "spikes", "symbols")

# name, task, data_type, dataset, family
MODELS = (
    ("vgg-a", "classification", "natural", "shapes", "vgg"),
    ("vgg-b", "classification", "natural", "textures", "vgg"),
    ("resnet-a", "classification", "medical", "cells", "resnet"),
    ("resnet-b", "classification", "medical", "cells", "resnet"),
    ("unet-a", "segmentation", "natural", "shapes", "unet"),
    ("unet-b", "segmentation", "medical", "cells", "unet"),
    ("dcgan-g", "generation", "natural", "shapes", "dcgan"),
    ("dcgan-d", "discrimination", "fractal", "fractals", "dcgan"),
)
N_CONV = 6


def layer_phenotype(task: str, data_type: str, conv_index: int) -> str:
    """The generator of a synthetic layer: GANs spike, medical models' deep layers are symbols."""
    if task in ("generation", "discrimination") and conv_index > 0:
        return "spikes"
    if data_type == "medical" and conv_index >= 3:
        return "symbols"
    return "sun"


def draw_filters(phenotype: str, n: int, rng: np.random.Generator, scale: float = 0.1) -> np.ndarray:
    """``n`` 3x3 filters (rows of 9, float32) drawn from the named phenotype generator."""
    if phenotype == "sun":
        w = rng.normal(0.0, 1.0, (n, 9))
    elif phenotype == "spikes":
        protos = rng.normal(0.0, 1.0, (3, 9))
        w = protos[rng.integers(0, 3, n)] * rng.choice([-1.0, 1.0], (n, 1))
        w += rng.normal(0.0, 0.01, (n, 9))
    elif phenotype == "symbols":
        protos = rng.normal(0.0, 1.0, (4, 9))
        protos[np.abs(protos) < 0.8] = 0.0  # sparse prototypes
        w = protos[rng.integers(0, 4, n)] + rng.normal(0.0, 0.2, (n, 9))
    else:
        raise ValueError(f"unknown phenotype {phenotype!r}; one of {', '.join(PHENOTYPES)}")
    return (w * scale).astype(np.float32)


def synthetic_layers(seed: int = 0, filters_per_layer: int = 1024) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """``(filters (N, 9) float32, models, layers)`` of the synthetic database (pure, seeded).

    ``layers`` has the store's columns plus ``phenotype`` (the generator used, the ground truth of
    the phenotype tests).
    """
    rng = np.random.default_rng(seed)
    models, layers, blocks = [], [], []
    start = 0
    for model_id, (name, task, data_type, dataset, family) in enumerate(MODELS):
        for conv_index in range(N_CONV):
            n = filters_per_layer * (1 + conv_index % 2)
            pheno = layer_phenotype(task, data_type, conv_index)
            blocks.append(draw_filters(pheno, n, rng, scale=0.2 / (1 + conv_index)))
            depth = conv_index / (N_CONV - 1)
            layers.append({
                "layer_id": len(layers), "model_id": model_id, "name": f"features.{conv_index}",
                "conv_index": conv_index, "n_conv": N_CONV, "depth": depth,
                "depth_decile": max(int(np.ceil(round(10 * depth, 9))) - 1, 0),
                "in_channels": n // 32, "out_channels": 32, "groups": 1,
                "start": start, "stop": start + n, "n_filters": n, "phenotype": pheno,
            })
            start += n
        models.append({
            "model_id": model_id, "name": name, "path": f"{name}.pt", "format": "torch", "sha256": "0" * 64,
            "task": task, "data_type": data_type, "dataset": dataset, "family": family,
            "n_layers": N_CONV, "n_filters": sum(r["n_filters"] for r in layers if r["model_id"] == model_id),
            "status": "ok", "error": "",
        })
    layers_df = pd.DataFrame(layers).astype({
        "layer_id": "int32", "model_id": "int32", "conv_index": "int32", "n_conv": "int32",
        "depth_decile": "int8", "in_channels": "int32", "out_channels": "int32", "groups": "int32",
        "start": "int64", "stop": "int64", "n_filters": "int64",
    })
    models_df = pd.DataFrame(models).astype({"model_id": "int32", "n_layers": "int64", "n_filters": "int64"})
    return np.concatenate(blocks), models_df, layers_df


def write_synthetic_database(path: str | os.PathLike, seed: int = 0, filters_per_layer: int = 1024, chunk_rows: int = 16_384):
    """Write the synthetic database to ``path`` (a new folder); returns the opened database."""
    from filtershift.store import write_database

    filters, models, layers = synthetic_layers(seed, filters_per_layer)
    return write_database(Path(path), filters, models, layers, chunk_rows=chunk_rows)


def analyze_synthetic(db, name: str = "scaled", by: tuple[str, ...] = ("task", "data_type", "depth_decile", "model", "task+data_type"), **plan_kwargs):
    """Run the analysis over ``db`` (threaded or synchronous dask, whatever is current)."""
    from filtershift.analysis.plan import make_plan
    from filtershift.analysis.compute import analyze

    plan = make_plan(db.models, db.layers, db.chunk_rows, by=list(by), **plan_kwargs)
    return analyze(db, plan, name, parameters={"by": ",".join(by), **plan_kwargs}, log=None)
