"""How long ``filtershift nearest`` takes against an analysis of 1,000 models (a benchmark, not a test).

Builds (once, under DATA) a synthetic database of the wanted number of models from
``filtershift.bench.synthetic`` (its model tables of two seeds, concatenated and cut to size; its
conv-like filters), analyses it by model, then times whole ``nearest`` commands in-process:
``--model`` (a stored model), ``--model --by family``, and ``--checkpoint`` (a plain-torch VGG
checkpoint read through the extraction path). Prints the median of the repeats.

    python benchmarks/nearest_query.py [--data /tmp/filtershift-bench] [--models 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_models(n_models: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models and layers tables of ``n_models`` synthetic models (rows re-tiled from 0)."""
    from filtershift.bench.synthetic import realistic_tables

    model_parts, layer_parts, n = [], [], 0
    for seed in range(8):
        models, layers = realistic_tables(5_900_000, seed)  # the largest N whose models stay small
        models = models.assign(model_id=models["model_id"] + n)
        layers = layers.assign(model_id=layers["model_id"] + n)
        model_parts.append(models)
        layer_parts.append(layers)
        n += len(models)
        if n >= n_models:
            break
    models = pd.concat(model_parts, ignore_index=True).head(n_models)
    layers = pd.concat(layer_parts, ignore_index=True)
    layers = layers[layers["model_id"] < n_models].reset_index(drop=True)
    layers["layer_id"] = np.arange(len(layers), dtype=np.int32)
    stops = np.cumsum(layers["n_filters"].to_numpy(np.int64))
    layers["start"], layers["stop"] = stops - layers["n_filters"].to_numpy(np.int64), stops
    models["name"] = [f"{f}-{i}" for f, i in zip(models["family"], models["model_id"])]
    return models.astype({"model_id": "int32"}), layers.astype({"model_id": "int32"})


def ensure_database(data: Path, n_models: int) -> Path:
    import dask

    from filtershift.bench.synthetic import conv_like, write_synthetic
    from filtershift.store import MODELS_TABLE

    path = data / f"nearest-{n_models}-models"
    if (path / MODELS_TABLE).exists():
        return path
    models, layers = synthetic_models(n_models)
    n_rows = int(layers["stop"].iloc[-1])
    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        write_synthetic(path, models, layers, conv_like, seed=0)
    print(f"wrote {path}: {len(models):,} models, {len(layers):,} layers, {n_rows:,} filters in {time.perf_counter() - t:.0f} s")
    return path


def ensure_analysis(db: Path) -> None:
    from filtershift.analysis.results import find_results
    from filtershift.cli import main

    if find_results(db, "scaled") is None:
        t = time.perf_counter()
        assert main(["analyze", str(db), "--by", "model,family", "--threads", "--no-progress"]) == 0
        print(f"analysed by model and family in {time.perf_counter() - t:.0f} s")


def write_checkpoint(folder: Path) -> Path:
    import torch

    from filtershift.zoo.models import build

    path = folder / "query-vgg.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build("vgg", in_channels=3, n_classes=10, width=64, blocks=3).state_dict(), path)
    return path


def timed(argv: list[str], repeat: int) -> float:
    from filtershift.cli import main

    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/filtershift-bench"))
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    db = ensure_database(args.data, args.models)
    ensure_analysis(db)
    checkpoint = write_checkpoint(args.data)
    model = pd.read_parquet(db / "models.parquet")["name"].iloc[0]
    cases = {
        "--model (1,000 neighbours ranked)": ["--model", model],
        "--model --by family": ["--model", model, "--by", "family"],
        "--checkpoint (VGG, width 64)": ["--checkpoint", str(checkpoint)],
        "--checkpoint --json": ["--checkpoint", str(checkpoint), "--json"],
    }
    print(f"nearest against {db} ({args.models:,} models), median of {args.repeat}:")
    for label, extra in cases.items():
        print(f"  {label:36s} {timed(['nearest', str(db), *extra], args.repeat):6.2f} s")


if __name__ == "__main__":
    main()
