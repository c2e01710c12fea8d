"""``filtershift nearest DB --name RESULTS (--checkpoint PATH [--format F] | --model NAME) [--by BY] [--top K]
[--where EXPR] [--json]``

The edge of :mod:`filtershift.analysis.nearest`: it opens the analysis, reads a checkpoint through
the extraction path (the same readers, 3x3 selection, depth deciles and rows checksum as
``extract``), and prints the neighbour table or its JSON. The filter store is never read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

N_TOP_DEFAULT = 10


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "nearest",
        help="the analysed models (or groups) whose filters are nearest to a model or a checkpoint",
        description="Rank the models (or groups) of an analysis by the distribution shift D from a query: an analysed "
        "model (--model) or any checkpoint (--checkpoint), read, scaled, projected and binned as the analysis did. "
        "Only the analysis's stored PCA, bins and histograms are used; exact weight copies are listed apart.",
    )
    add_query_arguments(parser)
    parser.add_argument("--by", default="model", metavar="BY",
                        help="compare with each model (default) or with groups of models: family, task, data_type, dataset or any model column")
    parser.add_argument("--top", type=int, default=N_TOP_DEFAULT, metavar="K", help="ranked neighbours to list (default %(default)s)")
    parser.add_argument("--where", metavar="EXPR", help="compare only with the analysed models matching this pandas expression, e.g. \"task == 'classification'\"")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.set_defaults(func=execute)


def add_query_arguments(parser) -> None:
    """The database, the analysis and the query model (shared with ``filtershift card``)."""
    parser.add_argument("db", type=Path, help="filter database folder")
    parser.add_argument("--name", default="scaled", metavar="RESULTS", help="the analysis, DB/results/RESULTS (default %(default)s)")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--checkpoint", type=Path, metavar="PATH", help="a checkpoint file (need not be in the database)")
    query.add_argument("--model", metavar="NAME", help="an analysed model, by name (or model_id)")
    parser.add_argument("--format", metavar="F", help="the checkpoint's format (torch, torchscript, safetensors, onnx; default: from the file)")
    parser.add_argument("--arch", default="", metavar="ARCH", help="builder to load a bare state dict into, as in a manifest (default: the analysed model's with the same path, if any)")


@dataclass(frozen=True, eq=False)
class LoadedQuery:
    """A query ready for the maths: its units, its description, the rows checksum, the clipped share,
    and its layers (for the report card)."""

    units: Any
    info: dict[str, Any]
    checksum: str
    clipped: float
    position: int | None = None
    kernels: np.ndarray | None = None
    layers: pd.DataFrame | None = None


def execute(args) -> int:
    from filtershift.analysis.nearest import NearestError, Query, neighbours
    from filtershift.analysis.results import load_results

    if args.top < 1:
        raise NearestError(f"--top must be at least 1, got {args.top}")
    results = load_results(args.db, args.name)
    models, units = analysed_units(results)
    loaded = load_query(args, results, models, units)
    query = Query(by=args.by, top=args.top, where=args.where, model=loaded.position, checksum=loaded.checksum)
    table = neighbours(models, loaded.units, units, query, results.weighting, results.bins.edges, results.pca.explained_variance_ratio)
    if args.json:
        print(json.dumps(as_json(table, loaded, results.name, args.by, results.weighting), indent=1))
    else:
        print(format_table(table, loaded, results.name, args.by))
    return 0


def analysed_units(results):
    """The analysed models table and their units as the analysis's weighting averages them."""
    from filtershift.analysis.nearest import layer_units, model_decile_units

    models = results.models().reset_index(drop=True)
    if results.weighting != "layers":
        model_id, _, decile_counts = results.model_histograms()
        _check_same_models(results, models, model_id)
        return models, model_decile_units(decile_counts)
    layer_id, counts = results.layer_histograms()
    stats = results.layer_stats().set_index("layer_id").loc[layer_id]
    position = pd.Series(np.arange(len(models)), index=models["model_id"].to_numpy())
    return models, layer_units(counts, position.loc[stats["model_id"].to_numpy()].to_numpy(), stats["depth_decile"].to_numpy())


