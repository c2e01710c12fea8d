"""``filtershift card DB --name RESULTS (--model NAME | --checkpoint PATH) [--top K] [--json] [--html OUT]``

A model's report card (:mod:`filtershift.analysis.card`): its layers' range, sparsity, variance
entropy and degenerate flag as percentiles of the analysed layers at the same depth decile, its D to
its own task / data type / dataset / family groups, and its nearest models. From the analysis's
stored tables only; a checkpoint is read as ``filtershift nearest`` reads it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from filtershift.commands.nearest import add_query_arguments

N_NEIGHBOURS = 5


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "card",
        help="a model's report card: layer statistics as percentiles, D to its own groups, nearest models",
        description="Place one model (an analysed one, or any checkpoint) in an analysis: each layer's filter range, "
        "sparsity and variance entropy as percentiles of the analysed layers at the same depth decile, its D to its "
        "own groups, and its nearest models. Prints a table, or JSON, and can write a small HTML page.",
    )
    add_query_arguments(parser)
    parser.add_argument("--top", type=int, default=N_NEIGHBOURS, metavar="K", help="nearest models to list (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--html", type=Path, metavar="OUT", help="also write the card as a small HTML page to OUT")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.analysis.nearest import NearestError
    from filtershift.analysis.results import load_results
    from filtershift.store.files import atomic_write_text

    if args.top < 1:
        raise NearestError(f"--top must be at least 1, got {args.top}")
    card = make_card(load_results(args.db, args.name), args)
    if args.html:
        atomic_write_text(args.html, card_html(card))
    if args.json:
        print(json.dumps(card_json(card), indent=1))
    else:
        print(card_text(card))
        if args.html:
            print(f"wrote {args.html}")
    return 0


def make_card(results, args) -> dict[str, Any]:
    """The card's parts: query info, per-layer percentiles, own groups, nearest models."""
    from filtershift.analysis.card import checkpoint_layer_stats, layer_percentiles, own_groups
    from filtershift.analysis.nearest import META_COLUMNS, Query, neighbours
    from filtershift.commands.nearest import analysed_units, load_query

    models, units = analysed_units(results)
    loaded = load_query(args, results, models, units)
    reference = results.layer_stats()
    edges, q = results.bins.edges, results.pca.explained_variance_ratio
    if loaded.position is not None:
        me = models.iloc[loaded.position]
        mine = reference[reference["model_id"] == me["model_id"]]
        meta = {c: me[c] for c in META_COLUMNS if c in models.columns and pd.notna(me[c])}
    else:
        mine, meta = checkpoint_layer_stats(loaded.kernels, loaded.layers), {}
    query = Query(top=args.top, model=loaded.position, checksum=loaded.checksum)
    return {
        "results": results.name, "query": dict(loaded.info, **{k: str(v) for k, v in meta.items()}), "clipped": loaded.clipped,
        "layers": layer_percentiles(mine, reference),
        "groups": own_groups(models, loaded.units, units, loaded.position, meta, results.weighting, edges, q),
        "neighbours": neighbours(models, loaded.units, units, query, results.weighting, edges, q),
    }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN and NA as null, numpy scalars as Python ones)."""
    plain = df.astype(object).where(df.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()} for row in plain.to_dict("records")]


def card_json(card: dict[str, Any]) -> dict[str, Any]:
    from filtershift.commands.nearest import neighbour_records

    return {"query": dict(card["query"], clipped=card["clipped"]), "results": card["results"], "layers": _records(card["layers"]),
            "groups": _records(card["groups"]), "neighbours": neighbour_records(card["neighbours"]), "clipped": card["clipped"]}


def _layer_view(layers: pd.DataFrame) -> pd.DataFrame:
    view = layers[["name", "depth_decile", "n_filters"]].copy()
    for stat, label in (("mean_range", "range"), ("sparsity", "sparsity"), ("variance_entropy", "entropy")):
        view[label] = [f"{v:.3g} ({p:.0f}%)" if pd.notna(p) else f"{v:.3g}" for v, p in zip(layers[stat], layers[f"{stat}_pct"])]
    view["degenerate"] = [f"{'yes' if d else 'no'} ({s:.0%} of decile)" if pd.notna(s) else ("yes" if d else "no")
                          for d, s in zip(layers["degenerate"], layers["degenerate_share"])]
    return view.rename(columns={"depth_decile": "decile", "n_filters": "filters"})


def _neighbour_view(neighbours: pd.DataFrame) -> pd.DataFrame:
    meta = [c for c in ("task", "data_type", "dataset", "family") if c in neighbours.columns]
    view = neighbours[["rank", "name", "d", *meta, "copy"]].copy()
    view["d"] = view["d"].map(lambda v: f"{v:.4f}")
    return view


def _title(card: dict[str, Any]) -> str:
    return f"report card of {card['query']['model'] or card['query']['checkpoint']} in analysis {card['results']!r}"


def card_text(card: dict[str, Any]) -> str:
    lines = [_title(card), "", "layers: value (percentile among the analysed layers at the same depth decile)",
             _layer_view(card["layers"]).to_string(index=False), "", "D to its own groups (rank among the column's groups) and the nearest group",
             card["groups"].to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(card["groups"]) else "(no metadata columns)",
             "", "nearest models (copies: same rows checksum, not ranked)", _neighbour_view(card["neighbours"]).to_string(index=False)]
    if card["clipped"] > 0:
        lines.append(f"note: {card['clipped']:.2%} of the query's coefficients lay outside the analysis's bins (put in the edge bins)")
    return "\n".join(lines)


def card_html(card: dict[str, Any]) -> str:
    """A small self-contained HTML page of the card."""
    def table(df: pd.DataFrame) -> str:
        return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4f}", border=0, classes="card")

    info = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in card["query"].items() if v is not None)
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em} table{border-collapse:collapse;margin-bottom:1.5em}"
             "th,td{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(_title(card))}</title><style>{style}</style></head><body>"
            f"<h1>{html.escape(_title(card))}</h1><table>{info}<tr><th>clipped</th><td>{card['clipped']:.4%}</td></tr></table>"
            "<h2>Layers</h2><p>value (percentile among the analysed layers at the same depth decile)</p>" + table(_layer_view(card["layers"]))
            + "<h2>D to its own groups</h2>" + table(card["groups"]) + "<h2>Nearest models</h2>" + table(_neighbour_view(card["neighbours"]))
            + "</body></html>\n")
