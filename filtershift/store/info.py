"""A plain-text summary of a database (``filtershift info``)."""

from __future__ import annotations

import os

import pandas as pd

from filtershift.store import FILTERS_STORE, REMOVED, Database, read_tables


def disk_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def group_table(models: pd.DataFrame, by: str) -> pd.DataFrame:
    """Models, layers and filters per value of ``by`` (ok models only)."""
    ok = models[models["status"] == "ok"]
    table = ok.groupby(ok[by].replace("", "(none)"), dropna=False).agg(models=("model_id", "size"), layers=("n_layers", "sum"), filters=("n_filters", "sum"))
    return table.sort_values("filters", ascending=False)


def removed_lines(db: Database) -> list[str]:
    """How many models were removed and how many of their rows the store still holds (the names
    are gone from every listing; ``db.models`` holds live models only)."""
    models, layers = read_tables(db.path)
    removed = models[models["status"] == REMOVED] if len(models) else models
    if not len(removed):
        return []
    n_rows = int(layers.loc[layers["model_id"].isin(removed["model_id"]), "n_filters"].sum())
    return [f"  removed: {len(removed)} model(s); {n_rows:,} of their filter rows stay in filters.zarr (not reclaimed)"]


def summarize(db: Database) -> str:
    models = db.models
    status = models["status"].value_counts().to_dict() if len(models) else {}
    size = disk_bytes(db.path / FILTERS_STORE)
    lines = [
        f"database {db.path}",
        f"  models: {int((models['status'] == 'ok').sum()) if len(models) else 0} ok"
        + "".join(f", {v} {k}" for k, v in sorted(status.items()) if k != "ok"),
        f"  layers: {len(db.layers):,}   filters: {db.n_rows:,}   chunk rows: {db.chunk_rows:,}",
        f"  filters.zarr on disk: {size / 2**20:,.1f} MiB ({size / max(db.n_rows, 1):.1f} bytes per filter)",
        *removed_lines(db),
    ]
    for by in ("task", "data_type", "format"):
        if by in models.columns and len(models):
            lines += ["", f"by {by}:", group_table(models, by).to_string()]
    failed = models[models["status"] != "ok"] if len(models) else models
    if len(failed):
        lines += ["", "not extracted:"] + [f"  {r.status}: {r.name}: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines)