def _check_same_models(results, models: pd.DataFrame, model_id: np.ndarray) -> None:
    from filtershift.analysis.nearest import NearestError

    if not np.array_equal(np.asarray(model_id, dtype=np.int64), models["model_id"].to_numpy(np.int64)):
        raise NearestError(f"{results.path}: models.parquet and model_histograms.npz list different models; rerun the analysis "
                           f"(`filtershift analyze {results.path.parent.parent} --name {results.name}`).")


def load_query(args, results, models: pd.DataFrame, units) -> LoadedQuery:
    """The query of ``--model`` (its stored units) or of ``--checkpoint`` (read and binned)."""
    from filtershift.analysis.nearest import CHECKSUM_COLUMN, model_position

    if args.model is not None:
        position = model_position(models, args.model)
        row = models.iloc[position]
        checksum = str(row[CHECKSUM_COLUMN]) if CHECKSUM_COLUMN in models.columns and pd.notna(row[CHECKSUM_COLUMN]) else ""
        info = {"model": str(row["name"]), "model_id": int(row["model_id"]), "checkpoint": None,
                "n_layers": int(row.get("n_layers", 0)), "n_filters": int(row.get("n_filters", 0)), CHECKSUM_COLUMN: checksum or None,
                "where": results.parameters.get("where")}
        return LoadedQuery(units.of_model(position), info, checksum, 0.0, position=position)
    return read_checkpoint_query(args.checkpoint, args.format, args.arch or _arch_of(models, args.checkpoint), results)


def _arch_of(models: pd.DataFrame, path: Path) -> str:
    """The arch of the analysed model stored from the same file, if any."""
    if "path" not in models.columns or "arch" not in models.columns:
        return ""
    same = models[models["path"].astype(str) == str(Path(path).resolve())]
    return str(same["arch"].iloc[0]) if len(same) and pd.notna(same["arch"].iloc[0]) else ""


def read_checkpoint_query(path: Path, fmt: str | None, arch: str, results) -> LoadedQuery:
    """Read ``path`` exactly as ``extract``'s read task does, then scale, project and bin its
    filters with the analysis's PCA and edges."""
    from filtershift.analysis.nearest import CHECKSUM_COLUMN, NearestError, layer_units, query_counts
    from filtershift.extraction.manifest import Entry
    from filtershift.extraction.staging import read_checkpoint
    from filtershift.readers import FORMATS, detect_format

    path = Path(path).resolve()
    if not path.is_file():
        raise NearestError(f"--checkpoint {path}: no such file; give the path of a checkpoint file.")
    try:
        fmt = fmt or detect_format(path)
    except ValueError as exc:
        raise NearestError(f"--checkpoint {path}: {exc} (e.g. --format {FORMATS[0]}).") from None
    checkpoint = read_checkpoint(Entry(row=1, name=path.stem, path=path, format=fmt, arch=arch), "", reuse=False)
    staged = checkpoint.staged
    if staged.status != "ok":
        raise NearestError(f"--checkpoint {path} cannot be queried ({staged.status}): {staged.error}. "
                           "Check --format and --arch, or give a checkpoint with 3x3 convolutions.")
    kernels, layers = checkpoint.kernels, pd.DataFrame(staged.layers)
    kernels, layers, where_applied = analysed_part(kernels, layers, results.parameters.get("where"), path)
    binned = query_counts(kernels, layers["n_filters"].to_numpy(), results.pca, results.bins.edges)
    units = layer_units(binned.counts, np.zeros(len(layers), dtype=np.int64), layers["depth_decile"].to_numpy())
    if results.weighting != "layers":  # pool each decile's layers, as model_histograms.npz does
        from filtershift.analysis.nearest import model_decile_units

        decile_counts = np.zeros((1, 10) + binned.counts.shape[1:], dtype=np.int64)
        np.add.at(decile_counts[0], units.decile, binned.counts)
        units = model_decile_units(decile_counts)
    info = {"model": None, "model_id": None, "checkpoint": str(path), "format": fmt, "arch": arch or None,
            "n_layers": len(layers), "n_filters": len(kernels), CHECKSUM_COLUMN: staged.rows_sha256, "where": where_applied}
    return LoadedQuery(units, info, staged.rows_sha256, binned.clipped, kernels=kernels, layers=layers)


