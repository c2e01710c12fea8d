"""CNN-Filter-DB ``/meta`` <-> filtershift tables (docs/design.md §3). Pure: pandas and numpy only.

The published layout (Gavrikov & Keuper, CNN-Filter-DB; its ``onnxzoo2filterdb`` code writes it):

- ``/filters``: ``(N, 3, 3)`` (some copies ``(N, 9)``) float64 or float32, rows in model then layer
  order;
- ``/meta``: one row per 3x3 conv layer, index ``[model_id, conv_depth, conv_depth_norm, layer_id]``
  (``layer_id`` counts the 3x3 layers *within* a model), ``filter_ids`` = ``"start:end"`` with an
  INCLUSIVE end, and the model's columns repeated on each of its rows (``model``, ``Name``, ``Task``,
  ``Visual Category`` / ``Datatype``, ``Training-Dataset``, ``Network``, ``Backbone``, ``depth``
  = the model's whole graph depth, op and kernel-shape counts, ...).

Import rules (a file without filtershift's own column map, i.e. a published file):

- ``model`` -> ``name``, ``Task`` -> ``task`` (any "...segmentation..." -> ``Segmentation``),
  ``Visual Category`` (else ``Datatype``) -> ``data_type``, ``Training-Dataset`` -> ``dataset``,
  ``Network`` (else, row by row, ``Backbone``) -> ``family``, ``path`` -> ``path``;
  ``conv_depth`` -> ``conv_index``, ``conv_depth_norm`` -> ``depth``, ``depth_decile`` from ``depth``;
  the per-model ``layer_id`` is kept as ``layer_index``; ``layer_id`` becomes a global id in row order.
- ``n_conv``: the reference normalised ``conv_depth`` by ``n_conv - 1`` (the number of distinct conv
  levels of the model, any kernel size, minus one), so ``n_conv = conv_depth / conv_depth_norm + 1``
  from any layer with ``conv_depth_norm > 0``; a model whose 3x3 layers all sit at level 0 gets
  ``max(conv_depth) + 1`` = 1 (its relative depths are 0 either way).
- ``in_channels`` / ``out_channels``: copied when present, else -1; ``groups``: 1 when
  ``in * out == n_filters``, else -1 (unknown; the reference does not record groups).
- Every other column is kept: in ``layers.parquet`` when it varies within a model (or is a known
  per-layer column such as ``layer_depth``), else in ``models.parquet``. A kept column whose name
  is one of filtershift's own (the reference's ``depth``, the model's graph depth) is renamed
  ``cnnfilterdb:<name>``.
- ``format`` = ``cnn-filter-db``, ``status`` = ``ok``, ``sha256`` / ``error`` empty.

Export writes the same layout back, plus filtershift's own columns as ``filtershift:<name>`` and a
column map (``ColumnMap``), so that export -> import restores the database exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from filtershift.extraction.depth import depth_decile_from_float
from filtershift.errors import FiltershiftError
from filtershift.schema import LAYER_COLUMNS, LAYER_DTYPES, MODEL_COLUMNS

INDEX_LEVELS = ["model_id", "conv_depth", "conv_depth_norm", "layer_id"]
FILTER_IDS = "filter_ids"
REQUIRED_COLUMNS = INDEX_LEVELS + [FILTER_IDS, "model"]
FS_PREFIX = "filtershift:"  # filtershift's own columns carried in /meta
REF_PREFIX = "cnnfilterdb:"  # reference columns whose names collide with filtershift's
LAYER_INDEX = "layer_index"  # the reference's per-model layer_id
KNOWN_LAYER_COLUMNS = {"in_channels", "out_channels", "layer_depth"}
FORMAT = "cnn-filter-db"

# filtershift model column -> reference column (export), and the reference's alternatives (import).
MODEL_TO_REFERENCE = {
    "name": "model", "task": "Task", "data_type": "Visual Category", "dataset": "Training-Dataset",
    "family": "Network", "path": "path",
}
REFERENCE_ALTERNATIVES = {"data_type": ["Visual Category", "Datatype"], "family": ["Network", "Backbone"]}
LAYER_TO_REFERENCE = {"in_channels": "in_channels", "out_channels": "out_channels"}
DERIVED_LAYER_COLUMNS = ("start", "stop", "n_filters")


class FormatError(FiltershiftError, ValueError):
    """A CNN-Filter-DB file that cannot be imported as it is; the message names the fix."""


@dataclass(frozen=True)
class ColumnMap:
    """Which ``/meta`` column holds each column of the two tables, and its dtype (export -> import)."""

    models: tuple[tuple[str, str, str], ...]
    layers: tuple[tuple[str, str, str], ...]

    def to_json(self) -> str:
        return json.dumps({"version": 1, "models": [list(t) for t in self.models], "layers": [list(t) for t in self.layers]})

    @classmethod
    def from_json(cls, text: str) -> "ColumnMap":
        raw = json.loads(text)
        return cls(models=tuple(tuple(t) for t in raw["models"]), layers=tuple(tuple(t) for t in raw["layers"]))


@dataclass(frozen=True)
class ImportTables:
    """What an import will write: the two tables (layers sorted by ``start``) and notes for the user."""

    models: pd.DataFrame
    layers: pd.DataFrame
    n_rows: int
    notes: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- reading /meta


def meta_from_csv_text(text: str) -> pd.DataFrame:
    """The oldest layout: ``/meta`` is CSV text (``DataFrame.to_csv``, index levels as columns)."""
    import io

    return pd.read_csv(io.StringIO(text))


def flatten_meta(meta: pd.DataFrame, source: str) -> pd.DataFrame:
    """``/meta`` with its index levels as columns and a fresh RangeIndex; checks required columns."""
    names = [n for n in meta.index.names if n is not None]
    flat = meta.reset_index(level=names) if names else meta.reset_index(drop=True)
    flat = flat.reset_index(drop=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in flat.columns]
    if missing:
        raise FormatError(
            f"{source}: /meta lacks the column(s) {missing} (found: {list(flat.columns)[:20]}...). A CNN-Filter-DB "
            f"/meta needs {REQUIRED_COLUMNS} (the first four as index levels or columns); rewrite /meta with them, "
            f"e.g. meta.to_hdf(FILE, 'meta') from a frame indexed by {INDEX_LEVELS}."
        )
    for col in INDEX_LEVELS:
        if flat[col].isna().any():
            row = int(np.flatnonzero(flat[col].isna().to_numpy())[0])
            raise FormatError(f"{source}: /meta row {row} has no {col}; every layer row needs {INDEX_LEVELS}.")
    return flat


def parse_filter_ids(values: pd.Series, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``"start:end"`` (inclusive end) -> ``start``, ``stop`` (exclusive) as int64 arrays."""
    text = values.astype(object).map(lambda v: v.decode() if isinstance(v, bytes) else v).astype(str)
    parts = text.str.split(":", n=1, expand=True)
    if parts.shape[1] != 2:
        parts = parts.reindex(columns=[0, 1])
    start = pd.to_numeric(parts[0].str.strip(), errors="coerce")
    end = pd.to_numeric(parts[1].str.strip(), errors="coerce")
    bad = (start.isna() | end.isna() | (start % 1 != 0) | (end % 1 != 0)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"{source}: /meta row {row} has filter_ids {text.iloc[row]!r}; expected \"start:end\" (two integers, "
            f"end inclusive). Fix that row of /meta."
        )
    start_a, end_a = start.to_numpy(np.int64), end.to_numpy(np.int64)
    empty = end_a < start_a
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise FormatError(f"{source}: /meta row {row} has filter_ids {text.iloc[row]!r} with end < start; a layer holds at least one filter.")
    return start_a, end_a + 1


