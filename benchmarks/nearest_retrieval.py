"""Leave-one-out retrieval with ``filtershift nearest`` on an analysed demo zoo.

For every trained model of the analysis (``trained`` column of the zoo manifest; all models when
there is none), its nearest non-copy neighbours by D are found with the nearest maths, and the share
of them with the query's family and data type is precision@1 and @5. Chance is the expected share
of a random candidate with the same label. Two candidate pools:

- ``all``: every other analysed model except exact weight copies (random-init controls and the
  query's own fp16 / format conversions included);
- ``trained, no conversions``: other trained models only, without the query's conversions (the
  same model under a ``-fp16`` / ``-onnx`` / ``-copy`` suffix), the honest retrieval figure.

    python benchmarks/nearest_retrieval.py DB [--name scaled]

(build the zoo with ``filtershift zoo DIR --size tiny|small``, then ``extract`` and
``analyze --by model``).
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd

from filtershift.analysis.nearest import Query, neighbours
from filtershift.analysis.results import load_results
from filtershift.commands.nearest import analysed_units

LABELS = ("family", "data_type")
CONVERSION_SUFFIX = re.compile(r"-(fp16|onnx|copy)$")


def source_name(name: str) -> str:
    """The model a conversion was made from (``x-fp16`` -> ``x``)."""
    return CONVERSION_SUFFIX.sub("", name)


def retrieval(db: str, name: str, pool: str) -> pd.DataFrame:
    """Per trained query: its nearest neighbours' labels (the top 5) and the candidates' label shares."""
    results = load_results(db, name)
    models, units = analysed_units(results)
    trained = models["trained"].astype(str).str.lower().eq("true").to_numpy() if "trained" in models else np.ones(len(models), bool)
    checksum = models["rows_sha256"].astype(str).to_numpy() if "rows_sha256" in models else np.full(len(models), "")
    rows = []
    for i in np.flatnonzero(trained):
        me = models.iloc[i]
        keep = checksum != checksum[i] if checksum[i] else np.ones(len(models), bool)
        if pool != "all":
            keep &= trained & (models["name"].map(source_name).to_numpy() != source_name(str(me["name"])))
        keep[i] = True  # the query itself (left out of the candidates by the query)
        candidates = models[keep].reset_index(drop=True)
        q = Query(top=5, model=int(np.flatnonzero(np.flatnonzero(keep) == i)[0]), checksum=str(checksum[i]))
        sub_units = _subset(units, np.flatnonzero(keep))
        table = neighbours(candidates, sub_units.of_model(q.model), sub_units, q, results.weighting, results.bins.edges,
                           results.pca.explained_variance_ratio)
        ranked = table[~table["copy"]]
        others = candidates.drop(index=q.model)
        row = {"name": me["name"], "n_candidates": len(others), "nearest": ranked["name"].iloc[0]}
        for label in LABELS:
            row[f"{label}@1"] = float(ranked[label].iloc[0] == me[label])
            row[f"{label}@5"] = float((ranked[label].head(5) == me[label]).mean())
            row[f"{label}_chance"] = float((others[label] == me[label]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _subset(units, positions: np.ndarray):
    """The units of the models at ``positions``, renumbered 0.. in that order."""
    from filtershift.analysis.nearest import Units

    new = np.full(int(units.model.max()) + 1, -1, dtype=np.int64)
    new[positions] = np.arange(len(positions))
    keep = new[units.model] >= 0
    return Units(units.counts[keep], new[units.model[keep]], units.decile[keep])


def summary(per_query: pd.DataFrame) -> pd.DataFrame:
    out = []
    for label in LABELS:
        out.append({"label": label, "precision@1": per_query[f"{label}@1"].mean(), "precision@5": per_query[f"{label}@5"].mean(),
                    "chance": per_query[f"{label}_chance"].mean()})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--name", default="scaled")
    parser.add_argument("--show", action="store_true", help="print every query's nearest neighbour")
    args = parser.parse_args()
    for pool in ("all", "trained, no conversions"):
        per_query = retrieval(args.db, args.name, pool)
        print(f"\n{args.db} ({args.name}), pool: {pool}; {len(per_query)} trained queries, "
              f"{per_query['n_candidates'].median():.0f} candidates each (median)")
        print(summary(per_query).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        if args.show:
            print(per_query[["name", "nearest"]].to_string(index=False))


if __name__ == "__main__":
    main()