def analysed_part(kernels: np.ndarray, layers: pd.DataFrame, where: str | None, path: Path) -> tuple[np.ndarray, pd.DataFrame, str | None]:
    """The layers of a checkpoint an analysis restricted by ``--where`` would have analysed, when the
    expression needs only layer columns (else every layer); and the expression applied, or None."""
    from filtershift.analysis.nearest import NearestError
    from filtershift.analysis.plan import PlanError, select

    if not where:
        return kernels, layers, None
    try:
        keep = select(layers, where, "--where")
    except PlanError:  # it names model columns: a checkpoint has no such metadata
        return kernels, layers, None
    if not keep.any():
        raise NearestError(f"--checkpoint {path}: none of its layers matches the analysis's --where {where!r}; "
                           "query an analysis without --where, or one whose --where the checkpoint meets.")
    rows = np.repeat(keep, layers["n_filters"].to_numpy(np.int64))
    return kernels[rows], layers[keep].reset_index(drop=True), where


# --------------------------------------------------------------------------------------------
# Output


def _number(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def neighbour_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The neighbour table as JSON-ready records, in table order (by D)."""
    deciles = [c for c in table.columns if c.startswith("d_decile_")]
    components = [c for c in table.columns if c.startswith("d_pc_")]
    plain = [c for c in table.columns if c not in deciles + components + ["rank", "d", "copy", "top_components"]]
    out = []
    for row in table.to_dict("records"):
        record = {"rank": None if pd.isna(row["rank"]) else int(row["rank"]), "name": str(row["name"]), "d": float(row["d"]), "copy": bool(row["copy"])}
        record.update({c: (None if pd.isna(row[c]) else (int(row[c]) if isinstance(row[c], (int, np.integer)) else str(row[c]))) for c in plain if c != "name"})
        record["d_decile"] = [_number(row[c]) for c in deciles]
        record["d_components"] = [float(row[c]) for c in components]
        record["top_components"] = list(row["top_components"])
        out.append(record)
    return out


def as_json(table: pd.DataFrame, loaded: LoadedQuery, results_name: str, by: str, weighting: str) -> dict[str, Any]:
    """``{"query", "results", "by", "weighting", "neighbours" (sorted by d), "clipped"}``."""
    return {"query": dict(loaded.info, clipped=loaded.clipped), "results": results_name, "by": by, "weighting": weighting,
            "neighbours": neighbour_records(table), "clipped": loaded.clipped}


def _components_text(row: pd.Series) -> str:
    d = float(row["d"])
    return ", ".join(f"PC{i} {row[f'd_pc_{i}'] / d:.0%}" if d > 0 else f"PC{i}" for i in row["top_components"])


def format_table(table: pd.DataFrame, loaded: LoadedQuery, results_name: str, by: str) -> str:
    """The neighbour table as text: ranked rows, then the exact copies apart."""
    what = loaded.info["model"] or loaded.info["checkpoint"]
    lines = [f"nearest to {what} in analysis {results_name!r} (by {by}); D per depth decile 0..9, top components' share of D"]
    if loaded.clipped > 0:
        lines.append(f"note: {loaded.clipped:.2%} of the query's coefficients lay outside the analysis's bins and were put in the edge bins")
    shown = table.copy()
    shown["D"] = shown["d"].map(lambda v: f"{v:.4f}")
    shown["D by decile"] = shown[[f"d_decile_{k}" for k in range(10)]].apply(
        lambda r: " ".join("  -  " if pd.isna(v) else f"{v:.3f}" for v in r), axis=1)
    shown["components"] = shown.apply(_components_text, axis=1)
    meta = [c for c in ("task", "data_type", "dataset", "family", "n_models") if c in shown.columns]
    columns = ["rank", "name", "D", *meta, "D by decile", "components"]
    ranked, copies = shown[~shown["copy"]], shown[shown["copy"]]
    lines.append(ranked[columns].to_string(index=False) if len(ranked) else "(no other model to compare with)")
    if len(copies):
        lines.append("exact weight copies of the query (same rows checksum; not ranked):")
        lines.append(copies[["name", "D", *meta]].to_string(index=False))
    return "\n".join(lines)