def check_ranges(start: np.ndarray, stop: np.ndarray, n_rows: int, labels: list[str], source: str) -> np.ndarray:
    """Check that the layers' row ranges tile ``[0, n_rows)``; returns the order sorting by ``start``."""
    order = np.argsort(start, kind="stable")
    s, e = start[order], stop[order]
    if len(s) == 0:
        raise FormatError(f"{source}: /meta has no rows; nothing to import.")
    if s[0] < 0:
        raise FormatError(f"{source}: {labels[order[0]]} starts at row {s[0]} < 0; filter_ids index /filters from 0.")
    over = np.flatnonzero(e > n_rows)
    if over.size:
        i = order[over[0]]
        raise FormatError(
            f"{source}: {labels[i]} has filter_ids {start[i]}:{stop[i] - 1} but /filters has only {n_rows} rows "
            f"(last row {n_rows - 1}). The file is truncated or /meta belongs to another /filters; use the matching pair."
        )
    overlap = np.flatnonzero(s[1:] < e[:-1])
    if overlap.size:
        a, b = order[overlap[0]], order[overlap[0] + 1]
        raise FormatError(
            f"{source}: {labels[a]} (filter_ids {start[a]}:{stop[a] - 1}) and {labels[b]} (filter_ids "
            f"{start[b]}:{stop[b] - 1}) overlap: each /filters row must belong to exactly one layer. Fix filter_ids "
            f"(the end is inclusive) or drop the duplicate row."
        )
    if s[0] > 0:
        raise FormatError(f"{source}: /filters rows 0..{s[0] - 1} belong to no layer (the first filter_ids start at {s[0]}); /meta must cover every row.")
    gap = np.flatnonzero(s[1:] > e[:-1])
    if gap.size:
        a, b = order[gap[0]], order[gap[0] + 1]
        raise FormatError(
            f"{source}: /filters rows {stop[a]}..{start[b] - 1} belong to no layer (gap between {labels[a]} and "
            f"{labels[b]}). Add the missing /meta row(s), or check that the ends are inclusive (\"start:end\")."
        )
    if e[-1] < n_rows:
        raise FormatError(f"{source}: /filters rows {e[-1]}..{n_rows - 1} belong to no layer; /meta must cover all {n_rows} rows.")
    return order


def normalize_task(values: pd.Series) -> pd.Series:
    """The reference's task spellings: any value containing "segmentation" -> ``Segmentation``."""
    def one(v):
        return "Segmentation" if isinstance(v, str) and "segmentation" in v.lower() else v
    return values.map(one)


def clean_column(values: pd.Series, name: str, source: str, coerce_mixed: bool) -> pd.Series:
    """One ``/meta`` column as a Parquet-storable column: bytes decoded, strings as ``str``; a column
    mixing text with numbers (or other types) is an error unless ``coerce_mixed`` (then all text)."""
    if values.dtype != object:
        return values
    decoded = values.map(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    notnull = decoded[decoded.notna()]
    kinds = {_kind(v) for v in notnull}
    if not kinds:
        return decoded
    if kinds == {"str"}:
        return decoded.astype("str")
    if kinds <= {"int", "float"}:
        return pd.to_numeric(decoded)
    if kinds == {"bool"}:
        return decoded.astype(bool) if decoded.notna().all() else decoded
    if coerce_mixed:
        return decoded.map(lambda v: v if pd.isna(v) else str(v)).astype("str")
    examples = {k: next(repr(v) for v in notnull if _kind(v) == k) for k in sorted(kinds)}
    raise FormatError(
        f"{source}: /meta column {name!r} mixes value types {examples}; Parquet needs one type per column. "
        f"Re-run with --coerce-mixed to store it as text, or fix the column in /meta."
    )


def _kind(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "str"
    return type(v).__name__


# ---------------------------------------------------------------- import


def plan_import(meta: pd.DataFrame, n_rows: int, source: str, column_map: ColumnMap | None = None,
                coerce_mixed: bool = False) -> ImportTables:
    """Map a ``/meta`` frame over ``n_rows`` filters to filtershift's models and layers tables.

    ``column_map`` (written by :func:`plan_export`) restores a filtershift export exactly; without
    it the published rules of the module docstring apply. Raises :class:`FormatError`.
    """
    flat = flatten_meta(meta, source)
    start, stop = parse_filter_ids(flat[FILTER_IDS], source)
    labels = [f"/meta row (model_id={m}, layer_id={l})" for m, l in zip(flat["model_id"], flat["layer_id"])]
    dup = flat.duplicated(["model_id", "layer_id"]).to_numpy()
    if dup.any():
        raise FormatError(f"{source}: {labels[int(np.flatnonzero(dup)[0])]} appears twice; (model_id, layer_id) must be unique.")
    order = check_ranges(start, stop, n_rows, labels, source)
    flat = flat.iloc[order].reset_index(drop=True)
    start, stop = start[order], stop[order]
    for col in flat.columns:
        flat[col] = clean_column(flat[col], col, source, coerce_mixed)
    if column_map is not None:
        return _import_with_map(flat, start, stop, n_rows, column_map, source)
    return _import_published(flat, start, stop, n_rows, source)


def _import_published(flat: pd.DataFrame, start: np.ndarray, stop: np.ndarray, n_rows: int, source: str) -> ImportTables:
    notes = []
    model_id = flat["model_id"].to_numpy(np.int64)
    n = stop - start
    used = set(INDEX_LEVELS) | {FILTER_IDS, "model", "path", "Task"}

    def pick(candidates: list[str]) -> pd.Series:
        present = [c for c in candidates if c in flat.columns]
        if not present:
            notes.append(f"{source}: /meta has none of {candidates}; left empty")
            return pd.Series([None] * len(flat), dtype="str")
        used.add(present[0])
        out = flat[present[0]]
        for alt in present[1:]:  # Network, then Backbone where Network is empty
            out = out.where(out.notna(), flat[alt])
        return out

    task = normalize_task(flat["Task"]) if "Task" in flat.columns else pick(["Task"])
    data_type = pick(REFERENCE_ALTERNATIVES["data_type"])  # Datatype, if also present, is kept
    dataset = pick(["Training-Dataset"])
    family = pick(REFERENCE_ALTERNATIVES["family"])  # Backbone, if Network is present, is kept
    layer_index = flat["layer_id"].to_numpy(np.int64)

    # n_conv per model: conv_depth / conv_depth_norm + 1 where the norm is > 0, else max(conv_depth) + 1.
    conv = flat["conv_depth"].to_numpy(np.int64)
    norm = flat["conv_depth_norm"].to_numpy(np.float64)
    frame = pd.DataFrame({"model_id": model_id, "conv": conv, "norm": norm})
    frame["cand"] = np.where(norm > 0, np.rint(conv / np.where(norm > 0, norm, 1.0)) + 1, np.nan)
    per_model = frame.groupby("model_id").agg(cand=("cand", "median"), top=("conv", "max"))
    n_conv_model = np.where(per_model["cand"].notna(), per_model["cand"], per_model["top"] + 1).astype(np.int64)
    n_conv = pd.Series(n_conv_model, index=per_model.index).reindex(model_id).to_numpy()

    in_ch = _int_or(flat, "in_channels", -1)
    out_ch = _int_or(flat, "out_channels", -1)
    groups = np.where((in_ch > 0) & (in_ch * out_ch == n), 1, -1)
    layers = pd.DataFrame({
        "layer_id": np.arange(len(flat)), "model_id": model_id,
        "name": [f"layer_{i}" for i in layer_index], "conv_index": conv, "n_conv": n_conv,
        "depth": norm, "depth_decile": depth_decile_from_float(norm),
        "in_channels": in_ch, "out_channels": out_ch, "groups": groups,
        "start": start, "stop": stop, "n_filters": n,
    }).astype(LAYER_DTYPES)
    layers[LAYER_INDEX] = layer_index
    used |= {"in_channels", "out_channels"}

    rest = [c for c in flat.columns if c not in used]
    varies = flat.groupby(model_id)[rest].nunique(dropna=False).max() > 1 if rest else pd.Series(dtype=bool)
    layer_extra = [c for c in rest if c in KNOWN_LAYER_COLUMNS or bool(varies.get(c, False))]
    model_extra = [c for c in rest if c not in layer_extra]
    taken = set(MODEL_COLUMNS) | set(LAYER_COLUMNS) | {LAYER_INDEX}
    rename = {c: (REF_PREFIX + c if c in taken else c) for c in rest}
    for c in layer_extra:
        layers[rename[c]] = flat[c].to_numpy()

    first = ~pd.Series(model_id).duplicated().to_numpy()
    models = pd.DataFrame({
        "model_id": model_id[first],
        "name": flat["model"].astype("str").to_numpy()[first],
        "path": (flat["path"].astype("str") if "path" in flat.columns else pd.Series([None] * len(flat), dtype="str")).to_numpy()[first],
        "format": FORMAT, "sha256": None,
        "task": task.to_numpy()[first], "data_type": data_type.to_numpy()[first],
        "dataset": dataset.to_numpy()[first], "family": family.to_numpy()[first],
    })
    per = layers.groupby("model_id").agg(n_layers=("layer_id", "size"), n_filters=("n_filters", "sum"))
    models["n_layers"] = per["n_layers"].reindex(models["model_id"]).to_numpy(np.int64)
    models["n_filters"] = per["n_filters"].reindex(models["model_id"]).to_numpy(np.int64)
    models["status"] = "ok"
    models["error"] = None
    for c in ("name", "path", "format", "sha256", "task", "data_type", "dataset", "family", "status", "error"):
        models[c] = models[c].astype("str")
    models = models[MODEL_COLUMNS]
    for c in model_extra:
        models[rename[c]] = flat[c].to_numpy()[first]
    models = models.sort_values("model_id", kind="stable").reset_index(drop=True)
    return ImportTables(models=models, layers=layers, n_rows=n_rows, notes=tuple(notes))


def _int_or(flat: pd.DataFrame, col: str, default: int) -> np.ndarray:
    if col not in flat.columns:
        return np.full(len(flat), default, dtype=np.int64)
    return pd.to_numeric(flat[col], errors="coerce").fillna(default).to_numpy(np.int64)


def _import_with_map(flat: pd.DataFrame, start: np.ndarray, stop: np.ndarray, n_rows: int, cmap: ColumnMap, source: str) -> ImportTables:
    needed = {meta for _, meta, _ in cmap.models + cmap.layers if meta}
    missing = sorted(needed - set(flat.columns))
    if missing:
        raise FormatError(f"{source}: /meta lacks {missing}, which its filtershift column map names; the file was edited. "
                          f"Delete the root attribute 'filtershift' to import it as a published CNN-Filter-DB file.")
    derived = {"start": start, "stop": stop, "n_filters": stop - start}
    layers = pd.DataFrame({db: (derived[db] if db in derived else flat[meta].to_numpy()) for db, meta, _ in cmap.layers})
    layers = layers.astype({db: dtype for db, _, dtype in cmap.layers})
    model_id = flat["model_id"].to_numpy(np.int64)
    first = ~pd.Series(model_id).duplicated().to_numpy()
    models = pd.DataFrame({db: flat[meta].to_numpy()[first] for db, meta, _ in cmap.models})
    models = models.astype({db: dtype for db, _, dtype in cmap.models})
    return ImportTables(models=models, layers=layers.reset_index(drop=True), n_rows=n_rows)


# ---------------------------------------------------------------- export


def plan_export(models: pd.DataFrame, layers: pd.DataFrame) -> tuple[pd.DataFrame, ColumnMap, pd.DataFrame]:
    """filtershift tables -> the reference ``/meta`` frame (rows in filter order), the column map
    that inverts it, and the models that have no stored layer (they cannot be rows of ``/meta``)."""
    layers = layers.sort_values("start", kind="stable").reset_index(drop=True)
    if "layer_id" not in layers or len(layers) == 0:
        raise FormatError("the database has no layers; nothing to export.")
    index = pd.MultiIndex.from_arrays([
        layers["model_id"].to_numpy(np.int64),
        layers["conv_index"].to_numpy(np.int64),
        layers["depth"].to_numpy(np.float64),
        (layers[LAYER_INDEX].to_numpy(np.int64) if LAYER_INDEX in layers
         else layers.groupby("model_id").cumcount().to_numpy(np.int64)),
    ], names=INDEX_LEVELS)
    meta = pd.DataFrame(index=index)
    meta[FILTER_IDS] = [f"{a}:{b - 1}" for a, b in zip(layers["start"].to_numpy(), layers["stop"].to_numpy())]
    taken = set(INDEX_LEVELS) | {FILTER_IDS}
    layer_map = []
    for col in layers.columns:
        if col in DERIVED_LAYER_COLUMNS:
            layer_map.append((col, "", str(layers[col].dtype)))
            continue
        if col in ("model_id", "conv_index", "depth"):  # index levels of /meta
            layer_map.append((col, {"model_id": "model_id", "conv_index": "conv_depth", "depth": "conv_depth_norm"}[col], str(layers[col].dtype)))
            continue
        target = _export_name(col, LAYER_TO_REFERENCE, set(LAYER_COLUMNS) | {LAYER_INDEX}, taken)
        if col == LAYER_INDEX:
            target = "layer_id"
        else:
            meta[target] = _plain(layers[col])
            taken.add(target)
        layer_map.append((col, target, str(layers[col].dtype)))
    by_id = models.set_index("model_id", drop=False)
    stored = models["model_id"].isin(layers["model_id"])
    model_map = []
    for col in models.columns:
        if col == "model_id":
            model_map.append((col, "model_id", str(models[col].dtype)))
            continue
        target = _export_name(col, MODEL_TO_REFERENCE, set(MODEL_COLUMNS), taken)
        meta[target] = _plain(by_id[col].reindex(layers["model_id"].to_numpy()))
        taken.add(target)
        model_map.append((col, target, str(models[col].dtype)))
    return meta, ColumnMap(models=tuple(model_map), layers=tuple(layer_map)), models[~stored].reset_index(drop=True)


def _export_name(col: str, mapping: dict[str, str], own: set[str], taken: set[str]) -> str:
    if col in mapping:
        name = mapping[col]
    elif col in own:
        name = FS_PREFIX + col
    elif col.startswith(REF_PREFIX):
        name = col[len(REF_PREFIX):]
    else:
        name = col
    return FS_PREFIX + col if name in taken else name


def _plain(values: pd.Series) -> np.ndarray:
    """Values as numpy (text as plain Python ``str`` objects, readable by any pandas)."""
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        arr = values.astype(object).to_numpy()
        return np.array([None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in arr], dtype=object)
    return values.to_numpy()


__all__ = [
    "ColumnMap", "FormatError", "ImportTables", "plan_import", "plan_export", "flatten_meta", "parse_filter_ids",
    "check_ranges", "normalize_task", "meta_from_csv_text", "INDEX_LEVELS", "FILTER_IDS",
    "FS_PREFIX", "REF_PREFIX", "LAYER_INDEX", "FORMAT",
]
